"""Commands on an HPC login host: over the ``ssh`` binary with one multiplexed connection, or locally.

Settings of a slurm cloud that shape the connection::

    host: login.example.org   # or localhost / local: run on this machine, no ssh
    user: me                  # else the user's ssh config, else the login name
    port: 22
    key: ~/.ssh/id_ed25519    # IdentityFile (IdentitiesOnly)
    jump: bastion.example.org # ProxyJump
    ssh_config: ~/.ssh/config # an ssh_config file to use instead of the user's own
    connect_timeout: 10       # seconds before an unreachable host is reported

Everything else (known hosts, aliases, jump hosts) comes from the user's ssh
config, as with a plain ``ssh``.  The first command opens a master connection
(ControlMaster) in a private 0700 directory; later ones reuse it, and
:meth:`Remote.close` ends it, so one cm command costs one ssh handshake.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from cm.errors import ConfigError, ProviderError
from cm.ssh import login_options

LOCAL_HOSTS = {"localhost", "local", "127.0.0.1", "::1"}
SSH_FAILED = 255  # ssh's own exit status when it could not connect


class Result:
    """What one remote command returned."""

    def __init__(self, code: int, out: bytes, err: bytes) -> None:
        self.code, self.out_bytes, self.err_bytes = code, out, err

    @property
    def out(self) -> str:
        return self.out_bytes.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.err_bytes.decode(errors="replace")

    def last_error(self) -> str:
        """The most useful line of stderr (the last non-empty one)."""
        lines = [line.strip() for line in self.err.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {self.code}"


class Remote:
    """Run shell commands on the login host of one cloud."""

    def __init__(self, cloud: str, config: dict[str, Any]) -> None:
        self.cloud = cloud
        self.host = str(config.get("host") or "").strip()
        if not self.host:
            raise ConfigError(f"cloud '{cloud}' has no 'host' (the login host, or localhost)")
        self.local = self.host in LOCAL_HOSTS and not config.get("user") and not config.get("port")
        self.config = config
        self._control_dir: str | None = None

    @property
    def where(self) -> str:
        """The login host as users name it, for messages."""
        user = self.config.get("user")
        return "this host" if self.local else (f"{user}@{self.host}" if user else self.host)

    def ssh_command(self) -> list[str]:
        """``ssh`` with this cloud's options, up to (and including) the destination."""
        conf = self.config
        if self._control_dir is None:
            self._control_dir = tempfile.mkdtemp(prefix="cm-ssh-")  # mkdtemp makes it 0700
        cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(float(conf.get('connect_timeout') or 10))}",
               "-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_dir}/%C", "-o", "ControlPersist=300",
               "-o", "ServerAliveInterval=15", "-o", "LogLevel=ERROR"]
        cmd += login_options(conf)
        return [*cmd, "--", self.host]

    def argv(self, script: str) -> list[str]:
        """The local argv that runs ``script`` (a POSIX shell snippet) on the login host."""
        if self.local:
            return ["/bin/sh", "-c", script]
        return [*self.ssh_command(), script]

    def run(self, script: str, input: bytes | None = None, timeout: float | None = 600,
            check: bool = True) -> Result:
        """Run ``script`` on the login host; an unreachable host is a one-line ProviderError.

        With ``check`` a non-zero exit is a ProviderError carrying the script's last stderr line.
        """
        try:
            done = subprocess.run(self.argv(script), input=input or b"", capture_output=True, timeout=timeout,
                                  cwd=self.home())
        except FileNotFoundError as exc:
            raise ProviderError(f"cloud '{self.cloud}': cannot run {exc.filename} on this machine") from exc
        except subprocess.TimeoutExpired as exc:
            raise ProviderError(f"cloud '{self.cloud}': no answer from {self.where} in {timeout:g} s") from exc
        result = Result(done.returncode, done.stdout, done.stderr)
        if result.code == SSH_FAILED and not self.local:
            raise ProviderError(f"cannot reach cloud '{self.cloud}' ({self.where}): {result.last_error()}")
        if check and result.code:
            raise ProviderError(f"cloud '{self.cloud}': {result.last_error()}")
        return result

    def stream(self, script: str) -> subprocess.Popen:
        """Start ``script`` with its stdout as a pipe read line by line (srun output)."""
        return subprocess.Popen(self.argv(script), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, cwd=self.home())

    def home(self) -> str | None:
        """Where commands start: the login home over ssh; the user's home in local mode too."""
        return os.path.expanduser("~") if self.local else None

    def put_tree(self, files: dict[str, Path], remote_dir: str, then: str = "") -> Result:
        """Copy ``files`` ({name in remote_dir: local path}) in one tar stream, then run ``then`` there."""
        import io
        import tarfile

        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, path in files.items():
                tar.add(str(path), arcname=name)
        quoted = shlex.quote(remote_dir)
        script = f"mkdir -p {quoted} && tar -xf - -C {quoted}"
        if then:
            script += f" && cd {quoted} && {{ {then}; }}"
        return self.run(script, input=buffer.getvalue(), check=False)

    def get_tree(self, remote_dir: str, names: list[str], dest: Path) -> list[str]:
        """Copy ``names`` (relative to remote_dir; missing ones skipped) into ``dest``; the names copied."""
        import io
        import tarfile

        quoted = shlex.quote(remote_dir)
        wanted = " ".join(shlex.quote(n) for n in names)
        script = (f"cd {quoted} || exit 3; set --; for f in {wanted}; do [ -e \"$f\" ] && set -- \"$@\" \"$f\"; done; "
                  "tar -cf - \"$@\"")
        result = self.run(script, check=False)
        if result.code:
            raise ProviderError(f"cloud '{self.cloud}': cannot read {remote_dir} on {self.where}: {result.last_error()}")
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(result.out_bytes), mode="r") as tar:
            members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
            tar.extractall(dest, members=members, filter="data")
        return [m.name.removeprefix("./") for m in members if m.isfile()]

    def copy_file(self, local: Path, remote_path: str) -> None:
        """Copy one (large) file to ``remote_path``, through the multiplexed connection (scp)."""
        if self.local:
            shutil.copyfile(local, Path(self.home() or ".") / remote_path)
            return
        options = self._scp_options(self.ssh_command())
        target = f"{self.host}:{remote_path}"
        done = subprocess.run(["scp", "-q", *options, str(local), target], capture_output=True)
        if done.returncode:
            raise ProviderError(f"cloud '{self.cloud}': copying {local.name} failed: "
                                f"{Result(done.returncode, b'', done.stderr).last_error()}")

    @staticmethod
    def _scp_options(ssh: list[str]) -> list[str]:
        """ssh's options for scp, which spells the port -P."""
        words, out = ssh[1:-2], []
        i = 0
        while i < len(words):
            if words[i] == "-p":
                out += ["-P", words[i + 1]]
                i += 2
                continue
            out.append(words[i])
            i += 1
        return out

    def close(self) -> None:
        """End the master connection and remove its private directory."""
        if self._control_dir is None:
            return
        if not self.local and any(os.scandir(self._control_dir)):
            subprocess.run([*self.ssh_command()[:-2], "-O", "exit", "--", self.host], capture_output=True, timeout=15)
        shutil.rmtree(self._control_dir, ignore_errors=True)
        self._control_dir = None
