"""Images on HPC systems: pushed to the system's shared image directory (checksummed, identical copies
skipped) and run through Slurm with the runtime the system has, each node's output labelled."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cm.errors import ProviderError

KIND = "sif"  # pushed images in the mirror, per cloud


def _dir_word(provider: Any) -> str:
    """The system's image directory as a shell word that expands to an absolute path there."""
    directory = provider.image_dir().rstrip("/")
    return f"\"{directory if directory.startswith('/') else '$HOME/' + directory}\""


def remote_path(provider: Any, name: str) -> str:
    """The image's path on the system (a shell word)."""
    return f"{_dir_word(provider)}/{shlex.quote(name + '.sif')}"


def remote_sha256(provider: Any, name: str) -> str:
    """The checksum of the system's copy, '' when it has none."""
    path = remote_path(provider, name)
    out = provider.shell(f"if [ -f {path} ]; then sha256sum {path}; fi")
    return out.out.split()[0] if out.out.strip() else ""


def push(ctx: Any, cloud: str, sif_path: Path, meta: dict[str, Any]) -> str:
    """Copy the image to the system unless an identical copy is there; 'copied' or 'identical'."""
    provider = ctx.provider(cloud)
    name = meta["name"]
    if remote_sha256(provider, name) == meta["sha256"]:
        _remember(ctx, cloud, meta)
        return "identical"
    part = f".{name}.sif.part-{int(time.time())}"
    provider.shell(f"mkdir -p {_dir_word(provider)}")
    provider.remote.copy_file(sif_path, f"{provider.image_dir().rstrip('/')}/{part}")
    quoted_part = f"{_dir_word(provider)}/{shlex.quote(part)}"
    check = provider.shell(f"sha256sum {quoted_part}", check=False)
    got = check.out.split()[0] if check.out.strip() else ""
    if got != meta["sha256"]:
        provider.shell(f"rm -f {quoted_part}", check=False)
        raise ProviderError(f"copying {name} to '{cloud}' failed: the checksum there is {got or 'missing'}, "
                            f"not {meta['sha256'][:12]}...")
    provider.shell(f"mv -f {quoted_part} {remote_path(provider, name)}")
    _remember(ctx, cloud, meta)
    return "copied"


def _remember(ctx: Any, cloud: str, meta: dict[str, Any]) -> None:
    ctx.mirror.put(KIND, cloud, {"name": meta["name"], "sha256": meta["sha256"], "size": meta["size"],
                                 "pushed": time.strftime("%Y-%m-%dT%H:%M:%S")})


def srun_script(provider: Any, runtime: str, name: str, action: list[str], nodes: int,
                options: list[str]) -> str:
    """srun on ``nodes`` nodes, one task each, the runtime's output prefixed with the node's name
    and ended by an ``@@exit N`` line per node."""
    opts = " ".join(shlex.quote(o) for o in options)
    wrapper = '{ "$@" 2>&1; echo "@@exit $?"; } | sed "s/^/${SLURMD_NODENAME:-$(hostname)}: /"'
    words = " ".join(shlex.quote(w) for w in action[1:])
    return (f"srun --nodes={nodes} --ntasks-per-node=1 --ntasks={nodes} {opts} /bin/sh -c {shlex.quote(wrapper)} sh "
            f"{shlex.quote(runtime)} {shlex.quote(action[0])} {remote_path(provider, name)} {words}")


def run(provider: Any, script: str, show: Callable[[str], None]) -> dict[str, int]:
    """Run the srun script, showing each node's lines as they come; {node: exit status}."""
    process = provider.remote.stream(provider.with_setup(script))
    statuses: dict[str, int] = {}
    assert process.stdout is not None
    for raw in process.stdout:
        line = raw.decode(errors="replace").rstrip("\n")
        node, sep, rest = line.partition(": ")
        if sep and rest.startswith("@@exit "):
            statuses[node] = int(rest.split()[1]) if rest.split()[1].isdigit() else 1
            continue
        show(line)
    err = process.stderr.read().decode(errors="replace") if process.stderr else ""
    code = process.wait()
    if code and not statuses:
        lines = [line for line in err.splitlines() if line.strip()]
        where = f"cannot reach cloud '{provider.name}'" if code == 255 and not provider.remote.local \
            else f"cloud '{provider.name}': srun failed"
        raise ProviderError(f"{where}: {lines[-1] if lines else f'exit status {code}'}")
    return statuses
