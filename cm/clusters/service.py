"""What commands (and other features) call: launch, resize, delete, and what a cluster is.

Public functions (all take the shell's ``ctx``):

- ``launch(ctx, request) -> (cluster, code)``: plan, check and boot a cluster (or resume one);
- ``nodes(cluster, role=None)``: its live nodes; ``head_address(cluster)``: where to log in;
- ``login(ctx, cloud, name) -> (vm name, address)``: the login node of a ready cluster;
- ``resize(ctx, cloud, name, change, force, dryrun)``, ``delete(ctx, cloud, name, dryrun)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cm.clusters import model, plan, store
from cm.errors import Conflict, UsageError
from cm.names import check_name


@dataclass
class Request:
    """One launch as the user asked for it."""

    recipe: str
    cloud: str
    n: int | None = None
    name: str = ""
    flavors: list[str] = field(default_factory=list)  # ROLE=F or F
    images: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)  # K=V
    group: str = ""
    dryrun: bool = False
    wait: bool = True
    timeout: float | None = None  # seconds per phase, over the recipe's
    by_command: bool = False  # `cm slurm`: the recipe is found by its command name


def load_recipe(ctx: Any, name: str, by_command: bool = False) -> Any:
    from cm import recipes

    return recipes.by_command(ctx.home, name) if by_command else recipes.find(ctx.home, name)


def _cluster_name(ctx: Any, request: Request, recipe_name: str) -> str:
    if request.name:
        return check_name(request.name, "cluster name")
    user = check_name(ctx.user(request.cloud), "user (the prefix of generated names)")
    key = f"cluster:{user}-{recipe_name}"
    number = ctx.mirror.counter(key) + 1 if request.dryrun else ctx.mirror.next_counter(key)[0]
    return f"{user}-{recipe_name}-{number}"


def _resumable(ctx: Any, cloud: str, existing: dict[str, Any], recipe: Any, counts: dict[str, int]) -> None:
    """Refuse, with the reason and what to do, a relaunch that cannot resume ``existing``."""
    from cm.clusters.launch import interrupted_elsewhere

    name = existing["name"]
    if interrupted_elsewhere(existing):
        raise Conflict(f"cluster '{name}' is being launched by cm process {existing['pid']} right now")
    if existing["recipe"] != recipe.name or existing["counts"] != counts:
        raise UsageError(f"cluster '{name}' already exists on cloud '{cloud}' as {existing['recipe']} "
                         f"{existing['counts']}; pick another --name or `cm cluster delete {name}`")
    if existing["state"] != "launching":
        raise UsageError(f"cluster '{name}' already exists on cloud '{cloud}' and is {existing['state']}"
                         f"{': ' + existing['reason'] if existing.get('reason') else ''}; use it, resize it, "
                         f"or `cm cluster delete {name}` first")


def prepare(ctx: Any, request: Request) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
    """(recipe, planned cluster, existing record) after every check that needs no VM: bad input fails here."""
    recipe = load_recipe(ctx, request.recipe, request.by_command)
    counts = recipe.counts(request.n)
    params = recipe.params(plan.key_values(request.params))
    roles = list(recipe.roles)
    flavors = plan.choose(ctx, request.cloud, recipe, "flavor", plan.role_values("flavor", request.flavors, roles))
    images = plan.choose(ctx, request.cloud, recipe, "image", plan.role_values("image", request.images, roles))
    plan.check_cloud(ctx, request.cloud, recipe, images, flavors)
    name = _cluster_name(ctx, request, recipe.name)
    existing = store.get(ctx, request.cloud, name)
    if existing:
        _resumable(ctx, request.cloud, existing, recipe, counts)
    cluster = model.new_cluster(name, recipe.name, params, counts, flavors, images, request.group or name)
    cluster["cloud"] = request.cloud
    for wave in recipe.order():
        for role in wave:
            single = recipe.roles[role].get("count", 1) == 1
            model.plan_nodes(cluster, role, counts[role], single)
    return recipe, cluster, existing


def launch(ctx: Any, request: Request) -> tuple[dict[str, Any], Any]:
    """Boot the cluster (or resume the interrupted launch of the same name); returns (cluster, recipe)."""
    from cm.clusters.launch import Launch, ensure_secgroup, reconcile

    recipe, cluster, existing = prepare(ctx, request)
    provider = ctx.provider(request.cloud)
    if existing:
        cluster = existing
        reconcile(provider, cluster)
        ctx.warn(f"cm: resuming the interrupted launch of cluster '{cluster['name']}'")
    cluster["simulated"] = provider.simulated
    template = _template(ctx, request.cloud)
    if "access" not in cluster:  # a resumed launch keeps the access its nodes were booted with
        cluster["access"] = _access(ctx, request.cloud, cluster["name"], template)
    store.save(ctx, request.cloud, cluster)
    ensure_secgroup(ctx, request.cloud, recipe, cluster)
    engine = Launch(ctx, request.cloud, recipe, cluster, template, request.timeout)
    try:
        engine.run(wait=request.wait and not cluster["simulated"])
    finally:
        _join_group(ctx, request.cloud, cluster)
    return cluster, recipe


def _template(ctx: Any, cloud: str) -> Any:
    """What every node's boot spec starts from: the user's key and name."""
    from cm.commands.key import resolve_key
    from cm.provider import BootSpec

    key_name, public_key = resolve_key(ctx, cloud, None)
    return BootSpec(name="", image="", flavor="", key_name=key_name, public_key=public_key, user=ctx.user(cloud))


def _access(ctx: Any, cloud: str, name: str, template: Any) -> dict[str, str]:
    """Who logs in to the nodes: the user their seeds create, the public key file they accept, and
    the cluster's own known-hosts file (its fresh nodes' keys are trusted on first contact, and a
    later cluster reusing the addresses does not trip over them)."""
    from cm.commands.key import public_key_file

    known = store.known_hosts(ctx, cloud, name)
    known.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return {"user": template.user, "key": public_key_file(ctx, cloud) if template.public_key else "",
            "known_hosts": str(known)}


def parse_change(text: str) -> int:
    """``+2`` or ``-1`` (a bare number means that many more)."""
    try:
        change = int(text)
    except ValueError:
        change = 0
    if change == 0:
        raise UsageError(f"resize by '{text}': write +N to add nodes or -N to remove them")
    return change


def resize(ctx: Any, cloud: str, name: str, change: int, *, force: bool = False,
           wait: bool = True, timeout: float | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Add nodes (booted and configured like at launch) or drain and remove them; returns (cluster, nodes)."""
    from cm.clusters import teardown
    from cm.clusters.launch import Launch, interrupted_elsewhere

    cluster = store.known(ctx, cloud, name)
    recipe = load_recipe(ctx, cluster["recipe"])
    role = recipe.resize_role or list(recipe.roles)[-1]
    if interrupted_elsewhere(cluster) or cluster["state"] == "deleting":
        raise Conflict(f"cluster '{name}' is {cluster['state']}; resize it once that is over")
    if change > 0:
        single = recipe.roles[role].get("count", 1) == 1
        added = model.plan_nodes(cluster, role, change, single)
        cluster["counts"][role] += change
        cluster["state"] = "launching"
        store.save(ctx, cloud, cluster)
        engine = Launch(ctx, cloud, recipe, cluster, _template(ctx, cloud), timeout)
        try:
            engine.run(wait=wait and not cluster["simulated"])
        finally:
            _join_group(ctx, cloud, cluster)
        return cluster, added
    targets = teardown.shrink_targets(cluster, role, -change)
    teardown.drain(ctx, cloud, cluster, recipe, targets, force)
    problems = teardown.delete_vms(ctx, cloud, cluster, targets)
    teardown.unregister(ctx, cloud, cluster, recipe, [t for t in targets if t["state"] == model.NODE_DELETED])
    cluster["counts"][role] -= sum(t["state"] == model.NODE_DELETED for t in targets)
    if cluster.get("outputs"):
        from cm.clusters.launch import set_outputs

        set_outputs(recipe, cluster)
    store.save(ctx, cloud, cluster)
    if problems:
        from cm.errors import ProviderError

        raise ProviderError("; ".join(problems))
    return cluster, targets


def _join_group(ctx: Any, cloud: str, cluster: dict[str, Any]) -> None:
    from cm.groups import add_members

    names = [n["name"] for n in model.live_nodes(cluster) if n["state"] != model.NODE_PLANNED]
    if names and cluster.get("group"):
        add_members(ctx, cluster["group"], cloud, names)


# -- what a cluster is ------------------------------------------------------------------------
def nodes(cluster: dict[str, Any], role: str | None = None) -> list[dict[str, Any]]:
    return model.live_nodes(cluster, role)


def head_address(cluster: dict[str, Any]) -> str:
    head = model.head(cluster)
    return (head.get("public") or head.get("address") or "") if head else ""


def login(ctx: Any, cloud: str, name: str) -> tuple[str, str]:
    """(login node's VM name, its address) of cluster ``name``."""
    cluster = store.known(ctx, cloud, name)
    head = model.head(cluster)
    if head is None or not head_address(cluster):
        raise UsageError(f"cluster '{name}' has no login node with an address yet (it is {cluster['state']})")
    return head["name"], head_address(cluster)
