"""The comet provider: a Nucleus endpoint's virtual clusters through the shared contract and comet's extras.

``cm vm list --cloud comet`` shows every frontend and compute node; ``vm
start|stop|reboot`` power them; ``list_clusters`` feeds ``cm cluster list``;
the ``comet`` noun uses the rest (computesets, consoles, ISOs, renames).
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

from cm.bulk import proceed
from cm.errors import AuthError, ConfigError, NotFound, ProviderError, stopped
from cm.provider import VM, Provider, State

# Node 'state' (libvirt's) -> the shared states
STATES = {"active": State.RUNNING, "blocked": State.RUNNING, "paused": State.PAUSED, "suspended": State.SUSPENDED,
          "shutdown": State.PENDING, "shutoff": State.STOPPED, "nostate": State.STOPPED, "crashed": State.ERROR}
ACTIVE = ("created", "submitted", "running", "ending")
POWER = {"on": "poweron", "off": "poweroff", "reboot": "reboot", "reset": "reset", "shutdown": "shutdown"}


def node_rows(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    """The frontend and computes of a cluster as uniform rows."""
    front = cluster["frontend"]
    rows = [{"name": front["name"], "cluster": cluster["name"], "type": "frontend", "state": front.get("state", ""),
             "host": front.get("host", ""), "computeset": "", "ip": front.get("pub_ip", ""),
             "cpus": front.get("cpus"), "memory": front.get("memory"), "iso": front.get("iso", "")}]
    for node in cluster.get("computes") or []:
        rows.append({"name": node["name"], "cluster": cluster["name"], "type": "compute", "state": node.get("state", ""),
                     "host": node.get("host", ""), "computeset": node.get("active_computeset") or "",
                     "computeset_state": node.get("active_computeset_state") or "", "ip": "",
                     "cpus": node.get("cpus"), "memory": node.get("memory"), "iso": node.get("iso", "")})
    return rows


def cluster_summary(cluster: dict[str, Any]) -> dict[str, Any]:
    from cm.names import collect

    computes = cluster.get("computes") or []
    return {"name": cluster["name"], "kind": "comet", "frontend": cluster["frontend"]["name"],
            "frontend_state": cluster["frontend"].get("state", ""),
            "computes": collect([n["name"] for n in computes]) if computes else "", "nodes": len(computes),
            "running": sum(n.get("state") == "active" for n in computes),
            "computesets": sorted({n["active_computeset"] for n in computes if n.get("active_computeset")}),
            "allocations": cluster.get("allocations") or [], "description": cluster.get("description", "")}


def own_cluster(cluster: dict[str, Any]) -> dict[str, Any]:
    """A virtual cluster as the contract's ``list_clusters`` row (what `cm cluster list` shows and the mirror keeps)."""
    summary = cluster_summary(cluster)
    front = STATES.get(summary["frontend_state"], State.UNKNOWN)
    return {"name": summary["name"], "source": "comet", "state": f"frontend {front}, {summary['running']} of "
            f"{summary['nodes']} computes running", "nodes": f"frontend=1, compute={summary['nodes']}",
            "login": cluster["frontend"].get("pub_ip", ""), "frontend": summary["frontend"],
            "computes": summary["computes"], "allocations": summary["allocations"]}


