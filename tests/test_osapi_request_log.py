"""The test OpenStack's request log is complete as soon as a client has its answer (tests count on it)."""

from __future__ import annotations

import time

import pytest

from tests.openstack_fixtures import *  # noqa: F403 - the local OpenStack API server and a cloud on it


def test_a_request_is_logged_before_its_answer_arrives(cm, cloud, monkeypatch: pytest.MonkeyPatch):
    log = cloud._log

    def slow_log(req, *args):  # a server thread descheduled at the wrong moment, as under heavy load
        if req.method == "DELETE":
            time.sleep(1.0)
        log(req, *args)

    monkeypatch.setattr(cloud, "_log", slow_log)
    images = {i["name"]: i["id"] for i in rows(cm("image", "list", "--refresh", "-f", "json"))}  # noqa: F405
    cm("image", "delete", "debian-12")  # the cloud refuses (a public image), but the DELETE was sent
    assert cloud.request_count("DELETE", rf"/images/{images['debian-12']}$") == 1
