"""`cm image add NAME FILE` on an OpenStack cloud: Glance create and upload through the real
openstacksdk, the disk format detected, the checksums verified, a progress bar on a terminal only."""

from __future__ import annotations

import hashlib
import os
import pty
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.openstack_fixtures import *  # noqa: F403  (fixtures: fake, cloud)
from tests.openstack_fixtures import one_line, rows

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning", "ignore::DeprecationWarning")
ROOT = Path(__file__).resolve().parent.parent


def qcow2(path: Path, virtual: int = 2 << 30, payload: int = 300_000) -> Path:
    header = b"QFI\xfb" + struct.pack(">IQIIQ", 3, 0, 0, 16, virtual)
    path.write_bytes(header + os.urandom(payload))
    return path


def test_image_add_uploads_detects_the_format_and_lists_it(cm, cloud, tmp_path):
    path = qcow2(tmp_path / "mine.qcow2")
    added = cm("image", "add", "mine", str(path), "--cloud", "fake")
    assert added.code == 0, added.err
    assert added.out.strip() == "added image mine to fake"
    assert "\x1b[" not in added.err  # not a terminal: no progress bar drawn
    stored = next(i for i in cloud.state.images.values() if i["name"] == "mine")
    assert stored["disk_format"] == "qcow2" and stored["status"] == "active" and stored["visibility"] == "private"
    assert cloud.state.image_data[stored["id"]] == path.read_bytes()
    assert stored["os_hash_value"] == hashlib.sha512(path.read_bytes()).hexdigest()
    listed = {i["name"]: i for i in rows(cm("image", "list", "--cloud", "fake", "-f", "json"))}
    assert listed["mine"]["format"] == "qcow2" and listed["mine"]["size"] == path.stat().st_size

    raw = tmp_path / "disk.img"
    raw.write_bytes(os.urandom(70_000))
    assert cm("image", "add", "plain", str(raw), "--cloud", "fake").code == 0
    assert next(i for i in cloud.state.images.values() if i["name"] == "plain")["disk_format"] == "raw"
    vmdk = tmp_path / "disk.vmdk"
    vmdk.write_bytes(b"KDMV" + os.urandom(5000))
    assert cm("image", "add", "vm-ware", str(vmdk), "--cloud", "fake").code == 0
    assert next(i for i in cloud.state.images.values() if i["name"] == "vm-ware")["disk_format"] == "vmdk"


def test_a_damaged_upload_is_deleted_and_reported(cm, cloud, tmp_path):
    cloud.corrupt_next_upload()
    result = cm("image", "add", "broken", str(qcow2(tmp_path / "b.qcow2")), "--cloud", "fake")
    assert result.code == 1 and result.out == ""
    assert one_line(result.err).startswith("cm: cloud 'fake': image 'broken' arrived damaged (its sha512 is ")
    assert "it was deleted, try `cm image add` again" in result.err
    assert not [i for i in cloud.state.images.values() if i["name"] == "broken"]
    assert cm("image", "add", "broken", str(tmp_path / "b.qcow2"), "--cloud", "fake").code == 0  # then it works


def test_what_cannot_be_uploaded_is_refused_in_one_line(cm, cloud, tmp_path):
    packed = tmp_path / "disk.qcow2.gz"
    packed.write_bytes(b"\x1f\x8b" + bytes(100))
    result = cm("image", "add", "x", str(packed), "--cloud", "fake")
    assert result.code == 2 and one_line(result.err) == f"cm: {packed} is gzip-compressed; uncompress it first (gunzip)"
    result = cm("image", "add", "x", str(tmp_path / "missing.qcow2"), "--cloud", "fake")
    assert result.code == 2 and "no such file" in result.err
    qed = tmp_path / "disk.qed"
    qed.write_bytes(b"QED\x00" + bytes(100))
    assert "Glance does not take" in cm("image", "add", "x", str(qed), "--cloud", "fake").err
    taken = cm("image", "add", "cirros-0.6.2-x86_64-disk", str(qcow2(tmp_path / "c.qcow2")), "--cloud", "fake")
    assert taken.code != 0 and "already exists" in taken.err
    assert len([i for i in cloud.state.images.values() if i["name"] == "cirros-0.6.2-x86_64-disk"]) == 1


def test_a_progress_bar_on_a_terminal(cloud, tmp_path):
    """On a terminal (a pseudo-terminal here) the upload draws a progress bar on stderr, then removes it."""
    path = qcow2(tmp_path / "big.qcow2", payload=8 << 20)
    cloud.inject_latency(0.3, "PUT", r"/image/v2/images/.*/file")
    primary, secondary = pty.openpty()
    proc = subprocess.run([sys.executable, "-m", "cm.main", "image", "add", "big", str(path), "--cloud", "fake"],
                          stdout=subprocess.PIPE, stderr=secondary, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=120, cwd=tmp_path)
    os.close(secondary)
    seen = b""
    try:
        while chunk := os.read(primary, 65536):
            seen += chunk
    except OSError:
        pass  # the terminal closed
    os.close(primary)
    assert proc.returncode == 0 and proc.stdout.decode().strip() == "added image big to fake"
    assert b"uploading big" in seen and b"MB" in seen
