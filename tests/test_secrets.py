"""Secrets never linger: not in caches after `cloud remove`, not in history, not echoed; no orphaned temp files."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cm.context import Context


def _files_holding(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_cloud_remove_leaves_no_copy_of_the_password(cm, cm_home):
    assert cm("cloud", "add", "lab", "--kind", "kvm", "uri=test:///default", "password=hunter2xyz").code == 0
    assert cm("cloud", "list").code == 0  # reads clouds.d through its cache
    assert _files_holding(cm_home, "hunter2xyz")  # the cloud's own file, and its cache, while it exists
    assert cm("cloud", "remove", "lab").code == 0
    assert _files_holding(cm_home, "hunter2xyz") == []


def test_a_cloud_file_deleted_by_hand_loses_its_cache_too(cm, cm_home):
    cm("cloud", "add", "lab", "--kind", "kvm", "uri=test:///default", "password=hunter2xyz")
    cm("cloud", "list")
    (cm_home / "clouds.d" / "lab.yaml").unlink()
    cm("cloud", "list")
    assert _files_holding(cm_home, "hunter2xyz") == []


def test_a_password_in_a_uri_stays_out_of_the_history(cm_home):
    from cm.shell import Shell

    app = Shell(Context())
    app.stdout = io.StringIO()
    app.onecmd_plus_hooks("cloud add lab --kind kvm uri=qemu+ssh://me:PW1234@host.invalid/system")
    app.onecmd_plus_hooks("cloud list")
    app._persist_history()
    assert [h.statement.raw for h in app.history] == ["cloud list"]
    assert b"PW1234" not in (cm_home / "history").read_bytes()


def test_a_secret_variable_is_not_echoed_but_still_expands(cm, tmp_path):
    result = cm("var", "os_password=s3cr3tvalue")
    assert result.code == 0 and "s3cr3tvalue" not in result.out + result.err
    assert "os_password=********" in result.out
    for fmt in ("table", "json", "value"):
        assert "s3cr3tvalue" not in cm("var", "list", "-f", fmt).out
    assert "s3cr3tvalue" not in cm("var", "os_password").out
    out = tmp_path / "out"
    script = tmp_path / "use.cm"
    script.write_text(f"!echo $os_password > {out}\n")
    assert cm(str(script)).code == 0
    assert out.read_text().strip() == "s3cr3tvalue"


def test_temporary_files_of_a_killed_writer_are_cleaned_up_later(cm, cm_home):
    cm("var", "a=1")
    stuck = ("import os, sys, time; from pathlib import Path; from cm.config import write_private;"
             "os.fsync = lambda fd: time.sleep(120);"
             f"write_private(Path({str(cm_home / 'clouds.d' / 'x.yaml')!r}), 'password: pw')")
    (cm_home / "clouds.d").mkdir()
    proc = subprocess.Popen([sys.executable, "-c", stuck], env=os.environ.copy())
    deadline = time.monotonic() + 30
    while not list((cm_home / "clouds.d").glob(".x.yaml.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list((cm_home / "clouds.d").glob(".x.yaml.*.tmp")), "the writer left its temporary file"
    (cm_home / f".mirror.json.{proc.pid}.tmp").write_text("{}")  # what a mirror write killed mid-way leaves
    live = cm_home / f".settings.json.{os.getpid()}.tmp"  # a write in progress in a live process
    live.write_text("{}")
    assert cm("vm", "list").code == 0
    assert list(cm_home.rglob(".*.tmp")) == [live]
