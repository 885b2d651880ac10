"""Reaching libvirt: the URI (``auto`` picks a daemon or the test hypervisor), the connection,
the kind of guest the host runs (kvm or qemu), and libvirt errors as one-line cm errors."""

from __future__ import annotations

import contextlib
import re
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import libvirt

from cm.errors import AuthError, CmError, ConfigError, Conflict, NotFound, ProviderError, Unsupported
from cm_plugins.kvm.testnode import TestNode, node_path

SYSTEM_URI = "qemu:///system"
DOMAIN_TYPES = ("auto", "kvm", "qemu")


def quiet() -> None:
    """Stop libvirt printing every error on stderr itself: cm reports them, once, as one line."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


quiet()


def shown_uri(uri: str) -> str:
    """``uri`` as cm may print it: a password in its user part (qemu+ssh://me:pw@host/...) is dropped."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password is None:
        return uri
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}@{parts.netloc.rpartition('@')[2]}"))


def scrub(text: str, uri: str) -> str:
    """``text`` with ``uri`` (and its password, wherever libvirt repeated it) in its printable form."""
    try:
        password = urlsplit(uri).password
    except ValueError:
        password = None
    if not password:
        return text
    text = text.replace(uri, shown_uri(uri))
    return text.replace(password, "********") if len(password) >= 3 else text


def first_line(exc: BaseException) -> str:
    text = (exc.get_error_message() if isinstance(exc, libvirt.libvirtError) else "") or str(exc)
    line = (text or type(exc).__name__).strip().splitlines()[0]
    return line.removeprefix("internal error: ")  # libvirt's label, not part of the reason


def _no_daemon(message: str) -> bool:
    return bool(re.search(r"Failed to connect socket|No such file or directory|Connection refused|"
                          r"no connection driver|Cannot recv data|End of file while reading", message))


def _denied(message: str) -> bool:
    return bool(re.search(r"[Pp]ermission denied|authentication|not authorized|access denied", message))


def connect_error(exc: libvirt.libvirtError, uri: str) -> CmError:
    """Why a libvirt URI could not be opened, and what to do about it (never with the URI's password)."""
    message = scrub(first_line(exc), uri)
    uri = shown_uri(uri)
    if _denied(message) or exc.get_error_code() in (libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_ACCESS_DENIED,
                                                     libvirt.VIR_ERR_AUTH_CANCELLED):
        return AuthError(f"libvirt at {uri} refused access ({message}); join the 'libvirt' group "
                         "(then log in again) or use uri: qemu:///session")
    if _no_daemon(message):
        return ProviderError(f"no libvirt daemon answers at {uri} ({message}); start libvirtd, "
                             "or set uri: auto in cm.yaml to use the test hypervisor")
    return ProviderError(f"cannot connect to libvirt at {uri}: {message}")


def translate(exc: libvirt.libvirtError, cloud: str, uri: str, verb: str = "") -> CmError:
    """A libvirt error as one of cm's one-line errors, with what to do where cm knows it.

    ``verb`` is what the user asked for ("suspend VMs"), for the error of a driver that cannot do it.
    """
    code, message = exc.get_error_code(), scrub(first_line(exc), uri)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return NotFound(f"cloud '{cloud}' has no such VM ({message}); see `cm vm list --refresh`")
    if code == libvirt.VIR_ERR_NO_STORAGE_VOL:
        return NotFound(f"cloud '{cloud}': {message}; see `cm image list --refresh`")
    if code in (libvirt.VIR_ERR_DOM_EXIST, libvirt.VIR_ERR_STORAGE_VOL_EXIST):
        return Conflict(f"cloud '{cloud}': {message}")
    if code == libvirt.VIR_ERR_NO_SUPPORT:
        return Unsupported(cloud, verb or "do this",
                           f"libvirt's driver for {shown_uri(uri)} does not support it ({message})")
    if "No space left" in message or "Not enough free space" in message or "not enough space" in message:
        return ProviderError(f"cloud '{cloud}': the storage pool is out of space ({message}); "
                             "delete unused VMs or images, or use a pool with more room")
    if code in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_NO_CONNECT) and \
            (_no_daemon(message) or _denied(message)):
        return connect_error(exc, uri)
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return Conflict(f"cloud '{cloud}': {message}")
    return ProviderError(f"cloud '{cloud}' (libvirt {shown_uri(uri)}): {message}")


def is_local_uri(uri: str) -> bool:
    """A libvirt URI whose daemon runs on this machine (its files are ours to read)."""
    parsed = urlsplit(uri)
    return not parsed.hostname and "+ssh" not in parsed.scheme and "+tcp" not in parsed.scheme


