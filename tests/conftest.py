"""Shared fixtures: every test gets its own CM_HOME and HOME, and drives cm as users do."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SSH_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPq4bJ0fM4+1HVEyG0k8gq3s3Lh0fNhQw2tCkX1J2rRa tester@cm")


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def cm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private user directory and HOME with one ssh key; the local cloud is libvirt's test driver."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519.pub").write_text(SSH_KEY + "\n")
    cm_dir = tmp_path / "cmhome"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CM_HOME", str(cm_dir))
    monkeypatch.setenv("USER", "tester")
    monkeypatch.setenv("LOGNAME", "tester")
    monkeypatch.delenv("OS_CLIENT_CONFIG_FILE", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    cm_dir.mkdir()
    config = yaml.safe_load((ROOT / "defaults" / "cm.yaml").read_text())
    # Pin the local cloud to the in-process test hypervisor so a libvirtd
    # started by the end-to-end tests never changes what these tests see.
    config["clouds"]["local"]["uri"] = "test:///default"
    (cm_dir / "cm.yaml").write_text(yaml.safe_dump(config))
    return cm_dir


@pytest.fixture
def cm(capsys: pytest.CaptureFixture[str]):
    """Run one-shot `cm WORDS...` in this process; returns code, stdout, stderr."""
    from cm.main import run

    def call(*words: str) -> Result:
        capsys.readouterr()
        code = run(list(words))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return call


@pytest.fixture
def cm_process():
    """Run `cm WORDS...` as a separate process, exactly as from bash."""
    def call(*words: str, input: str | None = None, timeout: float = 120) -> Result:
        proc = subprocess.run([sys.executable, "-m", "cm.main", *words], input=input, capture_output=True,
                              text=True, timeout=timeout, env=os.environ.copy())
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return call
