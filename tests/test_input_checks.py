"""Bad numbers, bad files and odd streams: one clear line and an exit code, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml


def _one_line(result) -> str:
    lines = [line for line in result.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    return lines[0]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "NaN"])
def test_timeouts_that_would_wait_forever_or_never_are_refused_where_they_enter(cm, value):
    for words in (["vm", "wait", "x", f"--timeout={value}"], ["vm", "boot", f"--timeout={value}"],
                  ["vm", "stop", "x", f"--timeout={value}"], ["vm", "delete", "x", f"--timeout={value}"]):
        result = cm(*words)
        assert result.code == 2 and "--timeout" in _one_line(result) and value in result.err, words
    refused = cm("default", f"timeout={value}")
    assert refused.code == 2 and "timeout must be a number of seconds" in _one_line(refused)
    assert cm("default", f"timeout={value}", "--cloud", "local").code == 2
    assert cm("default", "timeout", "-f", "value", "-c", "value").out.strip() == "600"


def test_a_timeout_of_nan_in_cm_yaml_is_refused_when_used_and_json_output_stays_valid(cm, cm_home):
    config = yaml.safe_load((cm_home / "cm.yaml").read_text())
    config["defaults"]["timeout"] = float("nan")
    (cm_home / "cm.yaml").write_text(yaml.safe_dump(config))
    shown = cm("default", "-f", "json")
    assert shown.code == 0
    assert "NaN" not in shown.out
    rows = json.loads(shown.out)  # strict JSON: Python's parser would accept NaN, so check the text too
    assert {"key": "timeout", "value": "nan", "cloud": "", "source": "cm.yaml defaults"} in rows
    one = cm("default", "timeout", "-f", "json")
    json.loads(one.out)
    assert "NaN" not in one.out
    waited = cm("vm", "wait", "--group", "default")
    assert waited.code == 2


@pytest.mark.parametrize("count", ["1_000", "1e3", "+5", "٣", " 3"])
def test_a_vm_count_is_plain_digits(cm, count):
    result = cm("vm", "boot", "--n", count, "--dryrun")
    assert result.code == 2 and "invalid int value" in _one_line(result)


def test_a_closed_stdout_is_one_line_not_a_traceback(cm_home):
    proc = subprocess.run(f"{sys.executable} -m cm.main vm list >&-", shell=True, capture_output=True, text=True,
                          env=os.environ.copy())
    assert proc.returncode == 2
    assert proc.stderr.strip() == "cm: standard output is closed; nothing was done (redirect it instead, e.g. >/dev/null)"


def test_files_that_are_not_utf8_are_refused_in_one_line(cm, tmp_path):
    binary = tmp_path / "blob.pub"
    binary.write_bytes(b"ssh-ed25519 \xff\xfe\x00garbage\n")
    added = cm("key", "add", "mine", str(binary))
    assert added.code == 2 and "is not UTF-8 text" in _one_line(added)
    listed = cm("key", "list")  # such a file in ~/.ssh is skipped, not a crash
    (tmp_path / "home" / ".ssh" / "broken.pub").write_bytes(b"\xff\xfe")
    assert listed.code == 0 and cm("key", "list").code == 0
    data = tmp_path / "init.gz"
    data.write_bytes(b"\x1f\x8b\x08\x00binary")
    booted = cm("vm", "boot", "--user-data", str(data), "--dryrun")
    assert booted.code == 2 and "user-data" in _one_line(booted) and "not UTF-8 text" in booted.err


def test_a_key_name_too_long_for_any_cloud_is_refused_in_one_line(cm):
    name = "k" * 5000
    for words in (["key", "upload", name], ["key", "add", name], ["vm", "boot", "--key", name, "--dryrun"]):
        result = cm(*words)
        line = _one_line(result)
        assert result.code == 2 and "5000 characters, at most 255" in line and len(line) < 200, words