def _cpu_has_virtualization() -> bool:
    """Hardware virtualization (vmx/svm) on this host's CPU; /dev/kvm without it (nested
    paravirtual KVM, as on the machines cm is tested on) hangs ordinary guests."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"^flags\s*:.*\b(vmx|svm)\b", text, re.M))


def guest_kind(conn: libvirt.virConnect, wanted: str, local: bool) -> tuple[str, str]:
    """(domain type, arch) for new VMs: kvm only where libvirt offers it and it can work."""
    caps = conn.getCapabilities()
    host_arch = (re.search(r"<host>.*?<arch>([^<]+)</arch>", caps, re.S) or [None, "x86_64"])[1]
    offered = {m.group(1): re.findall(r"<domain type='(\w+)'", m.group(2))
               for m in re.finditer(r"<arch name='([^']+)'>(.*?)</arch>", caps, re.S)}
    arch = host_arch if host_arch in offered else next(iter(offered), host_arch)
    types = offered.get(arch, [])
    if "test" in types:
        return "test", arch
    if wanted in ("kvm", "qemu"):
        return wanted, arch
    if "kvm" in types and (not local or _cpu_has_virtualization()):
        try:
            conn.getDomainCapabilities(None, arch, None, "kvm", 0)
            return "kvm", arch
        except libvirt.libvirtError:
            pass  # libvirt lists kvm but cannot use it (no /dev/kvm access): emulate
    return "qemu", arch


class Hypervisor:
    """A cloud's libvirt: one shared connection, or a persistent test node opened per use."""

    def __init__(self, cloud: str, config: dict[str, Any], home: Callable[[], Path],
                 notice: Callable[[str], None], announce: Callable[[str], None] | None = None) -> None:
        self.cloud = cloud
        self.config = config
        self.home = home  # asked on first use: the shell may set the provider's state_dir after creating it
        self.notice = notice  # said once ever
        self.announce = announce or stderr_notice  # said each time it applies
        self.uri = ""  # resolved on first use
        self.node: TestNode | None = None
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.RLock()

    # -- which hypervisor ------------------------------------------------------------------
    @property
    def is_test(self) -> bool:
        self.resolve()
        return self.node is not None

    @property
    def is_local(self) -> bool:
        """The hypervisor runs on this machine (its files are ours to read)."""
        return is_local_uri(self.resolve())

    def _test_node(self, uri: str, demo_image: bool) -> TestNode:
        path = urlsplit(uri).path
        seed = Path(path) if path not in ("", "/", "/default") else None
        if seed is not None and not seed.is_file():
            raise ConfigError(f"cloud '{self.cloud}': the test node file {seed} does not exist")
        return TestNode(node_path(self.home(), self.cloud), str(self.config.get("pool") or "default"),
                        str(self.config.get("network") or ""), seed=seed, demo_image=demo_image)

    def _auto(self) -> None:
        """``uri: auto``: the system daemon if one answers, else the test hypervisor; say which
        whenever it is not the one this cloud used last time (a daemon came or went)."""
        try:
            self._conn = libvirt.open(SYSTEM_URI)
            why = ""
        except libvirt.libvirtError as exc:
            self.node = self._test_node("test:///default", demo_image=True)
            why = first_line(exc)
        marker = self.home() / "kvm-test" / f"{self.cloud}.auto-uri"
        used = "test" if self.node else SYSTEM_URI
        try:
            last = marker.read_text().strip()
        except OSError:
            last = ""
        if last == used:
            return
        if self.node:
            self.announce(f"cm: cloud '{self.cloud}': no libvirt daemon at {SYSTEM_URI} ({why}); using libvirt's "
                          "test hypervisor instead: VMs are simulated and nothing really boots "
                          f"(state kept in {self.node.path})")
        else:
            before = f"; the test hypervisor's VMs stay in {node_path(self.home(), self.cloud)}" if last else ""
            self.announce(f"cm: cloud '{self.cloud}': using the libvirt daemon at {SYSTEM_URI}{before}")
        from cm.config import write_private

        marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(marker, used + "\n")

    def resolve(self) -> str:
        """The URI in use; ``auto`` becomes the system daemon or the test hypervisor."""
        with self._lock:
            if self.uri:
                return self.uri
            wanted = str(self.config.get("uri") or "auto")
            if wanted == "auto":
                self._auto()
            elif wanted.startswith("test:"):
                self.node = self._test_node(wanted, demo_image=False)
            else:
                try:
                    self._conn = libvirt.open(wanted)
                except libvirt.libvirtError as exc:
                    raise connect_error(exc, wanted) from None
            self.uri = self.node.uri if self.node else (SYSTEM_URI if wanted == "auto" else wanted)
            return self.uri

    @property
    def shown_uri(self) -> str:
        """The URI in use as messages may show it (no password)."""
        return shown_uri(self.resolve())

    # -- using it --------------------------------------------------------------------------
    @contextlib.contextmanager
    def use(self, verb: str, write: bool = False) -> Iterator[libvirt.virConnect]:
        """A connection for one operation (``verb``: "suspend VMs"); libvirt errors leave it as
        one-line cm errors."""
        self.resolve()
        try:
            if self.node is None:
                yield self._live()
            else:
                with self._node_session(write) as conn:
                    yield conn
        except libvirt.libvirtError as exc:
            raise translate(exc, self.cloud, self.uri, verb) from None

    def _live(self) -> libvirt.virConnect:
        """The shared connection, opened again if the daemon restarted under a long shell session."""
        with self._lock:
            if self._conn is None or not self._conn.isAlive():
                try:
                    self._conn = libvirt.open(self.uri)
                except libvirt.libvirtError as exc:
                    raise connect_error(exc, self.uri) from None
            return self._conn

    @contextlib.contextmanager
    def _node_session(self, write: bool) -> Iterator[libvirt.virConnect]:
        """The test node's state, under a lock; a change is written back as it is made."""
        assert self.node is not None
        with self._lock, self.node.session(write) as conn:
            for note in self.node.notes:
                self.notice(f"cm: cloud '{self.cloud}': {note}")
            self.node.notes.clear()
            yield conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None
            if self.node is not None:
                with contextlib.suppress(libvirt.libvirtError, OSError):
                    self.node.close()
            self.uri = ""
            self.node = None


def stderr_notice(text: str) -> None:
    """Where notices go when the shell gave the provider no ``notice``."""
    print(text, file=sys.stderr)
