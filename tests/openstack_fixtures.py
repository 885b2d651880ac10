"""Fixtures of the OpenStack provider tests: the local OpenStack API server and a clouds.yaml
pointing at it.  The provider is driven only through `cm` commands and the real openstacksdk.

Imported by tests/test_openstack*.py with ``from tests.openstack_fixtures import *``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openstack")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # plain `pytest` does not put the repo root on sys.path
    sys.path.insert(0, str(ROOT))

from tests.osapi import DEFAULT_BOOT_FAULT, start_server

IMAGE = "cirros-0.6.2-x86_64-disk"
BUILD = 0.2  # seconds a server stays in BUILD


def rows(result: Any) -> list[dict[str, Any]]:
    """The records of a `-f json` command's stdout."""
    assert result.out.strip(), f"no output (exit {result.code}): {result.err}"
    data = json.loads(result.out)
    return data if isinstance(data, list) else [data]


def one_line(text: str) -> str:
    """The error a user sees: exactly one line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    return lines[0]


def write_clouds(fake: Any, path: Path, **clouds: dict[str, Any]) -> Path:
    """clouds.yaml with the cloud 'fake' and, by name, variants of it (keys override 'fake''s)."""
    doc = fake.clouds_yaml("fake")
    base = doc["clouds"]["fake"]
    for name, changes in clouds.items():
        entry = json.loads(json.dumps(base))
        for key, value in changes.items():
            if key == "auth":
                entry["auth"].update(value)
            else:
                entry[key] = value
        doc["clouds"][name] = entry
    path.write_text(json.dumps(doc, indent=2))
    return path


@pytest.fixture
def request_times(cloud, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, float, float]]:
    """(method, path, started, ended) of every request the server answers from now on (monotonic clock)."""
    import time

    times: list[tuple[str, str, float, float]] = []
    log = cloud._log

    def timed(req: Any, status: int, started: float) -> None:
        times.append((req.method, req.path, started, time.monotonic()))
        log(req, status, started)

    monkeypatch.setattr(cloud, "_log", timed)
    return times


def peak_overlap(spans: list[tuple[float, float]]) -> int:
    """The most of these (start, end) intervals in progress at one instant."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


@pytest.fixture(scope="module")
def fake():
    """One local OpenStack API server per test module."""
    server = start_server(build_delay=BUILD)
    yield server
    server.stop()


@pytest.fixture
def cloud(fake, cm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh cloud 'fake' from clouds.yaml ($OS_CLIENT_CONFIG_FILE), the active cloud, with defaults set."""
    fake.reset()
    fake.clear_faults()
    fake.set_build_delay(BUILD)
    fake.set_create_delay(0)
    fake.set_action_delay(0)
    for name in list(os.environ):
        if name.startswith("OS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(write_clouds(fake, tmp_path / "clouds.yaml")))
    monkeypatch.chdir(tmp_path)
    for words in (("default", "cloud=fake"), ("default", f"image={IMAGE}", "--cloud", "fake"),
                  ("default", "flavor=m1.tiny", "--cloud", "fake")):
        assert cm(*words).code == 0
    fake.clear_request_log()
    return fake


__all__ = ["BUILD", "DEFAULT_BOOT_FAULT", "IMAGE", "cloud", "fake", "one_line", "peak_overlap", "request_times", "rows",
           "write_clouds"]
