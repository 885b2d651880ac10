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
