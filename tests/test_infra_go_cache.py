"""Building the tests' Apptainer leaves the machine's Go caches alone (its make runs `go clean -cache`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.infra import apptainer


def test_the_apptainer_build_cleans_only_its_own_go_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = apptainer._go_env()
    go = shutil.which("go", path=env["PATH"])
    if go is None:
        pytest.skip("no Go toolchain here (scripts/install-system-packages.sh installs it)")
    machine = tmp_path / "machine-go-build"
    (machine / "00").mkdir(parents=True)
    (machine / "00" / "kept-a").write_text("a build result of another project\n")
    monkeypatch.setenv("GOCACHE", str(machine))
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "machine-go-mod"))
    monkeypatch.setattr(apptainer, "CACHE", tmp_path / "cm-tests" / "apptainer")
    env = apptainer._go_env()
    apptainer.CACHE.mkdir(parents=True)
    done = subprocess.run([go, "clean", "-cache"], env=env, cwd=apptainer.CACHE, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (machine / "00" / "kept-a").read_text() == "a build result of another project\n"
    assert Path(env["GOCACHE"]).is_relative_to(apptainer.CACHE)
    assert Path(env["GOMODCACHE"]).is_relative_to(apptainer.CACHE)
