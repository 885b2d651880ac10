"""Planning a launch: check the input against the recipe and the cloud before any VM boots,
then build the cluster record and each node's boot spec and rendered user-data."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from cm.clusters import model
from cm.errors import UsageError

if TYPE_CHECKING:
    from cm.provider import BootSpec
    from cm.recipes import Recipe

MASK = "********"  # what a dry run shows instead of a secret


def role_values(option: str, given: list[str], roles: list[str]) -> dict[str, str]:
    """``--flavor ROLE=F`` (or a bare ``F`` for every role) as {role: value}."""
    out: dict[str, str] = {}
    for item in given:
        role, sep, value = item.partition("=")
        if not sep:
            out.update({r: item for r in roles})
            continue
        if role not in roles:
            raise UsageError(f"--{option} {item}: the launcher has no role '{role}' (roles: {', '.join(roles)})")
        if not value:
            raise UsageError(f"--{option} {item}: give a value after '='")
        out[role] = value
    return out


def key_values(given: list[str]) -> dict[str, str]:
    """``--param K=V`` as a dict, parsed like `cm cloud add`'s settings."""
    from cm.commands.cloud import _parse_settings

    try:
        return _parse_settings(given)
    except UsageError as exc:
        raise UsageError(f"--param: {exc}") from None


def choose(ctx: Any, cloud: str, recipe: Recipe, option: str, given: dict[str, str]) -> dict[str, str]:
    """Image or flavor per role: --option ROLE=X > the recipe's > the cloud's default."""
    out = {}
    for role, spec in recipe.roles.items():
        value = given.get(role) or spec.get(option) or ctx.value(option, cloud)
        if not value:
            raise UsageError(f"no {option} for role '{role}': give --{option} {role}=NAME or set "
                             f"`cm default {option}=NAME --cloud {cloud}`")
        out[role] = str(value)
    return out


def check_cloud(ctx: Any, cloud: str, recipe: Recipe, images: dict[str, str], flavors: dict[str, str]) -> None:
    """Refuse what the cloud cannot serve (unknown image or flavor, public IPs it lacks): exit 2."""
    from cm import inventory

    provider = ctx.provider(cloud)
    provider.require("create_vm")
    if any(spec.get("public") is True for spec in recipe.roles.values()):
        provider.require("assign_public_ip")
    for kind, wanted in (("image", images), ("flavor", flavors)):
        inventory.refresh(ctx, cloud, kind)
        have = {r["name"] for r in ctx.mirror.records(kind, cloud)} | {r.get("id") for r in
                                                                      ctx.mirror.records(kind, cloud)}
        for role, value in wanted.items():
            if value not in have:
                known = ", ".join(sorted(r["name"] for r in ctx.mirror.records(kind, cloud))[:8])
                raise UsageError(f"unknown {kind} '{value}' for role '{role}' on cloud '{cloud}' (known: {known})")


def wants_public(provider: Any, spec: dict[str, Any]) -> bool:
    """A role's public IP: required (true), or where the cloud has them ("if-available")."""
    value = spec.get("public", False)
    return value is True or (value == "if-available" and "assign_public_ip" in type(provider).verbs())


def context(cluster: dict[str, Any], recipe: Recipe, secrets: dict[str, str], node: dict[str, Any] | None,
            placeholder: bool = False) -> dict[str, Any]:
    """What templates see: the cluster, its parameters, secrets, nodes by role, the head, this node."""
    def address(n: dict[str, Any]) -> str:
        return n.get("address") or (f"ADDRESS-OF-{n['name']}" if placeholder else "")

    by_role: dict[str, list[dict[str, str]]] = {r: [] for r in recipe.roles}
    for n in model.live_nodes(cluster):
        by_role[n["role"]].append({"name": n["name"], "address": address(n)})
    first = model.head(cluster)
    return {
        "cluster": {"name": cluster["name"], "recipe": cluster["recipe"], "cloud": cluster.get("cloud", "")},
        "params": cluster["params"], "counts": cluster["counts"], "secrets": secrets,
        "nodes": by_role, "head": {"name": first["name"], "address": address(first)} if first else {},
        "node": {"name": node["name"], "role": node["role"]} if node else {},
        "role": node["role"] if node else "",
        "marker": {"ready": (recipe.roles[node["role"]].get("ready") or {}).get("marker", "CM-READY")
                   if node else "CM-READY", "failed": "CM-FAILED", "configured": "CM-CONFIGURED"},
    }


def user_data(cluster: dict[str, Any], recipe: Recipe, secrets: dict[str, str], node: dict[str, Any],
              placeholder: bool = False) -> str:
    return recipe.render_user_data(node["role"], context(cluster, recipe, secrets, node, placeholder))


def masked(recipe: Recipe) -> dict[str, str]:
    return {name: MASK for name in recipe.data.get("secrets", [])}


def boot_spec(template: BootSpec, cluster: dict[str, Any], node: dict[str, Any], text: str,
              public: bool) -> BootSpec:
    role = node["role"]
    return dataclasses.replace(template, name=node["name"], image=cluster["images"][role],
                               flavor=cluster["flavors"][role], user_data=text, public=public,
                               secgroups=list(cluster["made"]["secgroups"]))


def offline(recipe: Recipe, n: int | None, name: str = "c1",
            addresses: list[str] | None = None) -> dict[str, Any]:
    """A cluster record of ``recipe`` as if launched, without a cloud: its nodes get ``addresses``
    (default 10.0.0.10, .11 ...).  For rendering a recipe's files on their own, e.g. to run its
    configuration on real daemons: ``recipe.render_files(context(offline(recipe, 2), recipe, {}, None))``."""
    counts = recipe.counts(n)
    cluster = model.new_cluster(name, recipe.name, recipe.params({}), counts, {}, {}, name)
    for wave in recipe.order():
        for role in wave:
            model.plan_nodes(cluster, role, counts[role], recipe.roles[role].get("count", 1) == 1)
    for i, node in enumerate(cluster["nodes"]):
        node["address"] = addresses[i] if addresses and i < len(addresses) else f"10.0.0.{10 + i}"
    return cluster