class CometProvider(Provider):
    kind = "comet"
    unsupported_why = {"boot VMs": "its nodes are fixed; start a computeset with `cm comet start`",
                       "delete VMs": "its nodes are fixed; end a computeset with `cm comet terminate`"}

    # -- credentials ------------------------------------------------------------------------
    @property
    def key_file(self) -> Path:
        """Where `cm comet init` keeps this endpoint's API key and the login token (0600)."""
        return Path(self.state_dir or Path.home() / ".cm") / "comet" / f"{self.name}.json"

    def saved(self) -> dict[str, str]:
        try:
            return json.loads(self.key_file.read_text())
        except (OSError, ValueError):
            return {}

    def save(self, **values: str) -> None:
        from cm.config import write_private

        self.key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(self.key_file, json.dumps({**self.saved(), **values}))

    def password(self) -> str:
        """The configured password; ``env`` reads COMET_PASSWORD, ``readline`` asks (at a terminal only)."""
        value = str(self.config.get("password") or "")
        if value == "env" or (not value and os.environ.get("COMET_PASSWORD")):
            return os.environ.get("COMET_PASSWORD", "")
        if value == "readline":
            import getpass
            import sys

            if not sys.stdin.isatty():
                raise AuthError(f"cloud '{self.name}' asks for its password, but there is no terminal; "
                                "set COMET_PASSWORD or run `cm comet init`")
            return getpass.getpass(f"password for {self.config.get('username')} at {self.name}: ")
        return value

    @cached_property
    def api(self):  # type: ignore[no-untyped-def]
        from cm_plugins.comet.api import Nucleus

        conf, saved = self.config, self.saved()
        mode = str(conf.get("auth_provider") or ("apikey" if (conf.get("api_key") or saved.get("api_key"))
                                                 else "userpass"))
        if mode not in ("apikey", "userpass"):
            raise ConfigError(f"cloud '{self.name}': auth_provider must be apikey or userpass, not '{mode}'")
        keys = {"api_key": str(conf.get("api_key") or saved.get("api_key") or ""),
                "api_secret": str(conf.get("api_secret") or saved.get("api_secret") or "")} if mode == "apikey" else {}
        if mode == "apikey" and not all(keys.values()):
            raise AuthError(f"cloud '{self.name}' has no API key yet: run `cm comet init --cloud {self.name}`")
        return Nucleus(str(conf.get("base_url") or conf.get("nucleus_base_url") or ""),
                       str(conf.get("api_version") or "v1"), username=str(conf.get("username") or ""),
                       password=self.password() if mode == "userpass" else "", token=saved.get("token", ""),
                       save_token=lambda token: self.save(token=token), timeout=float(conf.get("timeout", 60)),
                       verify=conf.get("verify", True), **keys)

    def init_key(self, username: str, password: str) -> dict[str, str]:
        """Fetch the user's API key with the password and keep it (0600) for signed requests."""
        from cm_plugins.comet.api import Nucleus

        conf = self.config
        api = Nucleus(str(conf.get("base_url") or conf.get("nucleus_base_url") or ""),
                      str(conf.get("api_version") or "v1"), verify=conf.get("verify", True))
        key = api.getkey(username, password)
        self.save(api_key=key["key_name"], api_secret=key["key"], username=username)
        self.__dict__.pop("api", None)
        return key

    # -- clusters and nodes ----------------------------------------------------------------
    def clusters(self) -> list[dict[str, Any]]:
        return self.api.get("cluster/", "list clusters") or []

    def cluster(self, name: str) -> dict[str, Any]:
        return self.api.get(f"cluster/{name}/", f"cluster {name}")

    def list_clusters(self) -> list[dict[str, Any]]:
        """One row per virtual cluster (`cm cluster list`; the mirror keeps them as 'cloud_cluster')."""
        return [own_cluster(c) for c in self.clusters()]

    def _vm(self, row: dict[str, Any]) -> VM:
        extra = {k: row[k] for k in ("cluster", "type", "host", "computeset", "cpus", "memory", "iso") if row.get(k)}
        return VM(name=row["name"], id=f"{row['cluster']}/{row['name']}", state=STATES.get(row["state"], State.UNKNOWN),
                  flavor=f"{row.get('cpus')}cpu-{row.get('memory')}MiB",
                  public_ips=[row["ip"]] if row.get("ip") else [], extra=extra)

    def list_vms(self) -> list[VM]:
        return [self._vm(row) for c in self.clusters() for row in node_rows(c)]

    def get_vm(self, name: str) -> VM:
        """The node with its live power state (what `vm stop` waits on)."""
        row = self._row(name)
        live = self.node_info(*self._where(row))
        return self._vm({**row, "state": live.get("state", row["state"])})

    def _row(self, name: str) -> dict[str, Any]:
        for cluster in self.clusters():
            for row in node_rows(cluster):
                if row["name"] == name:
                    return row
        raise NotFound(f"no node '{name}' in any cluster of cloud '{self.name}'")

    @staticmethod
    def _where(row: dict[str, Any]) -> tuple[str, str | None]:
        """(cluster, node) as the service's paths take them: node None for a frontend."""
        return row["cluster"], None if row["type"] == "frontend" else row["name"]

    def power(self, cluster: str, node: str | None, action: str) -> None:
        """PUT the action (poweron, poweroff, reboot, reset, shutdown) on the frontend (node None) or a compute."""
        path = f"cluster/{cluster}/frontend/{action}" if node is None else f"cluster/{cluster}/compute/{node}/{action}"
        proceed()  # a Ctrl-C before this point leaves the node as it was
        self.api.put(path, f"{action} {node or cluster + ' frontend'}")

    def start_vm(self, name: str) -> None:
        self.power(*self._where(self._row(name)), "poweron")

    def _off(self, row: dict[str, Any]) -> bool:
        """Whether the node is powered off now (its live state)."""
        live = self.node_info(*self._where(row))
        return STATES.get(live.get("state", ""), State.UNKNOWN) == State.STOPPED

    def stop_vm(self, name: str, timeout: float | None = None) -> None:
        """Shut the node down; one already off stays so (the service refuses to shut down what does not run)."""
        row = self._row(name)
        if not self._off(row):
            self.power(*self._where(row), "shutdown")

    def reboot_vm(self, name: str) -> None:
        row = self._row(name)
        if self._off(row):
            raise stopped(name, "rebooted")
        self.power(*self._where(row), "reboot")

    def rename_vm(self, old: str, new: str) -> VM:
        row = self._row(old)
        if row["type"] == "frontend":
            raise ProviderError("a frontend cannot be renamed")
        self.rename_node(row["cluster"], old, new)
        return self.get_vm(new)

    def console_log(self, name: str, lines: int = 0) -> str:
        text = self.console_text(self.console_link(*self._where(self._row(name))))
        return "\n".join(text.splitlines()[-lines:]) if lines > 0 else text

    def node_info(self, cluster: str, node: str | None) -> dict[str, Any]:
        path = f"cluster/{cluster}/frontend/" if node is None else f"cluster/{cluster}/compute/{node}/"
        return self.api.get(path, f"node {node or cluster}")

    def rename_node(self, cluster: str, old: str, new: str) -> None:
        proceed()
        self.api.check(self.api.request("POST", f"cluster/{cluster}/compute/{old}/rename", json={"name": new}),
                       f"rename {old}")

    def console_link(self, cluster: str, node: str | None) -> str:
        path = f"cluster/{cluster}/frontend/console/" if node is None else f"cluster/{cluster}/compute/{node}/console/"
        return self.api.redirect(path, f"console of {node or cluster}")

    def console_text(self, link: str) -> str:
        return str(self.api.check(self.api._send("GET", link, {}, params={"format": "text"}), "console") or "")

    # -- computesets ------------------------------------------------------------------------------
    def computesets(self, states: list[str] | None = None) -> list[dict[str, Any]]:
        return self.api.get("computeset/", "list computesets", state=list(states or [])) or []

    def computeset(self, cs_id: int) -> dict[str, Any]:
        return self.api.get(f"computeset/{cs_id}/", f"computeset {cs_id}")

    def start_computeset(self, cluster: str, *, allocation: str, walltime_mins: int, count: int = 0,
                         computes: str = "", reservation: str = "") -> dict[str, Any]:
        body = {"cluster": cluster, "walltime_mins": str(walltime_mins), "allocation": allocation}
        body.update({"computes": computes} if computes else {"count": str(count)})
        if reservation:
            body["reservation"] = reservation
        return self.api.post("computeset/", f"start a computeset on {cluster}", body)

    def computeset_action(self, cs_id: int, action: str) -> dict[str, Any]:
        return self.api.put(f"computeset/{cs_id}/{action}", f"{action} computeset {cs_id}")

    # -- ISOs, reservations ---------------------------------------------------------------------
    def isos(self) -> list[str]:
        return self.api.get("image", "list ISO images") or []

    def upload_iso(self, path: str, name: str, private: bool = False) -> None:
        """Upload as ``public/NAME`` (everyone may attach it), or as ``private/NAME`` (only this user)."""
        import hashlib

        digest = hashlib.md5()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
            handle.seek(0)
            if not private:
                self.api.upload("image", f"upload {name}", name, handle, digest.hexdigest())
                return
            try:  # its own route: a service without private ISOs answers 404 instead of publishing the file
                self.api.upload("image/private", f"upload {name}", name, handle, digest.hexdigest())
            except NotFound:
                raise ProviderError(f"upload {name}: this service has no private ISOs (cm's extension of Nucleus); "
                                    "not uploaded, as every user could read it") from None

    def delete_iso(self, iso: str) -> None:
        """Delete one of this user's private ISOs (``private/NAME``); refused while a node has it attached."""
        self.api.delete(f"image/{iso}", f"delete ISO {iso}")

    def attach_iso(self, iso: str, cluster: str, node: str | None) -> None:
        path = f"cluster/{cluster}/frontend/attach_iso" if node is None else f"cluster/{cluster}/compute/{node}/attach_iso"
        proceed()
        self.api.put(path, f"{'attach' if iso else 'detach'} ISO on {node or cluster}", iso_name=iso)

    def reservations(self) -> list[dict[str, Any]]:
        return self.api.get("reservation/", "list reservations") or []

    def close(self) -> None:
        if "api" in self.__dict__:
            self.api.http.close()
