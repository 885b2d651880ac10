"""A private Slurm 22.05 test cluster: munged, slurmctld, N slurmd, optional slurmdbd + MariaDB.

Usage (context manager; every name, port and file is private to it)::

    from tests.infra.slurm import SlurmCluster

    with SlurmCluster("infra-a", base_port=21500, nodes=2) as c:   # fast mode, all on loopback
        c.run(["srun", "-N2", "hostname"]).stdout                   # clients get SLURM_CONF
        c.env                       # os.environ + SLURM_CONF for your own subprocesses (fast mode)
        c.client_env                # just {"SLURM_CONF": ...}
        # cm driven in-process (the `cm` fixture): monkeypatch.setenv("SLURM_CONF", str(c.conf))

    SlurmCluster("infra-b", 21520, nodes=2, networked=True)   # each slurmd in its own netns host
    SlurmCluster("infra-c", 21540, accounting=True, accounts={"acct": ["root"]})  # sacct -A acct

or as a pytest fixture in a test module::

    from tests.infra.slurm import cluster_fixture
    slurm = cluster_fixture("infra-m", 21560, scope="module", nodes=2)
    def test_x(slurm): assert slurm.run(["sinfo"]).returncode == 0

Options: ``nodes``, ``cpus`` (per node), ``partitions`` (PartitionName lines; default one
``debug`` partition over ALL), ``extra_conf`` (extra slurm.conf lines), ``accounting`` +
``accounts`` ({account: [users]}), ``cloud_nodes`` (elastic nodes ``c1..cK``, State=CLOUD
Feature=cloud, with RUNS-HERE's power-saving lines; override any with ``power={"SuspendTime":
"5"}``).  Cloud nodes get default ResumeProgram/SuspendProgram scripts that start/stop their
slurmd (``c.power_log()`` lists ``resume c1``/``suspend c1``); pass ``resume_program=`` /
``suspend_program=`` to use yours (``c.node_command("c1")`` is the argv that starts c1's slurmd
where it belongs, with ``-b`` so slurmctld sees a fresh boot; run it with ``< /dev/null``).

Ports: slurmctld ``base_port``, slurmd ``base_port+1..+nodes``, slurmdbd ``base_port+nodes+1``,
MariaDB ``base_port+nodes+2``, cloud slurmd after those (``nodes + cloud_nodes + 3`` ports).
Node names ``n1..nN``; ClusterName is the prefix with ``-`` turned into ``_``.

Fast mode: every daemon in this namespace on 127.0.0.1; clients run from here with ``c.env``.
Networked mode: a ``tests.infra.netns.Lab`` named by the prefix; slurmctld (and slurmdbd,
MariaDB) run in host ``head`` (``c.head``), each slurmd in host ``nI``/``cJ`` with its own
hostname and address (``c.hosts``); ``c.run`` runs clients inside ``head`` (the lab subnet must
not be reached from this namespace).  ``c.spawn(key, argv, host)`` starts more daemons that
``stop`` kills.  Start returns when sinfo shows every static node idle (about 0.6 s; 0.8 s
networked; 6-9 s with accounting); on failure it raises RuntimeError with the daemons' log tails
and cleans up.  Stop kills the pids it started (process groups and descendants) and any process
naming its temp dir, then removes that dir and its namespaces; a start first reaps what a
killed run with the same prefix left.  Recipe: RUNS-HERE.md (proctrack/linuxproc, task/none,
private munge socket via AuthInfo=socket=...).
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.infra.netns import Host, Lab
from tests.infra.slurmdb import start_accounting
from tests.infra.procs import kill_naming, kill_tree, reap_stale, wait_for

SLURM_TIMEOUT = 60.0
POWER_DEFAULTS = {
    "SuspendTime": "60", "SuspendTimeout": "30", "ResumeTimeout": "60", "TreeWidth": "65533",
    "CommunicationParameters": "NoAddrCache", "SlurmctldParameters": "idle_on_node_suspend",
    "PrivateData": "cloud",
}


class SlurmCluster:
    """A private Slurm cluster (see the module docstring)."""

    def __init__(self, prefix: str, base_port: int, nodes: int = 2, cpus: int = 1,
                 networked: bool = False, accounting: bool = False,
                 accounts: dict[str, list[str]] | None = None, partitions: list[str] | None = None,
                 extra_conf: list[str] | None = None, cloud_nodes: int = 0,
                 power: dict[str, str] | None = None, resume_program: str | None = None,
                 suspend_program: str | None = None, timeout: float = SLURM_TIMEOUT) -> None:
        self.prefix = prefix
        self.cluster_name = prefix.replace("-", "_").lower()
        self.base_port = base_port
        self.node_names = [f"n{i}" for i in range(1, nodes + 1)]
        self.cloud_names = [f"c{i}" for i in range(1, cloud_nodes + 1)]
        self.power = {**POWER_DEFAULTS, **(power or {})}
        self.resume_program = resume_program
        self.suspend_program = suspend_program
        self.cpus = cpus
        self.networked = networked
        self.accounting = accounting
        self.accounts = accounts or {}
        self.partitions = partitions or ["PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"]
        self.extra_conf = extra_conf or []
        self.timeout = timeout
        self.procs: dict[str, subprocess.Popen] = {}
        self.lab: Lab | None = None
        self.hosts: dict[str, Host] = {}
        self.tmp = Path()
        self.started_in = 0.0

    # -- layout ---------------------------------------------------------------------------
    @property
    def ctld_port(self) -> int:
        return self.base_port

    def slurmd_port(self, name: str) -> int:
        """Static node nI listens on base+I, cloud node cJ on base+nodes+2+J (after dbd and db)."""
        if name in self.cloud_names:
            return self.base_port + len(self.node_names) + 3 + self.cloud_names.index(name)
        return self.base_port + 1 + self.node_names.index(name)

    @property
    def dbd_port(self) -> int:
        return self.base_port + len(self.node_names) + 1

    @property
    def db_port(self) -> int:
        return self.base_port + len(self.node_names) + 2

    @property
    def conf(self) -> Path:
        return self.tmp / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.tmp / "munge" / "munge.sock"

    @property
    def client_env(self) -> dict[str, str]:
        """What a Slurm client needs besides the usual environment: ``{"SLURM_CONF": ...}``."""
        return {"SLURM_CONF": str(self.conf)}

    @property
    def env(self) -> dict[str, str]:
        """Environment for Slurm clients: os.environ plus SLURM_CONF."""
        return {**os.environ, **self.client_env}

    @property
    def head(self) -> Host | None:
        """The namespaced head host (networked mode) where slurmctld and the clients run."""
        return self.hosts.get("head")

    @property
    def pids(self) -> list[int]:
        """Pids of the daemons this cluster started and that still run."""
        return [p.pid for p in self.procs.values() if p.poll() is None]

    # -- processes ------------------------------------------------------------------------
    def spawn(self, key: str, argv: list[str], host: Host | None = None) -> subprocess.Popen:
        """Start a daemon (in ``host`` when given) in its own session; ``stop`` kills it."""
        log = open(self.tmp / "log" / f"{key}.out", "ab")
        kw = dict(stdout=log, stderr=subprocess.STDOUT, env=self.env)
        proc = host.popen(argv, **kw) if host else subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        log.close()
        self.procs[key] = proc
        return proc

    def run(self, argv: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess[str]:
        """Run a client command (sinfo, srun, sbatch, sacct, ...) where it reaches slurmctld.

        The default working directory is the cluster's temp dir, so slurm-N.out files land there.
        """
        kw.setdefault("capture_output", True)
        kw.setdefault("cwd", self.tmp)
        if self.head:
            return self.head.run(argv, timeout=timeout, env=self.env, **kw)
        return subprocess.run(argv, text=True, timeout=timeout, env=self.env, **kw)

    def log(self, key: str) -> str:
        """A daemon's log (slurmctld, slurmd-n1, slurmdbd, munged, mariadb) for failure messages."""
        for path in (self.tmp / "log" / f"{key}.log", self.tmp / "log" / f"{key}.out"):
            if path.exists():
                return path.read_text(errors="replace")[-4000:]
        return ""

    # -- start ----------------------------------------------------------------------------
    def start(self) -> "SlurmCluster":
        """Write the configs and start every daemon; returns once every node is idle."""
        t0 = time.monotonic()
        reap_stale(self.prefix, "slurm")
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-slurm-"))
        self.tmp.chmod(0o755)
        for sub in ("etc", "munge", "log", "state", "spool", "run", "db"):
            (self.tmp / sub).mkdir(mode=0o755)
        try:
            if self.networked:
                self.lab = Lab(self.prefix).start()
                self.hosts["head"] = self.lab.add_host("head")
                for name in self.node_names + self.cloud_names:   # all before slurmctld's mount ns
                    self.hosts[name] = self.lab.add_host(name)
            self.start_munge()
            self.write_slurm_conf()
            if self.accounting:
                start_accounting(self)
            self.spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)], self.head)
            wait_for("slurmctld to answer", lambda: self.alive() and "UP" in self.run(["scontrol", "ping"]).stdout,
                     self.timeout)
            for name in self.node_names:
                self.spawn(f"slurmd-{name}", self.slurmd_argv(name), self.hosts.get(name))
            wait_for(f"{len(self.node_names)} idle nodes", self.all_idle, self.timeout)
        except BaseException as exc:
            logs = "".join(f"\n--- {k} ---\n{self.log(k)[-1500:]}" for k in self.procs)
            self.stop()
            if isinstance(exc, Exception):
                raise RuntimeError(f"{self.prefix}: Slurm cluster did not start: {exc}{logs}") from exc
            raise
        self.started_in = time.monotonic() - t0
        return self

    def slurmd_argv(self, name: str) -> list[str]:
        """The command line that starts node ``name``'s slurmd in the foreground."""
        return ["slurmd", "-D", "-N", name, "-f", str(self.conf)]

    def alive(self) -> bool:
        """True while every daemon runs; raises naming the first one that exited."""
        for key, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{key} exited with status {proc.returncode}")
        return True

    def all_idle(self) -> bool:
        """True when sinfo lists every static node as idle."""
        self.alive()
        out = self.run(["sinfo", "-h", "-N", "-o", "%N %T"]).stdout.split("\n")
        states = dict(line.split()[:2] for line in out if len(line.split()) >= 2)
        return all(states.get(n) == "idle" for n in self.node_names)

    def start_munge(self) -> None:
        """A private munged: own key, socket, pid, seed and log files."""
        key = self.tmp / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o600)
        d = self.tmp / "munge"
        self.spawn("munged", ["munged", "-F", "--force", f"--socket={self.munge_socket}",
                              f"--key-file={key}", f"--pid-file={d / 'munged.pid'}",
                              f"--seed-file={d / 'munged.seed'}", f"--log-file={self.tmp / 'log' / 'munged.log'}"])
        wait_for("munged socket", self.munge_socket.exists, self.timeout, 0.05)

    def write_slurm_conf(self) -> None:
        """slurm.conf under TMP/etc, as RUNS-HERE measured (no cgroup.conf: the host default works)."""
        t = self.tmp
        if self.networked:
            ctld_host = f"head({self.hosts['head'].addr})"
        else:
            ctld_host = f"{socket.gethostname()}(127.0.0.1)"
        lines = [
            f"ClusterName={self.cluster_name}", f"SlurmctldHost={ctld_host}",
            f"SlurmctldPort={self.ctld_port}", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={t / 'state'}", f"SlurmdSpoolDir={t / 'spool'}/%n",
            f"SlurmctldLogFile={t / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={t / 'log'}/slurmd-%n.log",
            f"SlurmctldPidFile={t / 'run' / 'slurmctld.pid'}", f"SlurmdPidFile={t / 'run'}/slurmd-%n.pid",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/linux", "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={t / 'log' / 'jobcomp.log'}", "ReturnToService=2",
            "MpiDefault=none", "SchedulerType=sched/backfill", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core", "SlurmdTimeout=30", "InactiveLimit=0", "MinJobAge=300",
        ]
        if self.accounting:
            lines += ["AccountingStorageType=accounting_storage/slurmdbd",
                      "AccountingStorageHost=127.0.0.1", f"AccountingStoragePort={self.dbd_port}",
                      # for munge, the "password" names the socket: the dbd link ignores AuthInfo
                      f"AccountingStoragePass={self.munge_socket}"]
        for name in self.node_names + self.cloud_names:
            if self.networked:
                where = f"NodeHostname={name} NodeAddr={self.hosts[name].addr}"
            else:
                where = f"NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1"
            state = "CLOUD Feature=cloud" if name in self.cloud_names else "UNKNOWN"
            lines.append(f"NodeName={name} {where} Port={self.slurmd_port(name)} CPUs={self.cpus} State={state}")
        if self.cloud_names:
            lines += self.power_conf()
        lines += self.extra_conf + self.partitions
        self.conf.write_text("\n".join(lines) + "\n")
        for name in self.node_names + self.cloud_names:
            (t / "spool" / name).mkdir(exist_ok=True)

    def power_conf(self) -> list[str]:
        """Power-saving lines for the cloud nodes (RUNS-HERE's measured set) and default programs."""
        bin_dir = self.tmp / "bin"
        bin_dir.mkdir(exist_ok=True)
        resume, suspend = bin_dir / "resume", bin_dir / "suspend"
        power_log, conf = self.tmp / "log" / "power.log", self.conf
        starts = "".join(f"    {n}) setsid {shlex.join(self.node_command(n))} < /dev/null "
                         f">> {self.tmp / 'log'}/slurmd-{n}.out 2>&1 & ;;\n" for n in self.cloud_names)
        # slurmctld runs these programs with a bare environment (no /usr/sbin on PATH)
        loop = f'export SLURM_CONF={conf} PATH=/usr/sbin:/usr/bin:/sbin:/bin\nfor n in $(scontrol show hostnames "$1"); do\n'
        resume.write_text(f"#!/bin/sh\n{loop}  echo \"resume $n\" >> {power_log}\n"
                          f"  case $n in\n{starts}  esac\ndone\n")
        suspend.write_text(f"#!/bin/sh\n{loop}  echo \"suspend $n\" >> {power_log}\n"
                           f"  f={self.tmp / 'run'}/slurmd-$n.pid; [ -f $f ] && kill $(cat $f)\ndone\nexit 0\n")
        resume.chmod(0o755)
        suspend.chmod(0o755)
        static = ",".join(self.node_names)
        return ([f"ResumeProgram={self.resume_program or resume}",
                 f"SuspendProgram={self.suspend_program or suspend}"]
                + ([f"SuspendExcNodes={static}"] if static else [])
                + [f"{key}={value}" for key, value in self.power.items()])

    def node_command(self, name: str) -> list[str]:
        """argv that starts node ``name``'s slurmd where it belongs (its own host when networked).

        ``-b`` reports a fresh boot: slurmctld waits for one before a powered-up node is used.
        """
        argv = self.slurmd_argv(name) + ["-b"]
        host = self.hosts.get(name)
        return host.wrap(argv) if host else argv

    def power_log(self) -> list[str]:
        """Lines ``resume NODE`` / ``suspend NODE`` written by the default power programs."""
        path = self.tmp / "log" / "power.log"
        return path.read_text().splitlines() if path.exists() else []

    def sacctmgr(self, *words: str) -> str:
        """Run ``sacctmgr -i WORDS``; raise with its message when it fails."""
        proc = self.run(["sacctmgr", "-i", *words])
        if proc.returncode != 0:
            raise RuntimeError(f"sacctmgr {' '.join(words)}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    # -- stop -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Kill the daemons this cluster started (newest first), its namespaces and temp dir."""
        for key in reversed(list(self.procs)):
            kill_tree(self.procs[key])
        self.procs.clear()
        if self.tmp != Path():
            kill_naming(f"{self.tmp}/")   # slurmd of cloud nodes, started by the ResumeProgram
        if self.lab:
            self.lab.stop()
            self.lab = None
        self.hosts.clear()
        if self.tmp != Path() and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def cluster_fixture(prefix: str, base_port: int, scope: str = "module", **options):
    """A pytest fixture (default module scope) yielding a started ``SlurmCluster``."""
    import pytest

    @pytest.fixture(scope=scope)
    def slurm_cluster():
        with SlurmCluster(prefix, base_port, **options) as cluster:
            yield cluster
    return slurm_cluster
