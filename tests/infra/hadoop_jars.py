"""Hadoop's jars from Maven Central, cached: a HADOOP_HOME that real daemons run from.

``hadoop_home("3.3.6")`` returns ``~/.cache/cm-tests/hadoop/hadoop-3.3.6``, built once (under a
lock, by ``mvn dependency:copy-dependencies`` on a generated pom, with Maven's strict checksum
checks against Central's own .sha1 files) and laid out like a release's
``share/hadoop/common/lib`` (every jar there; ``share/hadoop/mapreduce`` points at it), so YARN's
default container classpath finds them.  The NameNode's and DataNode's web apps are not in the
hadoop-hdfs jar (a release ships them as share/hadoop/hdfs/webapps): they are unpacked there from
the hadoop-hdfs tests jar, and that directory goes on the daemons' classpath.  A SHA-256 manifest written at the build is checked on
every later use: a damaged cache is rebuilt, never run.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

CACHE = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "cm-tests" / "hadoop"
ARTIFACTS = [
    "hadoop-common", "hadoop-hdfs", "hadoop-hdfs-client",
    "hadoop-yarn-server-resourcemanager", "hadoop-yarn-server-nodemanager",
    "hadoop-yarn-server-web-proxy", "hadoop-yarn-server-timelineservice", "hadoop-yarn-client",
    "hadoop-mapreduce-client-app", "hadoop-mapreduce-client-jobclient",
    "hadoop-mapreduce-client-shuffle", "hadoop-mapreduce-client-hs", "hadoop-mapreduce-examples",
]
MANIFEST = "SHA256SUMS"


def cache_dir() -> Path:
    """The cache (``CM_TESTS_HADOOP_CACHE`` overrides it, e.g. for a cold-cache benchmark)."""
    return Path(os.environ.get("CM_TESTS_HADOOP_CACHE") or CACHE)


def pom(version: str) -> str:
    """A pom whose runtime dependency closure is Hadoop ``version``'s daemons, clients and examples."""
    deps = "".join(f"<dependency><groupId>org.apache.hadoop</groupId><artifactId>{a}</artifactId>"
                   f"<version>{version}</version></dependency>" for a in ARTIFACTS)
    return ('<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
            "<groupId>cm.tests</groupId><artifactId>hadoop-closure</artifactId><version>1</version>"
            f"<packaging>pom</packaging><dependencies>{deps}</dependencies></project>\n")


def lib_dir(home: Path) -> Path:
    return home / "share" / "hadoop" / "common" / "lib"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def webapps_dir(home: Path) -> Path:
    return home / "share" / "hadoop" / "hdfs"


def cached_files(home: Path) -> list[Path]:
    """The jars and the web apps' files, relative to ``home``."""
    found = list(lib_dir(home).glob("*.jar")) + [p for p in webapps_dir(home).rglob("*") if p.is_file()]
    return sorted(p.relative_to(home) for p in found)


def write_manifest(home: Path) -> None:
    lines = [f"{sha256(home / rel)}  {rel}" for rel in cached_files(home)]
    (home / MANIFEST).write_text("\n".join(lines) + "\n")


def intact(home: Path) -> bool:
    """True when every file the manifest lists is there with its recorded SHA-256 (and no other)."""
    manifest = home / MANIFEST
    if not manifest.exists():
        return False
    listed = dict(reversed(line.split("  ", 1)) for line in manifest.read_text().splitlines() if line)
    have = {str(rel) for rel in cached_files(home)}
    return bool(listed) and have == set(listed) and all(
        sha256(home / rel) == digest for rel, digest in listed.items())


def mvn(version: str, work: Path, *goal: str) -> None:
    """Run one Maven goal on the generated pom, with the cache's own local repository."""
    proc = subprocess.run(["mvn", "-B", "-q", "--strict-checksums", f"-Dmaven.repo.local={cache_dir() / 'm2'}",
                           "-f", str(work / "pom.xml"), *goal], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"mvn could not fetch Hadoop {version}: {(proc.stdout + proc.stderr)[-2000:]}")


def build(version: str, home: Path) -> None:
    """Resolve the closure with Maven into a temp dir next to ``home``, then move it into place."""
    work = Path(tempfile.mkdtemp(prefix=f".build-{version}-", dir=home.parent))
    try:
        (work / "pom.xml").write_text(pom(version))
        out = lib_dir(work / "home")
        mvn(version, work, "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={out}")
        mvn(version, work, "dependency:unpack", f"-Dartifact=org.apache.hadoop:hadoop-hdfs:{version}:jar:tests",
            "-Dmdep.unpack.includes=webapps/**", f"-DoutputDirectory={webapps_dir(work / 'home')}")
        (out.parent.parent / "mapreduce").symlink_to("common/lib")
        (work / "home" / "etc" / "hadoop").mkdir(parents=True)
        write_manifest(work / "home")
        shutil.rmtree(home, ignore_errors=True)
        (work / "home").rename(home)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def hadoop_home(version: str) -> Path:
    """The cached HADOOP_HOME of ``version``, fetched from Maven Central when missing or damaged."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    home = cache / f"hadoop-{version}"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # concurrent test runs: one builds, the others wait
        if not intact(home):
            build(version, home)
    return home


def jar(home: Path, artifact: str) -> Path:
    """The jar of ``artifact`` (e.g. hadoop-mapreduce-examples) in ``home``."""
    found = sorted(lib_dir(home).glob(f"{artifact}-[0-9]*.jar"))
    if not found:
        raise FileNotFoundError(f"{artifact} not in {lib_dir(home)}")
    return found[0]
