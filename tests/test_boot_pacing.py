"""A cloud that says "slow down" (HTTP 429) or "over quota" during a burst slows cm down instead of
failing VMs that would have fit; a quota that is really used up still fails the rest, quickly."""

from __future__ import annotations

import pytest

from tests.openstack_fixtures import *  # noqa: F403
from tests.openstack_fixtures import rows

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
