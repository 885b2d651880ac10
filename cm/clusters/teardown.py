"""Shrinking and deleting clusters: drain first, delete every VM, security group and
floating IP the cluster made, and keep the record until all of it is gone."""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from cm import bulk
from cm.clusters import model, store
from cm.errors import CmError, Conflict, NotFound, ProviderError, UsageError


def delete_vms(ctx: Any, cloud: str, cluster: dict[str, Any], nodes: list[dict[str, Any]]) -> list[str]:
    """Delete the nodes' VMs in parallel (one already gone counts as deleted); return failures."""
    provider = ctx.provider(cloud)

    def delete(name: str) -> None:
        try:
            provider.delete_vm(name)
        except NotFound:
            pass

    outcomes = bulk.run_each([n["name"] for n in nodes], delete, "delete")
    failed = {o.name: o.message for o in outcomes if not o.ok}
    _record_deleted(ctx, cloud, cluster, nodes, failed)
    if outcomes.interrupted:  # what was deleted is recorded: a second delete finishes the rest
        raise KeyboardInterrupt
    problems = [f"{name}: {why}" for name, why in failed.items()]
    return problems + release_addresses(provider, [n["name"] for n in nodes if n["name"] not in failed])


def release_addresses(provider: Any, names: list[str]) -> list[str]:
    """Drop the addresses reserved for deleted nodes (all of them: an interrupted launch may not have noted one)."""
    if not names or "release_addresses" not in type(provider).verbs():
        return []
    try:
        provider.release_addresses(names)
    except CmError as exc:
        return [f"reserved addresses of {', '.join(names)}: {exc}"]
    return []


def _record_deleted(ctx: Any, cloud: str, cluster: dict[str, Any], nodes: list[dict[str, Any]],
                    failed: dict[str, str]) -> None:
    for node in nodes:
        if node["name"] not in failed:
            node["state"] = model.NODE_DELETED
            node["times"].setdefault("deleted", time.time())
    with ctx.mirror.transaction():
        ctx.mirror.remove("vm", cloud, [n["name"] for n in nodes if n["name"] not in failed])
        store.save(ctx, cloud, cluster)


def _delete_made(ctx: Any, cloud: str, cluster: dict[str, Any]) -> list[str]:
    """The security groups and floating IPs the cluster made (VMs first: a group in use cannot go)."""
    provider = ctx.provider(cloud)
    problems = []
    made = cluster["made"]
    if made["ips"] and "list_floating_ips" in type(provider).verbs():
        existing = {ip.name for ip in provider.list_floating_ips()}
        for address in [a for a in made["ips"] if a in existing]:
            try:
                provider.delete_floating_ip(address)
            except CmError as exc:
                problems.append(f"floating IP {address}: {exc}")
    for group in list(made["secgroups"]):
        try:
            provider.delete_secgroup(group)
        except NotFound:
            pass
        except CmError as exc:
            problems.append(f"security group {group}: {exc}")
            continue
        made["secgroups"].remove(group)
    return problems


def _wait_gone(ctx: Any, cloud: str, names: list[str], timeout: float = 120) -> list[str]:
    """Wait until the cloud lists none of ``names`` (a security group in use cannot be deleted)."""
    provider = ctx.provider(cloud)
    if not names:
        return []
    deadline = time.monotonic() + timeout
    wanted = set(names)
    while True:
        left = sorted(wanted & {vm.name for vm in provider.list_vms()})
        if not left:
            return []
        if time.monotonic() >= deadline:
            return [f"{', '.join(left)} still listed {timeout:g} s after being deleted"]
        time.sleep(0.5)


def delete(ctx: Any, cloud: str, name: str) -> list[str]:
    """Remove everything the cluster made; the record goes only when nothing is left (else: what is)."""
    cluster = store.known(ctx, cloud, name)
    cluster["state"] = "deleting"
    store.save(ctx, cloud, cluster)
    # Every node ever planned: an interrupted launch may have created a VM it never recorded.
    targets = [n for n in cluster["nodes"] if n["state"] != model.NODE_DELETED]
    problems = delete_vms(ctx, cloud, cluster, targets) if targets else []
    if not problems:
        problems = _wait_gone(ctx, cloud, [n["name"] for n in targets]) or _delete_made(ctx, cloud, cluster)
    if problems:
        cluster["reason"] = "; ".join(problems)
        store.save(ctx, cloud, cluster)
        return problems
    store.forget(ctx, cloud, cluster)
    return []


