"""Which Slurm cluster a command names, and where its slurm.conf and slurmctld are.

CLUSTER is one of:

- a slurm.conf on this machine (slurmctld runs here);
- with ``--controller HOST``, the path of slurm.conf on that host, reached with ssh; HOST is an
  ssh destination (``user@host``, an alias) or the name of a slurm cloud (its host, user, port,
  key, jump and ssh_config);
- the name of a cluster cm launched (`cm slurm -n N`): its head runs slurmctld with the
  recipe's ``/etc/slurm/slurm.conf`` (or the record's ``outputs.slurm_conf``), reached over ssh
  as the cluster's user, restarted with systemctl, and cm already holds its munge key;
- the name of a cluster enabled before (its state remembers all of the above).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cm.errors import NotFound, ProviderError, UsageError
from cm.elastic import slurmconf, state
from cm.elastic.slurmctl import SSH_OPTIONS, Controller

LAUNCHED_CONF = "/etc/slurm/slurm.conf"        # where the slurm launcher puts it on the head
LAUNCHED_RESTART = "systemctl restart slurmctld"


@dataclass
class Target:
    """A cluster as cm reaches it: its name, its controller (commands and files), how to restart it."""

    cluster: str
    ctl: Controller
    restart: str = ""                 # default restart command ("" = slurmctld -f SLURM_CONF)
    munge_key: bytes | None = None    # the key, when cm holds it (a cluster it launched)

    def conf(self) -> slurmconf.SlurmConf:
        """slurm.conf as it is now on the controller host."""
        return read_conf(self.ctl)

    def restart_command(self, given: str = "") -> str:
        return given or self.restart or f"slurmctld -f {self.ctl.conf}"

    def saved(self) -> dict[str, Any]:
        """What the cluster's state keeps to reach it again."""
        return {"conf": str(self.ctl.conf), "controller": self.ctl.host, "ssh": self.ctl.ssh,
                "pid_file": self.ctl.pid_file}


def read_conf(ctl: Controller) -> slurmconf.SlurmConf:
    """slurm.conf as it is now, wherever the controller keeps it."""
    return slurmconf.parse(ctl.conf, ctl.read_text(ctl.conf))


def controller(st: dict[str, Any]) -> Controller:
    """The controller of a cluster enabled before."""
    return Controller(Path(st["conf"]), st.get("controller", "local"), pid_file=st.get("pid_file", ""),
                      ssh=st.get("ssh") or {})


def cluster_of(ctx: Any, target: str, where: str = "local") -> Target:
    """The cluster CLUSTER names (see the module docstring); NotFound when it names none."""
    home = Path(ctx.home)
    if where and where != "local":
        return _read(_remote(ctx, where, Path(target)))
    path = Path(target).expanduser()
    if path.is_file():
        return _read(Controller(path.resolve()))
    if "/" not in target and state.exists(home, target):
        st = state.load(home, target)
        return Target(target, controller(st), st.get("restart_command", ""))
    launched = _launched(ctx, target)
    if launched is not None:
        return launched
    raise NotFound(f"no slurm.conf at {target} and no cluster '{target}' with bursting enabled "
                   "or launched by cm (see `cm cluster list`)")


def _read(ctl: Controller, restart: str = "", key: bytes | None = None) -> Target:
    """The Target of a controller whose slurm.conf cm has not read yet (its name is in the file)."""
    if not ctl.local and not ctl.conf.is_absolute():
        # relative to the login directory there; slurmctld and its programs need it whole
        ctl.conf = Path(ctl.check(["realpath", "-e", str(ctl.conf)], timeout=30).strip())
    try:
        text = ctl.read_text(ctl.conf)
    except ProviderError as exc:
        if ctl.local:
            raise UsageError(str(exc)) from None
        raise
    conf = slurmconf.parse(ctl.conf, text)
    ctl.pid_file = conf.get("SlurmctldPidFile")
    return Target(conf.cluster, ctl, restart, key)


def _ssh_options(cloud: dict[str, Any]) -> dict[str, str]:
    options = {k: str(cloud[k]) for k in SSH_OPTIONS if cloud.get(k)}
    if options.get("key", "").endswith(".pub"):
        options["key"] = options["key"][:-4]  # ssh wants the private half
    return options


def _remote(ctx: Any, where: str, conf: Path) -> Controller:
    """The controller host ``where``: a slurm cloud's login host, or an ssh destination."""
    cloud = ctx.config.clouds().get(where)
    if cloud and cloud.get("kind") == "slurm" and cloud.get("host"):
        return Controller(conf, str(cloud["host"]), ssh=_ssh_options(cloud))
    return Controller(conf, where)


def _launched(ctx: Any, name: str) -> Target | None:
    """A Slurm cluster cm launched (a slurm cloud from the mirror), reached on its head over ssh."""
    from cm.clusters import store

    cloud = ctx.config.clouds().get(name)
    if not cloud or cloud.get("source") != "cluster":
        return None
    record = store.get(ctx, str(cloud.get("cluster_cloud", "")), str(cloud.get("cluster", name))) or {}
    outputs = record.get("outputs") or {}
    ctl = Controller(Path(str(outputs.get("slurm_conf") or LAUNCHED_CONF)), str(cloud["host"]),
                     ssh=_ssh_options(cloud))
    key = None
    try:
        held = json.loads(store.secrets_path(ctx, str(cloud.get("cluster_cloud", "")), name).read_text())
        key = base64.b64decode(held["munge_key"]) if held.get("munge_key") else None
    except (OSError, ValueError, KeyError):
        pass  # --munge-key then names it on the head
    return _read(ctl, LAUNCHED_RESTART, key)


def munge_key(target: Target, given: str) -> bytes:
    """The cluster's munge key: the one cm holds, else the file ``given`` on the controller host."""
    if target.munge_key and not given:
        return target.munge_key
    path = given or "/etc/munge/munge.key"
    try:
        if target.ctl.local:
            return Path(path).read_bytes()
        return base64.b64decode(target.ctl.check(["base64", "-w0", path], timeout=30))
    except (OSError, ProviderError, ValueError):
        where = "" if target.ctl.local else f" on {target.ctl.host}"
        raise UsageError(f"cannot read the cluster's munge key {path}{where}; give it with --munge-key PATH") \
            from None
