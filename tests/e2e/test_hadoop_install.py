"""End-to-end: the Hadoop recipe's install.sh downloads a release from a configurable mirror and
checks its SHA-512 before it installs anything.

A release archive of the recipe's ``hadoop_version`` (built from the cached jars, with a release's
layout: tests/infra/hadoop_release.py) is served over HTTP on loopback; the rendered install.sh,
pointed at it with ``--param mirror=... checksums=...``, runs as root as a guest's user-data runs
it, its console captured.  What it installed runs (``bin/hadoop version`` from the release's own
jars); a wrong checksum, a download that breaks off or a damaged archive is refused with one
CM-FAILED line (what cm shows for the node) and leaves no tree, no half-unpacked dir, no temp file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cm.clusters import markers, plan
from tests.infra.hadoop import recipe_cluster
from tests.infra.hadoop_release import Mirror, release_tarball, run_install, sha512

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="e2e: needs root (mount namespace, as cloud-init runs it)"),
    pytest.mark.skipif(not (shutil.which("java") and shutil.which("mvn")),
                       reason="e2e: java/mvn missing: run scripts/install-system-packages.sh"),
]
VERSION = str(recipe_cluster(1)[1]["params"]["hadoop_version"])
FILE = f"hadoop-{VERSION}.tar.gz"
WHERE = f"hadoop/common/hadoop-{VERSION}"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """The release and its Apache-style .sha512 on a loopback mirror; a truncated copy under /broken."""
    archive = release_tarball(VERSION)
    data = archive.read_bytes()
    with Mirror(tmp_path_factory.mktemp("mirror")) as m:
        m.publish(WHERE, FILE, data)
        m.publish(WHERE, f"{FILE}.sha512", Path(f"{archive}.sha512").read_text())
        m.publish(f"broken/{WHERE}", FILE, data[:len(data) // 2])
        yield m


def install(server: Mirror, work: Path, **params: str):
    """Render install.sh for ``cm hadoop -n 1 --param prefix=WORK/opt mirror=URL checksums=URL PARAMS``, run it."""
    given = {"prefix": str(work / "opt"), "mirror": server.url, "checksums": server.url, **params}
    recipe, cluster = recipe_cluster(1, params=given)
    script = recipe.render_files(plan.context(cluster, recipe, {}, None))["install.sh"]
    server.requests.clear()
    proc, console = run_install(script, "hadoop", work)
    return proc, console


def assert_nothing_installed(work: Path) -> None:
    """No tree, no half-unpacked dir under the prefix, nothing left in the temp dir."""
    prefix = work / "opt"
    assert not prefix.exists() or list(prefix.iterdir()) == []
    assert list((work / "tmp").iterdir()) == []


def test_installs_a_checked_release_from_the_mirror_once(mirror, tmp_path):
    leftover = tmp_path / "opt" / "hadoop" / "share"       # a tree without bin/hadoop is not an install
    leftover.mkdir(parents=True)
    (leftover / "junk").write_text("x")
    proc, console = install(mirror, tmp_path)
    assert proc.returncode == 0, console + proc.stderr
    assert console == f"installed {FILE} in {tmp_path}/opt/hadoop\n"
    assert mirror.requests == [f"/{WHERE}/{FILE}", f"/{WHERE}/{FILE}.sha512"]
    home = tmp_path / "opt" / "hadoop"
    assert not (leftover / "junk").exists() and (home / "etc" / "hadoop" / "capacity-scheduler.xml").exists()
    out = subprocess.run([home / "bin" / "hadoop", "version"], capture_output=True, text=True, timeout=120).stdout
    assert out.splitlines()[0] == f"Hadoop {VERSION}", out
    assert list((tmp_path / "tmp").iterdir()) == []
    again, console = install(mirror, tmp_path)              # installed: nothing fetched again
    assert again.returncode == 0 and console == "" and mirror.requests == []


@pytest.mark.parametrize("form", ["sha512sum", "gpg"])
def test_reads_each_form_of_apache_checksum_file(mirror, tmp_path, form):
    digest = sha512(mirror.root / WHERE / FILE)
    text = (f"{digest}  {FILE}\n" if form == "sha512sum" else
            f"{FILE}: " + "\n".join(" ".join(digest.upper()[i:i + 8] for i in range(j, j + 32, 8))
                                    for j in range(0, 128, 32)) + "\n")
    mirror.publish(f"{form}/{WHERE}", f"{FILE}.sha512", text)
    proc, console = install(mirror, tmp_path, checksums=f"{mirror.url}/{form}")
    assert proc.returncode == 0 and console.startswith("installed"), console + proc.stderr


def test_a_wrong_checksum_is_refused_and_installs_nothing(mirror, tmp_path):
    proc, console = install(mirror, tmp_path, hadoop_sha512=sha512(Path(__file__)))
    assert proc.returncode == 1
    assert console == f"CM-FAILED: {FILE} checksum mismatch: not installed\n"
    assert markers.read(console) == ("failed", f"{FILE} checksum mismatch: not installed")
    assert mirror.requests == [f"/{WHERE}/{FILE}"]            # the given sum: no checksum site asked
    assert_nothing_installed(tmp_path)


def test_a_download_that_breaks_off_is_refused(mirror, tmp_path):
    mirror.cut[f"/{WHERE}/{FILE}"] = 1 << 20
    try:
        proc, console = install(mirror, tmp_path)
    finally:
        mirror.cut.clear()
    assert proc.returncode == 1
    assert console == f"CM-FAILED: cannot download {mirror.url}/{WHERE}/{FILE}\n"
    assert_nothing_installed(tmp_path)


def test_a_truncated_archive_on_the_mirror_is_refused(mirror, tmp_path):
    proc, console = install(mirror, tmp_path, mirror=f"{mirror.url}/broken")
    assert proc.returncode == 1
    assert console == f"CM-FAILED: {FILE} checksum mismatch: not installed\n"
    assert_nothing_installed(tmp_path)


def test_a_missing_checksum_file_is_refused(mirror, tmp_path):
    proc, console = install(mirror, tmp_path, checksums=f"{mirror.url}/nowhere")
    assert proc.returncode == 1
    assert console == f"CM-FAILED: cannot download the checksum {mirror.url}/nowhere/{WHERE}/{FILE}.sha512\n"
    assert_nothing_installed(tmp_path)