# -- resize -----------------------------------------------------------------------------------
def ssh_access(ctx: Any, cloud: str, cluster: dict[str, Any], user: str | None = None) -> tuple[str, list[str]]:
    """(login name, ssh options) that reach the cluster's nodes: the user and key they were booted with,
    and the cluster's own known-hosts file, unless the user names a login."""
    from cm.ssh import login_options

    access = cluster.get("access") or {}
    login = ctx.value("login", cloud, user) or access.get("user") or "root"
    key = str(access.get("key") or "").removesuffix(".pub")  # the private half of the key the nodes accept
    options = login_options({"key": key if key and Path(key).is_file() else "",
                             "known_hosts": access.get("known_hosts")})
    return login, options if access.get("known_hosts") else [*options, "-o", "StrictHostKeyChecking=accept-new"]


def on_head(ctx: Any, cloud: str, cluster: dict[str, Any], command: str) -> subprocess.CompletedProcess[str]:
    """Run one administrative shell command on the login node over ssh (the only ssh cm does to a cluster):
    as root, or with sudo as the nodes' own user (whom their seeds give password-less sudo)."""
    from cm.clusters.service import head_address

    login, options = ssh_access(ctx, cloud, cluster)
    if login != "root":
        command = f"sudo -n sh -c {shlex.quote(command)}"
    words = ["ssh", *options, "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
             f"{login}@{head_address(cluster)}", command]
    try:
        return subprocess.run(words, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        raise ProviderError(f"`{command}` on the login node did not finish in 120 s") from exc


def shrink_targets(cluster: dict[str, Any], role: str, count: int) -> list[dict[str, Any]]:
    """The ``count`` newest live nodes of ``role``; a role cannot lose its last node."""
    nodes = model.live_nodes(cluster, role)
    if count >= len(nodes):
        raise UsageError(f"cluster '{cluster['name']}' has {len(nodes)} {role} node(s); "
                         f"it cannot lose {count} (delete the cluster instead)")
    return nodes[-count:]


def drain(ctx: Any, cloud: str, cluster: dict[str, Any], recipe: Any, nodes: list[dict[str, Any]],
          force: bool) -> None:
    """Drain the nodes through the recipe's commands on the login node; refuse busy ones without force."""
    hooks = recipe.data.get("resize", {})
    if cluster.get("simulated") or not hooks.get("drain"):
        return
    for node in nodes:
        quoted = shlex.quote(node["name"])
        for step in ("drain", "busy"):
            if not hooks.get(step):
                continue
            done = on_head(ctx, cloud, cluster, hooks[step].replace("{{ node }}", quoted))
            if done.returncode != 0:
                raise ProviderError(f"could not {step} {node['name']} on the login node: "
                                    f"{(done.stderr or done.stdout).strip().splitlines()[-1:] or ['ssh failed']}")
            if step == "busy" and done.stdout.strip() and force and hooks.get("kill"):
                on_head(ctx, cloud, cluster, hooks["kill"].replace("{{ node }}", quoted))
            elif step == "busy" and done.stdout.strip():
                raise Conflict(f"{node['name']} is running jobs ({done.stdout.strip().splitlines()[0]}); "
                               "it is drained and takes no new ones: wait for them, or --force to kill them")


def unregister(ctx: Any, cloud: str, cluster: dict[str, Any], recipe: Any, nodes: list[dict[str, Any]]) -> None:
    hook = recipe.data.get("resize", {}).get("remove")
    if hook and not cluster.get("simulated"):
        for node in nodes:
            on_head(ctx, cloud, cluster, hook.replace("{{ node }}", shlex.quote(node["name"])))
