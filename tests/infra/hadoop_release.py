"""A Hadoop release archive built from the cached jars, and an Apache-like mirror serving it on loopback.

Usage::

    from tests.infra.hadoop_release import Mirror, release_tarball, run_install

    archive = release_tarball("3.3.6")             # ~/.cache/cm-tests/hadoop/hadoop-3.3.6.tar.gz (+ .sha512)
    with Mirror(tmp / "www") as mirror:           # http://127.0.0.1:PORT, a free port
        mirror.publish("hadoop/common/hadoop-3.3.6", archive.name, archive.read_bytes())
        proc, console = run_install(script_text, "hadoop", tmp / "work")

The archive has a release's layout (``hadoop-VERSION/`` with ``share/hadoop/common/lib`` holding
every jar, the HDFS web apps, ``etc/hadoop`` with the CapacityScheduler's default queue and a
log4j.properties, and a ``bin/hadoop`` that runs ``hadoop version``/``classpath`` from those jars),
so the recipe's install.sh finds what it looks for; its ``.sha512`` is in Apache's own
``SHA512 (FILE) = HEX`` form.  Built once under the cache's lock; rebuilt when it no longer
matches its checksum.  ``Mirror`` serves a directory over HTTP on 127.0.0.1 and records the paths
asked for; ``mirror.cut[path] = n`` makes it announce the whole file but close after ``n`` bytes
(a download that breaks off).  ``run_install`` runs the recipe's rendered install.sh as root,
as a guest's user-data does, in its own mount namespace whose /dev/console is a file it returns.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import io
import os
import shlex
import subprocess
import tarfile
import threading
from pathlib import Path

from tests.infra.hadoop_jars import cache_dir, hadoop_home

# What a release's etc/hadoop holds besides the files the recipe writes over (the recipe copies its
# files into the release's conf dir): the CapacityScheduler's one default queue, and a log4j setup.
RELEASE_CONF = {"capacity-scheduler.xml": """<?xml version="1.0"?>
<configuration>
  <property><name>yarn.scheduler.capacity.maximum-am-resource-percent</name><value>0.5</value></property>
  <property><name>yarn.scheduler.capacity.root.queues</name><value>default</value></property>
  <property><name>yarn.scheduler.capacity.root.default.capacity</name><value>100</value></property>
  <property><name>yarn.scheduler.capacity.root.default.maximum-capacity</name><value>100</value></property>
  <property><name>yarn.scheduler.capacity.root.default.state</name><value>RUNNING</value></property>
</configuration>
""", "log4j.properties": """log4j.rootLogger=INFO,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{HH:mm:ss,SSS} %p %c{2}: %m%n
"""}
# A release's bin/hadoop is a long bash script; this one does the two things nothing else here does.
BIN_HADOOP = """#!/bin/sh
# bin/hadoop of a test release (Hadoop's own jars): `hadoop version` and `hadoop classpath`.
home=$(cd "$(dirname "$0")/.." && pwd)
cp="${HADOOP_CONF_DIR:-$home/etc/hadoop}:$home/share/hadoop/hdfs:$home/share/hadoop/common/lib/*"
case "$1" in
  classpath) echo "$cp" ;;
  version) exec java -cp "$cp" org.apache.hadoop.util.VersionInfo ;;
  *) echo "this test release's bin/hadoop knows: version, classpath" >&2; exit 2 ;;
esac
"""


def sha512(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha512").hexdigest()


def add_text(tar: tarfile.TarFile, name: str, text: str, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(text.encode()), mode
    tar.addfile(info, io.BytesIO(text.encode()))


def build_tarball(version: str, home: Path, archive: Path) -> None:
    """Write the release archive of ``version`` (then its .sha512) from the cached HADOOP_HOME ``home``."""
    top = f"hadoop-{version}"
    part = archive.with_name(archive.name + ".part")
    with tarfile.open(part, "w:gz", compresslevel=1) as tar:
        tar.add(home / "share", f"{top}/share")
        add_text(tar, f"{top}/bin/hadoop", BIN_HADOOP, 0o755)
        for name, text in RELEASE_CONF.items():
            add_text(tar, f"{top}/etc/hadoop/{name}", text)
    part.rename(archive)
    Path(f"{archive}.sha512").write_text(f"SHA512 ({archive.name}) = {sha512(archive)}\n")


def release_tarball(version: str) -> Path:
    """The cached release archive of ``version`` (built once, rebuilt when its checksum is off)."""
    archive = cache_dir() / f"hadoop-{version}.tar.gz"
    checksum = Path(f"{archive}.sha512")
    home = hadoop_home(version)              # takes and drops the same lock
    with open(cache_dir() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (archive.exists() and checksum.exists() and checksum.read_text().split()[-1] == sha512(archive)):
            build_tarball(version, home, archive)
    return archive


class Mirror:
    """An HTTP server of ``root`` on 127.0.0.1 (a free port); see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        self.cut: dict[str, int] = {}
        self.server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def publish(self, where: str, name: str, data: bytes | str) -> None:
        """Serve ``data`` as /WHERE/NAME."""
        dest = self.root / where / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data.encode() if isinstance(data, str) else data)

    def start(self) -> "Mirror":
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.requests.append(self.path)
                target = (mirror.root / self.path.lstrip("/")).resolve()
                if not target.is_file() or mirror.root.resolve() not in target.parents:
                    self.send_error(404)
                    return
                data = target.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[:mirror.cut.get(self.path, len(data))])
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.root.mkdir(parents=True, exist_ok=True)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> "Mirror":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_install(script: str, what: str, work: Path, timeout: float = 300) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run the rendered install.sh ``what`` as root with TMPDIR=WORK/tmp; its result and console output."""
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    (work / "install.sh").write_text(script)
    console = work / "console"
    console.write_text("")
    script = f"mount --bind {shlex.quote(str(console))} /dev/console && exec sh {shlex.quote(str(work / 'install.sh'))} {what}"
    argv = ["unshare", "--mount", "sh", "-c", script]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TMPDIR": str(work / "tmp")})
    return proc, console.read_text()
