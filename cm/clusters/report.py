"""How clusters look to the user: plan, launch result, list rows, node rows."""

from __future__ import annotations

from argparse import Namespace
from typing import Any

from cm.clusters import model, plan

LIST_COLUMNS = ["name", "cloud", "recipe", "state", "nodes", "login", "reason"]
NODE_COLUMNS = ["name", "role", "state", "address", "public", "flavor", "image", "reason"]
PLAN_COLUMNS = ["name", "role", "image", "flavor", "public"]


def summary_row(cluster: dict[str, Any]) -> dict[str, Any]:
    from cm.clusters.service import head_address

    counts = ", ".join(f"{role}={n}" for role, n in cluster["counts"].items())
    return {"name": cluster["name"], "cloud": cluster.get("cloud", ""), "recipe": cluster["recipe"],
            "state": cluster["state"], "nodes": counts, "login": head_address(cluster),
            "reason": cluster.get("reason", "")}


def node_rows(cluster: dict[str, Any], all_nodes: bool = False) -> list[dict[str, Any]]:
    nodes = cluster["nodes"] if all_nodes else [n for n in cluster["nodes"] if n["state"] != model.NODE_DELETED]
    return [{"name": n["name"], "role": n["role"], "state": n["state"], "address": n.get("address", ""),
             "public": n.get("public", ""), "flavor": cluster["flavors"].get(n["role"], ""),
             "image": cluster["images"].get(n["role"], ""), "reason": n.get("reason", "")} for n in nodes]


def show_plan(ctx: Any, args: Namespace, recipe: Any, cluster: dict[str, Any]) -> int:
    """The dry run: the nodes, then each role's rendered user-data with secrets masked."""
    provider = ctx.provider(cluster["cloud"])
    rows = [{"name": n["name"], "role": n["role"], "image": cluster["images"][n["role"]],
             "flavor": cluster["flavors"][n["role"]],
             "public": plan.wants_public(provider, recipe.roles[n["role"]])} for n in cluster["nodes"]]
    secrets = plan.masked(recipe)
    texts = {}  # rendered first: a template error shows alone, not after half a plan
    for role in recipe.roles:
        first = next((n for n in cluster["nodes"] if n["role"] == role), None)
        if first is not None:
            texts[role] = (first["name"], plan.user_data(cluster, recipe, secrets, first, placeholder=True))
    ctx.emit(PLAN_COLUMNS, rows, args)
    if getattr(args, "format", None) in ("json", "yaml", "csv", "value"):
        return 0  # machine-readable output stays one document
    for role, (name, text) in texts.items():
        ctx.say(f"\n--- user-data of role {role} ({name}; secrets masked) ---")
        ctx.say(text.rstrip())
    ctx.warn(f"would launch cluster '{cluster['name']}' ({len(rows)} nodes) on cloud '{cluster['cloud']}'")
    return 0


def launched(ctx: Any, args: Namespace, cluster: dict[str, Any]) -> int:
    """The nodes of a launch or resize, its outputs, and an exit code (1 unless ready)."""
    ctx.emit(NODE_COLUMNS, node_rows(cluster), args)
    name, state = cluster["name"], cluster["state"]
    if cluster.get("simulated"):
        ctx.warn(f"cm: cluster '{name}' planned and its {len(model.live_nodes(cluster))} VMs recorded, but this "
                 "cloud is libvirt's test hypervisor: nothing boots, so cm does not wait for readiness "
                 f"(`cm cluster delete {name}` removes it)")
        return 0
    if state == "ready":
        outputs = cluster.get("outputs", {})
        ctx.warn(f"cluster '{name}' is ready" + "".join(f"\n  {k}: {v}" for k, v in outputs.items() if v))
        return 0
    if state == "launching":
        ctx.warn(f"cm: cluster '{name}' is still launching (see `cm cluster show {name}`)")
        return 0
    ctx.warn(f"cm: cluster '{name}' is {state}: {cluster.get('reason', '')}")
    return 1
