"""A cloud that says "slow down" (HTTP 429) or "over quota" during a burst slows cm down instead of
failing VMs that would have fit; a quota that is really used up still fails the rest, quickly."""

from __future__ import annotations

import pytest

from tests.openstack_fixtures import *  # noqa: F403
from tests.openstack_fixtures import IMAGE, peak_overlap, rows, write_clouds

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning", "ignore::DeprecationWarning")

QUOTA_MESSAGE = "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"


def test_a_cloud_answering_429_gets_tried_again_later_and_every_vm_boots(cm, cloud):
    cloud.set_create_delay(0.3)
    # More refusals than keystoneauth's own three retries per call absorb.
    cloud.inject_fault("POST", r"/servers$", status=429, count=30)
    booted = cm("vm", "boot", "--n", "8", "-f", "json")
    assert booted.code == 0, booted.err
    assert {r["result"] for r in rows(booted)} == {"booted"}
    assert len(cloud.servers()) == 8
    assert cloud.request_count("POST", r"/servers$") == 38


def test_over_quota_answers_during_a_burst_are_tried_again_and_every_vm_that_fits_boots(cm, cloud):
    cloud.set_create_delay(0.3)
    cloud.inject_fault("POST", r"/servers$", status=403, count=4, message=QUOTA_MESSAGE)
    booted = cm("vm", "boot", "--n", "8", "-f", "json")
    assert booted.code == 0, booted.err
    assert {r["result"] for r in rows(booted)} == {"booted"}
    assert len(cloud.servers()) == 8


def test_a_quota_really_used_up_fails_what_does_not_fit_after_one_lone_try(cm, cloud):
    cloud.set_quota(instances=3)
    booted = cm("vm", "boot", "--n", "8", "-f", "json")
    assert booted.code == 1
    results = [r["result"] for r in rows(booted)]
    assert results.count("booted") == 3
    assert all("quota exceeded" in r for r in results if r != "booted")
    assert "5 of 8 failed" in booted.err
    assert cloud.request_count("POST", r"/servers$") <= 8 + 5 + 1


def test_after_429_answers_cm_keeps_fewer_creates_in_flight(cm, cloud, request_times, tmp_path, monkeypatch):
    # A cloud whose clouds.yaml turns keystoneauth's own retries off, so every 429 reaches cm's pacing.
    clouds = write_clouds(cloud, tmp_path / "strict.yaml", strict={"status_code_retries": 0})
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    cloud.inject_latency(0.4, "POST", r"/servers$")
    cloud.inject_fault("POST", r"/servers$", status=429, count=8)
    booted = cm("vm", "boot", "--n", "8", "--cloud", "strict", "--image", IMAGE, "--flavor", "m1.tiny", "-f", "json")
    assert booted.code == 0, booted.err
    assert {r["result"] for r in rows(booted)} == {"booted"}
    creates = sorted((start, end) for method, path, start, end in request_times
                     if method == "POST" and path.endswith("/servers"))
    assert len(creates) == 16
    assert peak_overlap(creates[:8]) == 8  # all at once at first
    assert peak_overlap(creates[8:]) <= 4  # the retries, fewer at a time
