"""Ctrl-C during a long operation stops it cleanly and leaves the mirror consistent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.openstack_fixtures import *  # noqa: F403 - the local OpenStack API server and a cloud on it


def _start(*words: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cm.main", *words], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())


def _interrupt(proc: subprocess.Popen[str], after: float) -> tuple[int, str]:
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_ctrl_c_while_waiting_for_boots_keeps_what_was_created(cm, cloud):
    cloud.set_create_delay(0.5)
    cloud.set_build_delay(30)
    code, err = _interrupt(_start("vm", "boot", "--n", "3"), after=3.0)
    assert code == 130
    assert "interrupted" in err and "Traceback" not in err
    listed = json.loads(cm("vm", "list", "-f", "json").out)
    assert sorted(v["name"] for v in listed) == ["tester-001", "tester-002", "tester-003"]
    assert {v["state"] for v in listed} == {"pending"}


def test_ctrl_c_while_creating_then_refresh_matches_the_cloud(cm, cloud):
    cloud.set_create_delay(2.0)
    code, err = _interrupt(_start("vm", "boot", "--n", "3"), after=1.0)
    assert code == 130 and "Traceback" not in err
    # The mirror file is whole, and a refresh brings in whatever the cloud created.
    assert cm("refresh", "vm").code == 0
    in_cloud = sorted(s["name"] for s in cloud.servers())
    assert sorted(v["name"] for v in json.loads(cm("vm", "list", "-f", "json").out)) == in_cloud


def test_ctrl_c_stops_a_wait_at_once(cm, cloud):
    assert cm("vm", "boot", "--name", "w1").code == 0
    proc = _start("vm", "wait", "w1", "--state", "stopped", "--timeout", "60")
    started = time.monotonic()
    code, err = _interrupt(proc, after=1.5)
    assert code == 130 and "Traceback" not in err
    assert time.monotonic() - started < 15  # not the 60 s timeout


def _wait_for_requests(cloud, method: str, path: str, count: int = 1, timeout: float = 60) -> None:
    """Until the server has answered ``count`` matching requests (the process got that far)."""
    deadline = time.monotonic() + timeout
    while cloud.request_count(method, path) < count:
        assert time.monotonic() < deadline, f"no {method} {path} within {timeout} s"
        time.sleep(0.05)


def _mirror_vms(cm) -> dict[str, dict]:
    return {v["name"]: v for v in json.loads(cm("vm", "list", "-f", "json").out)}


def _group(cm, name: str = "default") -> list[str]:
    shown = json.loads(cm("group", "list", name, "-f", "json").out)
    return shown[0]["members"] if shown else []


def test_a_second_ctrl_c_returns_at_once_and_every_vm_the_cloud_made_is_in_the_mirror_and_group(cm, cloud):
    cloud.set_create_delay(4.0)
    proc = _start("vm", "boot", "--n", "4", "-f", "json")
    _wait_for_requests(cloud, "GET", r"/servers$")  # the name check comes right before the creates
    time.sleep(0.7)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    abandoned = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - abandoned < 2.5, err  # not the 4 s the creates in flight take
    assert proc.returncode == 130 and "Traceback" not in err
    assert "interrupted: booted 0 of 4" in err and "4 unknown" in err
    table = {r["name"]: r for r in json.loads(out)}  # the table of what did and did not happen
    assert set(table) == {"tester-001", "tester-002", "tester-003", "tester-004"}
    assert all(r["result"].startswith("unknown: interrupted") for r in table.values())
    time.sleep(4.5)  # the creates land after cm returned
    made = {s["name"] for s in cloud.servers()}
    assert made == set(table)
    assert made <= set(_mirror_vms(cm)) and {f"fake:{n}" for n in made} <= set(_group(cm))
    assert cm("vm", "status", "tester-001", "-f", "json").code == 0  # and a look makes each real
    shown = json.loads(cm("vm", "show", "tester-001", "-f", "json").out)
    assert shown["id"] and shown["state"] in ("pending", "running")


def test_ctrl_c_during_a_boot_prints_the_table_and_a_summary_of_what_did_and_did_not_happen(cm, cloud):
    cloud.set_create_delay(1.0)
    cloud.set_build_delay(30)
    proc = _start("vm", "boot", "--n", "3", "-f", "json")
    _wait_for_requests(cloud, "POST", r"/servers$", count=3)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    rows = json.loads(out)
    assert [r["result"] for r in rows] == ["created; interrupted before it was running"] * 3
    assert "interrupted: booted 0 of 3, 3 created, not yet running" in err


def test_ctrl_c_in_a_bulk_verb_reports_each_vm_and_what_was_not_started(cm, cloud):
    assert cm("vm", "boot", "--n", "2").code == 0
    cloud.set_action_delay(30)
    proc = _start("vm", "stop", "tester-00[1-2]", "-f", "json")
    _wait_for_requests(cloud, "POST", r"/action$", count=2)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    assert {r["result"] for r in json.loads(out)} == {"failed: stopped waiting: interrupted"}
    assert "interrupted: stopped 0 of 2, 2 failed" in err


def _pty_shell():
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "cm.main"], stdin=slave, stdout=slave, stderr=slave,
                            env=os.environ.copy(), start_new_session=True)
    os.close(slave)
    return proc, master


def _read_until(master: int, text: bytes, timeout: float = 60) -> bytes:
    import select

    seen, deadline = b"", time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline, f"no {text!r} in {seen[-800:]!r}"
        if select.select([master], [], [], 0.1)[0]:
            seen += os.read(master, 65536)
    return seen


def test_in_the_interactive_shell_no_thread_acts_after_an_interrupted_boot_returned(cm, cloud):
    cloud.set_create_delay(3.0)
    proc, master = _pty_shell()
    try:
        _read_until(master, b"cm (fake)>")
        os.write(master, b"vm boot --n 3\r")
        _wait_for_requests(cloud, "GET", r"/servers$")
        time.sleep(0.7)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.4)
        proc.send_signal(signal.SIGINT)
        _read_until(master, b"interrupted: booted 0 of 3")
        _read_until(master, b"cm (fake)>")
        cloud.set_create_delay(0)
        os.write(master, b"vm boot --name later\r")  # a new command must not wake the old threads
        _read_until(master, b"booted 1 of 1")
        time.sleep(4)
        made = {s["name"] for s in cloud.servers()}
        assert made == {"tester-001", "tester-002", "tester-003", "later"}
        assert cloud.request_count("POST", r"/servers$") == 4
        assert made <= set(_mirror_vms(cm))
        assert {f"fake:{n}" for n in made} <= set(_group(cm))
        os.write(master, b"quit\r")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
