"""The mirror never loses data: atomic writes, cross-process locking, foreign files kept aside."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cm.errors import MirrorError
from cm.mirror import SCHEMA, Mirror


def _vm(name: str, state: str = "running") -> dict:
    return {"name": name, "id": name, "state": state}


def test_put_get_remove_and_schema_version(tmp_path):
    mirror = Mirror(tmp_path / "mirror.json")
    mirror.put("vm", "local", _vm("a"))
    mirror.put("vm", "local", _vm("a", "stopped"))  # update, not a duplicate
    mirror.put("vm", "other", _vm("a"))
    assert [r["state"] for r in mirror.records("vm", "local")] == ["stopped"]
    assert mirror.get("vm", "other", "a")["_schema"] == SCHEMA
    mirror.remove("vm", "local", ["a"])
    assert mirror.records("vm", "local") == []
    assert len(mirror.records("vm")) == 1


def test_replace_makes_records_gone_from_the_cloud_disappear(tmp_path):
    mirror = Mirror(tmp_path / "mirror.json")
    mirror.replace("vm", "c1", [_vm("a"), _vm("b")])
    mirror.replace("vm", "c2", [_vm("z")])
    mirror.replace("vm", "c1", [_vm("b")])
    assert [r["name"] for r in mirror.records("vm", "c1")] == ["b"]
    assert [r["name"] for r in mirror.records("vm", "c2")] == ["z"]


def test_mirror_file_is_private(tmp_path):
    mirror = Mirror(tmp_path / "mirror.json")
    mirror.set_variable("x", "1")
    mirror.put("vm", "local", _vm("a"))
    assert (tmp_path / "mirror.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "settings.json").stat().st_mode & 0o777 == 0o600


def test_unreadable_file_is_kept_aside_with_a_clear_error(tmp_path, cm, cm_home):
    path = cm_home / "mirror.json"
    path.write_text("{not json")
    result = cm("vm", "list")
    assert result.code == 1
    assert "could not be used: it is not valid JSON" in result.err
    kept = list(cm_home.glob("mirror.json.unreadable-*"))
    assert len(kept) == 1 and kept[0].read_text() == "{not json"
    assert cm("vm", "list").code == 0  # a new mirror is started


def test_foreign_json_file_is_not_overwritten(tmp_path):
    path = tmp_path / "mirror.json"
    path.write_text(json.dumps({"_default": {"1": {"secret": "someone else's"}}}))
    with pytest.raises(MirrorError, match="not a cm mirror"):
        Mirror(path).put("vm", "local", _vm("a"))
    kept = list(tmp_path.glob("mirror.json.unreadable-*"))
    assert json.loads(kept[0].read_text())["_default"]["1"]["secret"] == "someone else's"


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "mirror.json"
    path.write_text(json.dumps({"meta": {"1": {"app": "cm-mirror", "schema": SCHEMA + 1}}}))
    with pytest.raises(MirrorError, match="newer cm"):
        Mirror(path).records("vm")
    assert path.exists()


def _writer(path: str, prefix: str, count: int) -> None:
    mirror = Mirror(Path(path))
    for i in range(count):
        mirror.put("vm", "local", _vm(f"{prefix}-{i}"))


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "mirror.json")
    procs = [multiprocessing.Process(target=_writer, args=(path, p, 40)) for p in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    names = {r["name"] for r in Mirror(Path(path)).records("vm", "local")}
    assert len(names) == 120


def test_counters_are_unique_across_processes(tmp_path):
    path = tmp_path / "mirror.json"
    code = ("import sys; from pathlib import Path; from cm.mirror import Mirror; m = Mirror(Path(sys.argv[1]));"
            "print(' '.join(str(n) for _ in range(20) for n in m.next_counter('vm:x', 2)))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    numbers = [int(n) for p in procs for n in p.communicate(timeout=60)[0].split()]
    assert sorted(numbers) == list(range(1, 121))


def test_kill_9_mid_write_leaves_old_or_new_state(tmp_path):
    """Kill writers at random moments; the file always parses and holds a prefix of the writes."""
    path = tmp_path / "mirror.json"
    Mirror(path).replace("vm", "local", [_vm(f"seed-{i}") for i in range(2000)])
    code = ("import sys; from pathlib import Path; from cm.mirror import Mirror; m = Mirror(Path(sys.argv[1]));\n"
            "i = 0\nwhile True:\n    m.put('vm', 'local', {'name': f'w-{i}', 'id': str(i)}); i += 1\n")
    for delay in (0.3, 0.45, 0.6, 0.75):
        proc = subprocess.Popen([sys.executable, "-c", code, str(path)])
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        records = Mirror(path).records("vm", "local")  # must parse
        names = {r["name"] for r in records}
        assert {f"seed-{i}" for i in range(2000)} <= names
        written = sorted(int(n[2:]) for n in names if n.startswith("w-"))
        assert written == list(range(len(written)))  # no gaps: every write before the kill is there


def test_migrations_run_on_older_files(tmp_path, monkeypatch):
    from cm import mirror as mirror_mod

    path = tmp_path / "mirror.json"
    path.write_text(json.dumps({"meta": {"1": {"app": "cm-mirror", "schema": 0}},
                                "vm": {"1": {"name": "old", "cloud": "c"}}}))

    def add_state(data: dict) -> dict:
        for doc in data["vm"].values():
            doc.setdefault("state", "unknown")
        return data

    monkeypatch.setattr(mirror_mod, "MIGRATIONS", {0: add_state})
    assert Mirror(path).records("vm", "c")[0]["state"] == "unknown"
