"""The slurm clouds a command acts on, and asking several of them at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cm.errors import CmError, UsageError

KIND = "slurm"


def slurm_clouds(ctx: Any, args: Any) -> list[str]:
    """--cloud NAME (or the active cloud), which must be a slurm cloud; --cloud all: every slurm cloud."""
    if getattr(args, "cloud", None) == "all":
        return sorted(name for name, conf in ctx.config.clouds().items() if conf.get("kind") == KIND)
    name = ctx.cloud_name(args)
    kind = ctx.config.check_cloud(name).get("kind")
    if kind != KIND:
        raise UsageError(f"cloud '{name}' is a {kind} cloud, not an HPC system; give --cloud NAME of a slurm cloud "
                         "(add one with `cm cloud add NAME --kind slurm host=LOGIN user=USER`)")
    return [name]


def slurm_cloud(ctx: Any, args: Any) -> str:
    """The one slurm cloud a command acts on (`--cloud all` makes no sense for it)."""
    if getattr(args, "cloud", None) == "all":
        raise UsageError("this command acts on one HPC system: give --cloud NAME")
    return slurm_clouds(ctx, args)[0]


def each_cloud(ctx: Any, clouds: list[str], action: Callable[[Any], Any]) -> dict[str, Any]:
    """``action(provider)`` on every cloud at once (one ssh connection each, ended when its action is done);
    {cloud: result or CmError}."""
    providers = {cloud: ctx.provider(cloud) for cloud in clouds}

    def call(cloud: str) -> Any:
        try:
            return action(providers[cloud])
        except CmError as exc:
            return exc
        finally:  # end this connection now, while the slower systems still answer, not one by one at exit
            providers[cloud].close()

    if len(clouds) == 1:
        return {clouds[0]: call(clouds[0])}
    from concurrent.futures import ThreadPoolExecutor  # only for several systems: costs 8 ms to import

    with ThreadPoolExecutor(max_workers=len(clouds)) as pool:
        return dict(zip(clouds, pool.map(call, clouds)))
