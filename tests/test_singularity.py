"""`cm singularity build|list|inspect|delete`: real SIF files (squashfs-tools + siftool), real %post in a chroot.

Running images through Slurm on two nodes is in test_hpc_slurm.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not (shutil.which("siftool") and shutil.which("mksquashfs")),
                                reason="siftool and squashfs-tools are installed by scripts/install-system-packages.sh")

HELLO = """Bootstrap: localimage
From: base.sif

%labels
    Author tester
    Version 1.2

%files
    data.txt /opt/data.txt

%environment
    export GREETING=hello

%post
    echo made-by-post > /opt/built
    ls /proc/self > /dev/null

%runscript
    echo "$GREETING from the image, args: $*"
    cat /opt/data.txt /opt/built
"""


def busybox_root(path: Path) -> Path:
    """A tiny real root: busybox-static and its applet links."""
    (path / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", path / "bin" / "busybox")
    for applet in ("sh", "echo", "cat", "ls", "hostname", "mount"):
        (path / "bin" / applet).symlink_to("busybox")
    return path


def sif_objects(path: Path) -> list[str]:
    out = subprocess.run(["siftool", "list", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.split("|")[-1].strip() for line in out.splitlines() if line[:1].isdigit()]


def run_in_root(sif: Path, tmp: Path, *argv: str) -> str:
    """Run a command in the image's root as a runtime does: unpack the system partition, chroot."""
    root = tmp / f"unpacked-{sif.stem}"
    if not root.exists():
        unpack(sif, root)
    done = subprocess.run(["unshare", "--mount", "--pid", "--fork", "chroot", str(root), *argv],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def unpack(sif: Path, root: Path) -> None:
    offset = subprocess.run(["siftool", "list", str(sif)], capture_output=True, text=True).stdout
    start = [line.split("|")[3].split("-")[0].strip() for line in offset.splitlines() if "*System" in line][0]
    subprocess.run(["unsquashfs", "-q", "-n", "-o", start, "-d", str(root), str(sif)], check=True, capture_output=True)


@pytest.fixture
def built(cm, tmp_path, monkeypatch):
    """A base image from a directory and a 'hello' image built from a definition on top of it."""
    monkeypatch.chdir(tmp_path)
    busybox_root(tmp_path / "base")
    assert cm("singularity", "build", "base", "--from", str(tmp_path / "base")).code == 0
    shutil.copy(Path(cm_home_of(cm)) / "images" / "base.sif", tmp_path / "base.sif")
    (tmp_path / "data.txt").write_text("input-data\n")
    (tmp_path / "hello.def").write_text(HELLO)
    result = cm("singularity", "build", "hello", "--def", str(tmp_path / "hello.def"), "-f", "json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def cm_home_of(cm) -> str:
    import os

    return os.environ["CM_HOME"]


def test_a_directory_becomes_a_real_sif_that_siftool_reads(cm, tmp_path):
    busybox_root(tmp_path / "root")
    result = cm("singularity", "build", "base", "--from", str(tmp_path / "root"), "-f", "json")
    assert result.code == 0, result.err
    sif = Path(json.loads(result.out)["path"])
    assert sif_objects(sif) == ["JSON.Labels", "FS (Squashfs/*System/amd64)"]
    listing = subprocess.run(["unsquashfs", "-ll", "-o", "32768", str(sif)], capture_output=True, text=True).stdout
    for path in ("bin/busybox", ".singularity.d/actions/run", ".singularity.d/labels.json", "etc/hosts", "proc"):
        assert f"squashfs-root/{path}" in listing, path
    assert not (tmp_path / "root" / ".singularity.d").exists()  # the user's tree is never changed


def test_a_definition_file_builds_an_image_whose_runscript_runs(built, tmp_path):
    sif = Path(built["path"])
    assert built["bootstrap"] == "localimage"
    assert sif_objects(sif) == ["Def.FILE", "JSON.Labels", "FS (Squashfs/*System/amd64)"]
    out = run_in_root(sif, tmp_path, "/.singularity.d/actions/run", "a", "b")
    assert out.splitlines() == ["hello from the image, args: a b", "input-data", "made-by-post"]


def test_list_inspect_and_delete(cm, built):
    rows = {r["name"]: r for r in json.loads(cm("singularity", "list", "-f", "json").out)}
    assert set(rows) == {"base", "hello"}
    assert len(rows["hello"]["sha256"]) == 64 and rows["hello"]["size"] == Path(built["path"]).stat().st_size
    shown = json.loads(cm("singularity", "inspect", "hello", "-f", "json").out)
    assert shown["labels"]["Author"] == "tester" and shown["labels"]["Version"] == "1.2"
    assert shown["definition"] == HELLO
    assert any("*System" in o for o in shown["objects"])
    assert cm("singularity", "delete", "hello").code == 0
    assert [r["name"] for r in json.loads(cm("singularity", "list", "-f", "json").out)] == ["base"]
    result = cm("singularity", "inspect", "hello")
    assert result.code == 2 and "no image 'hello' (images: base" in result.err


def test_an_existing_image_is_kept_unless_forced(cm, built, tmp_path):
    before = Path(built["path"]).read_bytes()
    result = cm("singularity", "build", "hello", "--def", str(tmp_path / "hello.def"))
    assert result.code == 1 and "image 'hello' exists; delete it first or build with --force" in result.err
    assert Path(built["path"]).read_bytes() == before
    assert cm("singularity", "build", "hello", "--def", str(tmp_path / "hello.def"), "--force").code == 0


@pytest.mark.parametrize("definition, message", [
    ("%runscript\n  echo hi\n", "no 'Bootstrap:' line"),
    ("Bootstrap: docker\nFrom: debian\n", "bootstrap agent 'docker' is not supported"),
    ("Bootstrap: debootstrap\nMirrorURL: http://deb.debian.org/debian\n", "needs an 'OSVersion:' line"),
    ("Bootstrap: localimage\n", "needs a 'From:' line"),
    ("Bootstrap: localimage\nFrom: nothere.sif\n", "From: nothere.sif is not a file"),
    ("Bootstrap: localimage\nFrom: base.sif\n%files\n  absent.txt /opt/x\n", "%files source"),
])
def test_bad_definitions_are_refused_in_one_line_and_leave_nothing(cm, built, tmp_path, definition, message):
    bad = tmp_path / "bad.def"
    bad.write_text(definition)
    result = cm("singularity", "build", "bad", "--def", str(bad))
    assert result.code == 2, result.err
    [line] = result.err.strip().splitlines()
    assert message in line
    leftovers = sorted(p.name for p in (Path(cm_home_of(cm)) / "images").iterdir())
    assert leftovers == ["base.json", "base.sif", "hello.json", "hello.sif"]


def test_a_failing_post_fails_the_build_and_leaves_nothing(cm, built, tmp_path):
    bad = tmp_path / "post.def"
    bad.write_text("Bootstrap: localimage\nFrom: base.sif\n%post\n  echo about to fail\n  false\n  echo never\n")
    result = cm("singularity", "build", "post", "--def", str(bad))
    assert result.code == 1 and "%post failed (exit 1): about to fail" in result.err
    assert not list((Path(cm_home_of(cm)) / "images").glob("post*"))
    assert not list((Path(cm_home_of(cm)) / "images").glob(".build-*"))


def test_build_usage_errors(cm, tmp_path):
    assert cm("singularity", "build", "x").code == 2
    assert "not a directory" in cm("singularity", "build", "x", "--from", str(tmp_path / "none")).err
    assert "bad image name" in cm("singularity", "build", "a/b", "--from", str(tmp_path)).err
    result = cm("singularity", "run", "x", "--cloud", "local")
    assert result.code == 2 and "not an HPC system" in result.err


@pytest.mark.e2e
def test_a_debootstrap_definition_builds_a_debian_image(cm, tmp_path):
    """Bootstrap: debootstrap from the Debian mirror apt uses; packages cached under ~/.cache/cm-tests."""
    import os
    import pwd

    cache = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "cm-tests" / "debootstrap"
    (tmp_path / "deb.def").write_text("Bootstrap: debootstrap\nOSVersion: bookworm\n"
                                      "MirrorURL: http://deb.debian.org/debian\n\n%post\n"
                                      "    echo from-post > /etc/cm-built\n\n%runscript\n    cat /etc/debian_version\n")
    result = cm("singularity", "build", "deb", "--def", str(tmp_path / "deb.def"), "--cache", str(cache), "-f", "json")
    assert result.code == 0, result.err
    sif = Path(json.loads(result.out)["path"])
    assert run_in_root(sif, tmp_path, "/bin/cat", "/etc/cm-built").strip() == "from-post"
    assert run_in_root(sif, tmp_path, "/.singularity.d/actions/run").strip().startswith("12.")
