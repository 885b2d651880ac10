"""Tables as a user sees them: exact cells, never wider than the terminal, nothing raw from a cloud."""

from __future__ import annotations

import json
import random
import unicodedata

import pytest
import yaml

from cm.output import render


def _width(line: str) -> int:
    """Terminal columns: wide East Asian characters take two, combining marks none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


def _widest(text: str) -> int:
    return max(_width(line) for line in text.splitlines())


def test_a_wrapped_show_keeps_false_as_false(cm, monkeypatch):
    assert cm("cloud", "add", "lab", "--kind", "kvm", "uri=test:///default", "pool=" + "p" * 60).code == 0
    monkeypatch.setenv("COLUMNS", "40")
    out = cm("cloud", "show", "lab").out
    assert _widest(out) <= 40
    active = [line for line in out.splitlines() if line.startswith("│ active")]
    assert active and "False" in active[0] and "True" not in out


def test_a_row_of_empty_cells_is_still_a_row(monkeypatch):
    monkeypatch.setenv("COLUMNS", "30")
    rows = [{"a": "x" * 40, "b": "1"}, {"a": "", "b": ""}, {"a": "y", "b": "2"}]
    lines = render(["a", "b"], rows, "table").splitlines()
    assert _widest("\n".join(lines)) <= 30
    body = lines[3:-1]
    assert any(set(line.replace("│", "").strip()) == set() for line in body)  # the empty row, drawn
    assert body[-1].split("│")[1].strip() == "y"


@pytest.mark.parametrize("columns", [80, 40, 61, 33, 30, 12])
def test_tables_never_overflow_and_keep_ip_addresses_whole(monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    ips = ["172.24.4.10", "10.0.0.12", "192.168.100.200"]
    rows = [{"name": f"compute{i:02}", "cloud": "chameleon", "state": "running", "image": "debian-12-genericcloud",
             "flavor": "m1.small", "public_ips": [ips[i % 3]], "private_ips": ips[:1 + i % 3],
             "result": "booted"} for i in range(4)]
    out = render(list(rows[0]), rows, "table")
    assert _widest(out) <= columns
    if columns >= 30:  # wide enough for the longest address: it is never cut
        for ip in ips:
            assert ip in out


def test_random_tables_fit_every_width(monkeypatch):
    rng = random.Random(7)
    words = ["a", "running", "10.0.0.1", "x" * 30, "debian-12", "中文字", "e\u0301", "", "ok, fine"]
    for _ in range(200):
        columns = [f"c{i}" + "_x" * rng.randrange(4) for i in range(rng.randrange(1, 9))]
        rows = [{c: " ".join(rng.choice(words) for _ in range(rng.randrange(4))) for c in columns}
                for _ in range(rng.randrange(0, 4))]
        size = rng.randrange(12, 140)
        monkeypatch.setenv("COLUMNS", str(size))
        assert _widest(render(columns, rows, "table")) <= size, (size, columns, rows)


def test_show_gives_the_same_object_in_yaml_and_json(cm):
    as_json = json.loads(cm("cloud", "show", "local", "-f", "json").out)
    as_yaml = yaml.safe_load(cm("cloud", "show", "local", "-f", "yaml").out)
    assert isinstance(as_yaml, dict) and as_yaml == as_json


def test_escape_sequences_in_names_and_values_are_shown_harmless(cm, monkeypatch):
    evil = "\x1b]0;pwned\x07\x1b[2J\u202eevil\rx"
    assert cm("var", f"v={evil}").code == 0
    for fmt in ("table", "value"):
        out = cm("var", "list", "-f", fmt).out
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out and "\r" not in out
        assert "\\x1b]0;pwned\\x07\\x1b[2J\\u202eevil\\x0dx" in out
    monkeypatch.setenv("COLUMNS", "30")
    assert "\x1b" not in cm("var", "list").out
    assert json.loads(cm("var", "list", "-f", "json").out)[0]["value"] == evil  # data formats keep the data


def test_an_error_naming_an_escape_sequence_shows_it_harmless(cm):
    result = cm("vm", "show", "\x1bc\x07ghost")
    assert result.code == 2
    assert "\x1b" not in result.err and "unknown VM '\\x1bc\\x07ghost'" in result.err
