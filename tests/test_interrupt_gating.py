"""After a Ctrl-C, no bulk call sends anything new to the cloud: kvm VM verbs and the other OpenStack bulk verbs.

Each test holds the calls back before they reach their change (kvm: the test
hypervisor's lock; OpenStack: a slow lookup), presses Ctrl-C while they wait,
then lets them go: none may change the cloud, and the result says so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.openstack_fixtures import *  # noqa: F403 - the local OpenStack API server and a cloud on it
from tests.test_interrupt import _start

libvirt = pytest.importorskip("libvirt")

from cm_plugins.kvm.testnode import locked, node_path  # noqa: E402
from tests.test_kvm import image  # noqa: E402,F401 - the fixture: the local cloud with its default image


def _waiting_for_lock(pid: int, timeout: float = 60) -> None:
    """Until process ``pid`` is blocked on a file lock (/proc/locks marks a waiter with '->')."""
    deadline = time.monotonic() + timeout
    while not any("->" in line and f" {pid} " in line for line in Path("/proc/locks").read_text().splitlines()):
        assert time.monotonic() < deadline, f"process {pid} never waited for the hypervisor's lock"
        assert os.waitpid(pid, os.WNOHANG) == (0, 0), "the process ended before its calls started"
        time.sleep(0.05)


def _interrupt_while_the_hypervisor_is_held(cm_home: Path, *words: str) -> tuple[subprocess.Popen[str], str, str]:
    with locked(node_path(cm_home, "local")):
        proc = _start(*words, "-f", "json")
        _waiting_for_lock(proc.pid)
        time.sleep(0.5)  # the other calls queue behind the first
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
    out, err = proc.communicate(timeout=120)
    return proc, out, err


def _cloud_vms(cm) -> dict[str, str]:
    listed = cm("vm", "list", "--refresh", "-f", "json")
    assert listed.code == 0, listed.err
    return {v["name"]: v["state"] for v in json.loads(listed.out)}


def test_ctrl_c_during_a_kvm_boot_creates_no_vm_after_it(cm, cm_home, image):
    assert cm("vm", "boot", "--name", "first").code == 0
    proc, out, err = _interrupt_while_the_hypervisor_is_held(cm_home, "vm", "boot", "--n", "4")
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "interrupted: booted 0 of 4, 4 not started" in err
    assert {r["result"] for r in json.loads(out)} == {"not started: interrupted"}
    assert _cloud_vms(cm) == {"first": "running"}


def test_ctrl_c_during_a_kvm_delete_deletes_nothing_after_it(cm, cm_home, image):
    assert cm("vm", "boot", "--name", "k[1-3]").code == 0
    proc, out, err = _interrupt_while_the_hypervisor_is_held(cm_home, "vm", "delete", "k[1-3]")
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert _cloud_vms(cm) == {"k1": "running", "k2": "running", "k3": "running"}
    assert {r["name"] for r in json.loads(cm("vm", "list", "-f", "json").out)} == {"k1", "k2", "k3"}


def test_ctrl_c_during_a_kvm_stop_stops_nothing_after_it(cm, cm_home, image):
    assert cm("vm", "boot", "--name", "s[1-2]").code == 0
    proc, _, err = _interrupt_while_the_hypervisor_is_held(cm_home, "vm", "stop", "s[1-2]")
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert _cloud_vms(cm) == {"s1": "running", "s2": "running"}


def _interrupt_during_slow_lookups(cloud, path: str, *words: str) -> tuple[subprocess.Popen[str], str, str]:
    """Run cm ``words`` with every GET of ``path`` slow, and press Ctrl-C while those lookups are under way."""
    cloud.clear_request_log()
    cloud.inject_latency(6.0, "GET", path)
    proc = _start(*words, "-f", "json")
    deadline = time.monotonic() + 60
    while cloud.request_count() == 0:  # cm has signed in; its lookups come next
        assert time.monotonic() < deadline and proc.poll() is None, "cm sent no request"
        time.sleep(0.05)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    cloud.inject_latency(0)
    return proc, out, err


def test_ctrl_c_during_secgroup_delete_sends_no_delete(cm, cloud):
    for name in ("g1", "g2"):
        assert cm("secgroup", "add", name).code == 0
    proc, out, err = _interrupt_during_slow_lookups(cloud, r"/security-groups$", "secgroup", "delete", "g1", "g2")
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "interrupted: deleted 0 of 2" in err
    assert cloud.request_count("DELETE", r"/security-groups/") == 0
    listed = cm("secgroup", "list", "--refresh", "-f", "json")
    assert {"g1", "g2"} <= {g["name"] for g in json.loads(listed.out)}


def test_ctrl_c_during_ip_delete_sends_no_delete(cm, cloud):
    addresses = [rows(cm("ip", "create", "-f", "json"))[0]["address"] for _ in range(2)]  # noqa: F405
    proc, _, err = _interrupt_during_slow_lookups(cloud, r"/floatingips$", "ip", "delete", *addresses)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert cloud.request_count("DELETE", r"/floatingips/") == 0
    listed = json.loads(cm("ip", "list", "--refresh", "-f", "json").out)
    assert set(addresses) <= {i["address"] for i in listed}


def test_ctrl_c_during_vm_ip_assign_and_release_changes_no_address(cm, cloud):
    assert cm("vm", "boot", "--name", "w[1-2]").code == 0
    proc, _, err = _interrupt_during_slow_lookups(cloud, r"/ports$", "vm", "ip", "assign", "w[1-2]")
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert cloud.request_count("POST", r"/floatingips$") == 0
    assert cm("vm", "ip", "assign", "w[1-2]").code == 0
    proc, _, err = _interrupt_during_slow_lookups(cloud, r"/servers", "vm", "ip", "release", "w[1-2]")
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert cloud.request_count("DELETE", r"/floatingips/") == 0 and cloud.request_count("PUT", r"/floatingips/") == 0
    shown = {v["name"]: v for v in json.loads(cm("vm", "list", "--refresh", "-f", "json").out)}
    assert all(shown[n]["public_ips"] for n in ("w1", "w2"))
