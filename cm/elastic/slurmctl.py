"""Slurm's own commands (scontrol, squeue, slurmctld) for one cluster, run where its controller is:
here (``local``) or on a controller host reached with ssh (one ControlMaster connection)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cm.errors import ProviderError

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Controller:
    conf: Path
    host: str = "local"   # or an ssh destination (user@host)
    control_dir: Path | None = None
    pid_file: str = ""    # SlurmctldPidFile: tells a restarted slurmctld from the old one

    def argv(self, words: list[str]) -> list[str]:
        if self.host == "local":
            return words
        control = (self.control_dir or Path("/tmp")) / "cm-ssh-%C"
        remote = f"SLURM_CONF={shlex.quote(str(self.conf))} " + shlex.join(words)
        return ["ssh", "-o", "ControlMaster=auto", "-o", f"ControlPath={control}", "-o", "ControlPersist=60",
                "-o", "BatchMode=yes", self.host, remote]

    def run(self, words: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": os.environ.get("PATH", "") + ":" + PATH}
        try:
            return subprocess.run(self.argv(words), capture_output=True, text=True, timeout=timeout, env=env,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise ProviderError(f"{words[0]} is not installed here; run cm where Slurm's commands are") from None
        except subprocess.TimeoutExpired:
            raise ProviderError(f"`{shlex.join(words)}` did not finish in {timeout:g} s") from None

    def check(self, words: list[str], timeout: float = 60) -> str:
        """Run and return stdout; a failure is one line with Slurm's own message."""
        proc = self.run(words, timeout)
        if proc.returncode != 0:
            why = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()[-1]
            raise ProviderError(f"`{shlex.join(words)}` failed: {why}")
        return proc.stdout

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
        if self.host != "local":
            proc = self.run(["cat", self.pid_file], timeout=15)
            text = proc.stdout
        else:
            try:
                text = Path(self.pid_file).read_text()
            except OSError:
                return 0
        try:
            return int(text.split()[0])
        except (ValueError, IndexError):
            return 0
