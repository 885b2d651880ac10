"""Slurm's own commands (scontrol, squeue, slurmctld) and its slurm.conf for one cluster, where its
controller is: here (``local``) or on a controller host reached with the ``ssh`` binary (one
ControlMaster connection; ``ssh`` options user, port, key, jump, ssh_config as a slurm cloud has
them)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cm.errors import ProviderError
from cm.ssh import login_options

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SSH_OPTIONS = ("user", "port", "key", "jump", "ssh_config", "known_hosts")  # cm.ssh.login_options


UNREACHABLE = "cannot reach the controller host"


class Unreachable(ProviderError):
    """ssh could not reach the controller host: nothing ran there (a reason that may pass)."""


@dataclass
class Controller:
    conf: Path
    host: str = "local"   # or an ssh destination (user@host, an alias of ssh_config)
    control_dir: Path | None = None
    pid_file: str = ""    # SlurmctldPidFile: tells a restarted slurmctld from the old one
    ssh: dict[str, str] = field(default_factory=dict)   # SSH_OPTIONS for the controller host

    @property
    def local(self) -> bool:
        return self.host == "local"

    def ssh_argv(self) -> list[str]:
        """``ssh`` with the controller's options, up to its destination."""
        control = (self.control_dir or Path("/tmp")) / "cm-ssh-%C"
        argv = ["ssh", "-o", "ControlMaster=auto", "-o", f"ControlPath={control}", "-o", "ControlPersist=60",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "LogLevel=ERROR"]
        argv += login_options(self.ssh)
        return [*argv, "--", self.host]

    def disconnect(self) -> None:
        """Close the ControlMaster connection to the controller host, if one is open."""
        if not self.local:
            argv = self.ssh_argv()
            subprocess.run([*argv[:-2], "-O", "exit", *argv[-2:]], capture_output=True, timeout=30,
                           stdin=subprocess.DEVNULL)

    def argv(self, words: list[str]) -> list[str]:
        if self.local:
            return words
        remote = f"SLURM_CONF={shlex.quote(str(self.conf))} PATH=$PATH:{PATH} " + shlex.join(words)
        return [*self.ssh_argv(), remote]

    def run(self, words: list[str], timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": os.environ.get("PATH", "") + ":" + PATH}
        try:
            return subprocess.run(self.argv(words), capture_output=True, text=True, timeout=timeout, env=env,
                                  input=input, stdin=None if input is not None else subprocess.DEVNULL)
        except FileNotFoundError:
            raise ProviderError(f"{words[0]} is not installed here; run cm where Slurm's commands are") from None
        except subprocess.TimeoutExpired:
            raise ProviderError(f"`{shlex.join(words)}` did not finish in {timeout:g} s") from None

    def check(self, words: list[str], timeout: float = 60, input: str | None = None) -> str:
        """Run and return stdout; a failure is one line with Slurm's own message."""
        proc = self.run(words, timeout, input)
        if proc.returncode == 255 and not self.local:
            why = (proc.stderr.strip() or "ssh failed").splitlines()[-1]
            raise Unreachable(f"{UNREACHABLE} {self.host} with ssh: {why}")
        if proc.returncode != 0:
            why = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()[-1]
            raise ProviderError(f"`{shlex.join(words)}` failed: {why}")
        return proc.stdout

    def read_text(self, path: Path) -> str:
        """A file on the controller host (slurm.conf, the munge key)."""
        if self.local:
            try:
                return Path(path).read_text()
            except OSError as exc:
                raise ProviderError(f"cannot read {path}: {exc.strerror or exc}") from None
        return self.check(["cat", str(path)], timeout=30)

    def write_text(self, path: Path, text: str, mode: int = 0) -> None:
        """Replace a file on the controller host atomically, keeping its mode (or giving it ``mode``)."""
        if self.local:
            _write_local(Path(path), text, mode)
            return
        tmp = f"{path}.cm-{os.getpid()}"
        keep = f"chmod {mode:o} {shlex.quote(tmp)}" if mode else \
            f"{{ chmod --reference={shlex.quote(str(path))} {shlex.quote(tmp)} 2>/dev/null || true; }}"
        script = (f"mkdir -p {shlex.quote(str(Path(path).parent))} && (umask 077; cat > {shlex.quote(tmp)}) && "
                  f"{keep} && mv -f {shlex.quote(tmp)} {shlex.quote(str(path))} || {{ rm -f {shlex.quote(tmp)}; exit 1; }}")
        self.check(["sh", "-c", script], timeout=30, input=text)

    def scontrol(self, *words: str) -> str:
        return self.check(["scontrol", *words])

    def up(self) -> bool:
        proc = self.run(["scontrol", "ping"], timeout=15)
        return proc.returncode == 0 and "UP" in proc.stdout

    def nodes(self, names: str) -> dict[str, dict[str, str]]:
        """``scontrol show node -o`` of a hostlist: node name -> its fields."""
        proc = self.run(["scontrol", "show", "node", "-o", names])
        found = {}
        for line in proc.stdout.splitlines():
            fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
            if "NodeName" in fields:
                found[fields["NodeName"]] = fields
        return found

    def delivered(self, timeout: float = 60) -> None:
        """Wait until slurmctld's agent has handed every pending RPC to its slurmd (sdiag's agent
        queue empty): slurmd answers a suspend before doing it, but a VM saved after that answer
        still does the suspend, in order, when restored."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.check(["sdiag"])
            counts = [int(n) for n in re.findall(r"^\s*Agent (?:queue size|count|thread count):\s*(\d+)", out, re.M)]
            if counts and not any(counts):
                return
            if time.monotonic() >= deadline:
                raise ProviderError(f"slurmctld still had RPCs in flight after {timeout:g} s (sdiag: agent {counts})")
            time.sleep(0.05)

    def restart(self, command: str, timeout: float = 60) -> None:
        """Start slurmctld afresh with ``command`` (it stops the old one itself) and wait until it answers.

        Slurm 22.05 cannot add or remove nodes by `scontrol reconfigure` (slurmctld exits), so a
        change of the node set takes a restart; jobs and node states survive it (StateSaveLocation).
        """
        before = self._pid()
        proc = self.run(shlex.split(command), timeout=timeout)
        if proc.returncode != 0:
            why = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()[-1]
            raise ProviderError(f"restarting slurmctld with `{command}` failed: {why}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (before == -1 or self._pid() not in (before, 0)) and self.up():
                return
            time.sleep(0.2)
        raise ProviderError(f"slurmctld did not answer within {timeout:g} s of `{command}`; see its log")

    def _pid(self) -> int:
        if not self.pid_file:
            return -1
        try:
            text = self.read_text(Path(self.pid_file))
        except ProviderError:
            return 0
        try:
            return int(text.split()[0])
        except (ValueError, IndexError):
            return 0



def _write_local(path: Path, text: str, mode: int) -> None:
    """Replace ``path`` atomically (Slurm's daemons read it at any moment), keeping its mode."""
    from cm.config import write_atomic

    if not mode:
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, mode)
