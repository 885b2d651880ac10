"""One set of rules for the interactive shell, one-shot commands, script files and stdin."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cm.context import Context

TRICKY = {"p": "a|b", "h": "x # y", "two": "a  b"}  # a pipe, a comment and a space inside values
COPIES = ["var c1=$p", "var c2=$h", "var c3=$two", "var c4=${p}-$$p"]
EXPECTED = {"c1": "a|b", "c2": "x # y", "c3": "a  b", "c4": "a|b-$p"}


def _shell(out: io.StringIO | None = None):
    from cm.shell import Shell

    app = Shell(Context())
    app.stdout = out or io.StringIO()
    return app


def _vars(cm) -> dict[str, str]:
    return {v["name"]: v["value"] for v in json.loads(cm("var", "list", "-f", "json").out)}


def _run_stdin(data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "cm.main", *args], input=data, capture_output=True, timeout=120,
                          env=os.environ.copy())


def _set_tricky(cm) -> None:
    for name, value in TRICKY.items():
        assert cm("var", f"{name}={value}").code == 0


def _copies(cm) -> dict[str, str]:
    return {k: v for k, v in _vars(cm).items() if k in EXPECTED}


@pytest.mark.parametrize("mode", ["one-shot", "script", "stdin", "interactive"])
def test_a_variable_expands_once_and_the_same_in_every_mode(cm, tmp_path, mode):
    _set_tricky(cm)
    if mode == "one-shot":
        import shlex

        for line in COPIES:
            assert cm(*shlex.split(line)).code == 0
    elif mode == "script":
        script = tmp_path / "copies.cm"
        script.write_text("\n".join(COPIES) + "\n")
        assert cm(str(script)).code == 0
    elif mode == "stdin":
        result = _run_stdin(("\n".join(COPIES) + "\n").encode())
        assert result.returncode == 0, result.stderr
    else:
        app = _shell()
        for line in COPIES:
            app.onecmd_plus_hooks(line)
            assert app.last_result in (None, 0), line
    assert _copies(cm) == EXPECTED


def test_shell_escapes_run_as_in_scripts_in_the_interactive_shell(cm, tmp_path):
    cm("var", "x=1")
    out = tmp_path / "out"
    app = _shell()
    app.onecmd_plus_hooks(f'!echo "$x $HOME" > {out}')
    assert out.read_text().strip() == f"1 {os.environ['HOME']}"


def test_tab_completion_follows_the_cloud_on_the_line(cm):
    assert cm("cloud", "add", "lab", "--kind", "kvm", "uri=test:///default").code == 0
    app = _shell()
    mirror = app.ctx.mirror
    mirror.put("vm", "local", {"name": "tester-001", "id": "1", "state": "running"})
    mirror.put("vm", "lab", {"name": "labvm-1", "id": "2", "state": "running"})
    mirror.put("image", "local", {"name": "cirros", "id": "c"})
    mirror.put("image", "lab", {"name": "centos-9", "id": "l"})
    mirror.put("flavor", "lab", {"name": "lab.big", "id": "b"})

    def complete(line: str) -> list[str]:
        word = line.split(" ")[-1]
        return [item.text for item in app.complete(word, line, len(line) - len(word), len(line)).items]

    assert complete("vm stop ") == ["tester-001"]
    assert complete("vm stop --cloud lab ") == ["labvm-1"]
    assert complete("vm stop --cloud all ") == ["labvm-1", "tester-001"]
    assert complete("vm boot --cloud lab --image c") == ["centos-9"]
    assert complete("vm boot --image c") == ["cirros"]
    assert complete("vm boot --cloud lab --flavor l") == ["lab.big"]


@pytest.mark.parametrize("via", ["file", "stdin"])
def test_one_reader_for_script_files_and_stdin(cm, tmp_path, via):
    text = "var a=x\u2028y\u0085z\nvm show ghost\n"
    if via == "file":
        script = tmp_path / "s.cm"
        script.write_text(text)
        result = cm("--echo", str(script))
        code, out, err, where = result.code, result.out, result.err, str(script)
    else:
        proc = _run_stdin(text.encode(), "--echo")
        code, out, err, where = proc.returncode, proc.stdout.decode(), proc.stderr.decode(), "<stdin>"
    assert code == 2
    assert f"{where}:2: stopped at `vm show ghost`" in err  # U+2028 and U+0085 did not start new lines
    assert "cm> var a=x\u2028y\u0085z" in out and "cm> vm show ghost" in out  # --echo, both ways
    assert _vars(cm)["a"] == "x\u2028y\u0085z"


@pytest.mark.parametrize("via", ["file", "stdin"])
def test_a_script_that_is_not_utf8_is_refused_the_same_way(cm, tmp_path, via):
    data = b"var a=1\nvar b=\xff\xfe\n"
    if via == "file":
        script = tmp_path / "s.cm"
        script.write_bytes(data)
        result = cm(str(script))
        code, err, where = result.code, result.err, str(script)
    else:
        proc = _run_stdin(data)
        code, err, where = proc.returncode, proc.stderr.decode(), "<stdin>"
    assert code == 2
    assert err.strip().splitlines()[-1] == f"cm: cannot read script {where}: line 2 is not UTF-8 text"
    assert "b" not in _vars(cm)  # nothing stored corrupted


def test_stdin_redirected_from_a_file_is_checked_whole_like_a_script_file(cm, tmp_path):
    script = tmp_path / "s.cm"
    script.write_bytes(b"var a=1\nvar b=\xff\n")
    with script.open("rb") as handle:
        proc = subprocess.run([sys.executable, "-m", "cm.main"], stdin=handle, capture_output=True, timeout=120,
                              env=os.environ.copy())
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == "cm: cannot read script <stdin>: line 2 is not UTF-8 text"
    assert _vars(cm) == {}  # refused before the first line ran


@pytest.mark.parametrize("line", ["edit", "edit notes.txt", "run_pyscript x.py", "shell echo hi", "py", "ipy",
                                  "history", "alias create ls vm list", "macro create m vm list", "run_script x.cm",
                                  "@x.cm", "set debug true", "shortcuts"])
def test_cmd2s_own_commands_are_not_cm_commands(capsys, tmp_path, monkeypatch, line):
    marker = tmp_path / "editor-ran"
    editor = tmp_path / "editor.sh"
    editor.write_text(f"#!/bin/sh\ntouch {marker}\n")
    editor.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(editor))
    monkeypatch.chdir(tmp_path)
    Path("x.cm").write_text("var ran=1\n")
    Path("x.py").write_text(f"open({str(marker)!r}, 'w')\n")
    out = io.StringIO()
    app = _shell(out)
    app.onecmd_plus_hooks(line)
    assert app.last_result == 2
    assert f"cm: unknown command '{line.split()[0]}'" in capsys.readouterr().err
    assert not marker.exists() and "ran" not in app.ctx.mirror.variables()
    app.onecmd_plus_hooks("help")
    listed = {line.split()[0] for line in out.getvalue().splitlines() if line.startswith(" ") and line.strip()}
    assert not listed & {"edit", "shell", "py", "history", "alias", "macro", "set", "run_pyscript"}
    assert {"vm", "var", "help", "quit"} <= listed


def test_a_dry_run_boot_checks_what_the_real_boot_checks(cm, tmp_path):
    from tests.test_kvm import qcow2_file

    assert cm("image", "add", "cirros", str(qcow2_file(tmp_path / "c.qcow2"))).code == 0
    for extra in ([], ["--dryrun"]):  # kvm takes exact image names only, dry run or not
        result = cm("vm", "boot", "--image", "cir", *extra)
        assert result.code == 2 and "unknown image 'cir' on cloud 'local'" in result.err, (extra, result.err)
        result = cm("vm", "boot", "--public", *extra)
        assert result.code == 2 and "cloud 'local' cannot assign public IPs" in result.err, (extra, result.err)
    assert cm("vm", "list", "--refresh", "-f", "json").out.strip() == "[]"
    planned = cm("vm", "boot", "--image", "cirros", "--dryrun", "-f", "json")
    assert planned.code == 0 and json.loads(planned.out)[0]["result"] == "would boot"


def test_a_dry_run_asks_the_cloud_when_the_mirror_has_no_image_list(cm, cm_home):
    result = cm("vm", "boot", "--image", "nosuch", "--dryrun")  # the mirror knows no images of local yet
    assert result.code == 2 and "unknown image 'nosuch' on cloud 'local'" in result.err
