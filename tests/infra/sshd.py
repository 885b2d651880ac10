"""A login host for tests: a real sshd with a generated host key and an authorized user key.

Usage::

    from tests.infra.sshd import LoginHost

    with LoginHost("infra-l", port=21510, env=cluster.client_env, host=cluster.head) as login:
        login.ssh("sinfo").stdout          # ssh -F login.ssh_config infra-l sinfo
        login.ssh_config                   # Path of an ssh_config snippet for cm (Host alias
                                           # = prefix, Port, User root, IdentityFile,
                                           # StrictHostKeyChecking accept-new, own known_hosts)
        login.key, login.addr, login.port  # ssh -p PORT -i KEY root@ADDR (loopback mode)
        login.home                         # cwd of every session (job output, scp targets)
        login.down(); login.up()           # sshd and its sessions killed, then sshd back (same keys)

Loopback mode (``host=None``): sshd listens on 127.0.0.1:PORT in this namespace, so plain
``ssh -p PORT -i KEY root@127.0.0.1`` works.  Namespaced mode (``host=`` a
``tests.infra.netns.Host``, e.g. ``SlurmCluster(networked=True).head``): sshd runs inside that
host on ADDR:PORT; since the lab subnet must not be reached from this namespace, the ssh_config
carries ``ProxyCommand nsenter --net=/run/netns/NS socat STDIO TCP:%h:%p`` (the TCP
connection is made inside the namespace).  ``hide=[paths]``: every session sees those directories
empty (a tmpfs in its own mount namespace), as on a host that does not share them; ``mask=[files]``:
sshd and every session see those files empty (e.g. this machine's ~/.bashrc).  ``env`` (e.g. ``{"SLURM_CONF": ...}``) is set for
every login session through sshd's ``SetEnv``, so ``ssh ... sinfo`` reaches the cluster.

pytest: ``login = login_fixture("infra-l", 21510, cluster="slurm")`` makes a fixture that uses
the cluster fixture named ``cluster`` (or none when ``cluster=None``).  ``stop`` kills sshd and
every session it forked, and removes the temp dir.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.infra.netns import NETNS_DIR, Host
from tests.infra.procs import kill_tree, reap_stale, wait_for


class LoginHost:
    """A real sshd reachable as root with a generated key (see the module docstring)."""

    def __init__(self, prefix: str, port: int, env: dict[str, str] | None = None,
                 host: Host | None = None, timeout: float = 30.0, hide: list[Path] | None = None,
                 mask: list[Path] | None = None) -> None:
        self.alias = prefix
        self.hide = [Path(p) for p in hide or []]
        # files sshd and every session see empty: sshd runs in its own mount namespace with /dev/null over them
        self.mask = [Path(p) for p in mask or [] if Path(p).is_file()]
        self.port = port
        self.env = env or {}
        self.host = host
        self.addr = host.addr if host else "127.0.0.1"
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.tmp = Path()
        self.started_in = 0.0

    @property
    def key(self) -> Path:
        """The user's private key (its .pub is authorized for root)."""
        return self.tmp / "id_ed25519"

    @property
    def ssh_config(self) -> Path:
        return self.tmp / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.tmp / "known_hosts"

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []

    def start(self) -> "LoginHost":
        """Generate keys and configs, start sshd; return once it answers a real login."""
        t0 = time.monotonic()
        reap_stale(self.alias, "sshd")
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.alias}-sshd-"))
        try:
            for name in ("ssh_host_ed25519_key", "id_ed25519"):
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.alias}-{name}",
                                "-f", str(self.tmp / name)], check=True, capture_output=True)
            auth = self.tmp / "authorized_keys"
            shutil.copy(self.tmp / "id_ed25519.pub", auth)
            auth.chmod(0o600)
            self.write_sshd_config()
            self.write_ssh_config()
            self.up()
        except BaseException as exc:
            log_text = (self.tmp / "sshd.log").read_text(errors="replace")[-2000:] \
                if (self.tmp / "sshd.log").exists() else ""
            self.stop()
            if isinstance(exc, Exception):
                raise RuntimeError(f"{self.alias}: sshd did not start: {exc}\n{log_text}") from exc
            raise
        self.started_in = time.monotonic() - t0
        return self

    def up(self) -> None:
        """Run sshd (again after ``down``: same keys, port and configs); return once it answers a real login."""
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # sshd's privilege-separation dir
        argv = ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.tmp / "sshd_config")]
        if self.mask:
            binds = "".join(f"mount --bind /dev/null {shlex.quote(str(p))} && " for p in self.mask)
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{binds}exec {shlex.join(argv)}"]
        log = open(self.tmp / "sshd.log", "ab")
        if self.host:
            self.proc = self.host.popen(argv, stdout=log, stderr=subprocess.STDOUT)
        else:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for(f"sshd on {self.addr}:{self.port}", self.answers, self.timeout, 0.2)

    def down(self) -> None:
        """Kill sshd and every session it forked (the host stops answering ssh); ``up`` brings it back."""
        if self.proc:
            kill_tree(self.proc)
            self.proc = None

    def answers(self) -> bool:
        """True once a real login runs ``true``."""
        if self.proc and self.proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {self.proc.returncode}")
        try:
            return self.ssh("true", timeout=15).returncode == 0
        except subprocess.TimeoutExpired:   # a busy machine: not yet
            return False

    def write_sshd_config(self) -> None:
        """sshd_config: key-only root login, own host key, pid file and session environment."""
        t = self.tmp
        listen = self.addr if not self.host else "0.0.0.0"
        lines = [
            f"Port {self.port}", f"ListenAddress {listen}", f"HostKey {t / 'ssh_host_ed25519_key'}",
            f"PidFile {t / 'sshd.pid'}", f"AuthorizedKeysFile {t / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PrintMotd no",
            "LogLevel ERROR", "Subsystem sftp /usr/lib/openssh/sftp-server",
            f"ForceCommand {self.write_session_script()}",
        ]
        if self.env:
            lines.append("SetEnv " + " ".join(shlex.quote(f"{k}={v}") for k, v in self.env.items()))
        (t / "sshd_config").write_text("\n".join(lines) + "\n")

    def write_session_script(self) -> Path:
        """Every session starts in TMP/home (so job output files die with the fixture), then runs
        the requested command, sftp, or a login shell."""
        (self.tmp / "home").mkdir()
        script = self.tmp / "session"
        # hidden directories: each session runs in its own mount namespace with an empty tmpfs on them
        hide = "" if not self.hide else f"""[ -n "$LOGIN_HIDDEN" ] || exec env LOGIN_HIDDEN=1 unshare --mount sh -c \\
    'for d in {" ".join(shlex.quote(str(p)) for p in self.hide)}; do mount -t tmpfs -o size=64k none "$d" || exit 1; \\
     done; exec "$0"' {shlex.quote(str(script))}
"""
        script.write_text(f"""#!/bin/sh
{hide}cd {shlex.quote(str(self.tmp / 'home'))} || exit 1
case "$SSH_ORIGINAL_COMMAND" in
    "") exec "${{SHELL:-/bin/sh}}" -l ;;
    sftp|internal-sftp) exec /usr/lib/openssh/sftp-server ;;
    *) exec "${{SHELL:-/bin/sh}}" -c "$SSH_ORIGINAL_COMMAND" ;;
esac
""")
        script.chmod(0o755)
        return script

    @property
    def home(self) -> Path:
        """The working directory of every login session."""
        return self.tmp / "home"

    def config_lines(self) -> list[str]:
        """The ssh_config ``Host`` block for this login host (indented options)."""
        lines = [
            f"Host {self.alias}", f"    HostName {self.addr}", f"    Port {self.port}", "    User root",
            f"    IdentityFile {self.key}", "    IdentitiesOnly yes",
            "    StrictHostKeyChecking accept-new", f"    UserKnownHostsFile {self.known_hosts}",
            "    BatchMode yes", "    LogLevel ERROR",
        ]
        if self.host:
            lines.append(f"    ProxyCommand nsenter --net={NETNS_DIR / self.host.ns} socat STDIO TCP:%h:%p")
        return lines

    def write_ssh_config(self) -> None:
        self.ssh_config.write_text("\n".join(self.config_lines()) + "\n")

    def ssh(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on the login host through the ssh binary and the written config."""
        return subprocess.run(["ssh", "-F", str(self.ssh_config), self.alias, command],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        """Kill sshd and every session it forked; remove the temp dir."""
        self.down()
        if self.tmp != Path() and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "LoginHost":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def login_fixture(prefix: str, port: int, cluster: str | None = "slurm_cluster", scope: str = "module"):
    """A pytest fixture yielding a started ``LoginHost``, wired to the cluster fixture named ``cluster``."""
    import pytest

    @pytest.fixture(scope=scope)
    def login_host(request):
        slurm = request.getfixturevalue(cluster) if cluster else None
        env = slurm.client_env if slurm else {}
        with LoginHost(prefix, port, env=env, host=slurm.head if slurm else None) as login:
            yield login
    return login_host

