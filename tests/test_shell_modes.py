"""The three ways in (one-shot, script, interactive) run the same commands."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from cm.context import Context


def test_one_shot_success_prints_to_stdout_and_exits_zero(cm):
    result = cm("cloud", "list", "-f", "json")
    assert result.code == 0
    clouds = json.loads(result.out)
    assert {"name": "local", "kind": "kvm", "active": "*", "source": "cm.yaml", "where": "test:///default"} in clouds
    assert result.err == ""


@pytest.mark.parametrize("words, message", [
    (["bogus"], "unknown command 'bogus'"),
    (["vm", "lst"], "invalid choice: 'lst'"),
    (["vm", "lsit"], "did you mean 'list'?"),
    (["vmm", "list"], "unknown command 'vmm'; did you mean 'vm'?"),
    (["--bogus"], "unknown option '--bogus'"),
    (["vm", "list", "--bogus"], "unrecognized arguments: --bogus"),
    (["vm", "list", "--cloud", "nowhere"], "unknown cloud 'nowhere'"),
    (["vm", "list", "vm[1-"], "malformed hostlist 'vm[1-'"),
    (["vm", "show", "ghost"], "unknown VM 'ghost'"),
    (["default", "format=html"], "format must be one of"),
    (["vm", "boot", "--n", "zero"], "invalid int value: 'zero'"),
    (["vm", "list", "-c", "nosuch"], "unknown column 'nosuch'"),
])
def test_bad_input_is_one_line_on_stderr_with_exit_2(cm, words, message):
    result = cm(*words)
    assert result.code == 2
    assert result.out == ""
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert "Traceback" not in result.err


def test_bad_input_in_a_real_process_has_no_traceback(cm_process):
    result = cm_process("vm", "reboot", "node[01-")
    assert result.code == 2
    assert result.err.strip().startswith("cm: malformed hostlist")
    assert "Traceback" not in result.err


def test_help_lists_commands_and_shows_usage_with_an_example(cm):
    listing = cm("help")
    assert listing.code == 0 and "vm " in listing.out and "default" in listing.out
    boot = cm("help", "vm", "boot")
    assert boot.code == 0
    assert "--n COUNT" in boot.out and "--image" in boot.out
    assert "example:" in cm("help", "vm").out


def test_script_file_runs_lines_with_comments_blank_lines_variables_and_shell(cm, tmp_path):
    marker = tmp_path / "marker"
    script = tmp_path / "batch.cm"
    script.write_text(f"""# set up
var fmt=json

default format=$fmt
!touch {marker}
var list -f $fmt
""")
    result = cm(str(script))
    assert result.code == 0, result.err
    assert marker.exists()
    assert {"name": "fmt", "value": "json"} in json.loads(result.out.split("format=json\n", 1)[1].split("fmt=json")[-1])
    assert cm("default", "format", "-f", "value", "-c", "value").out.strip() == "json"


def test_script_stops_at_first_failing_line_and_names_it(cm, tmp_path):
    script = tmp_path / "batch.cm"
    script.write_text("var a=1\nvm show ghost\nvar b=2\n")
    result = cm("--file", str(script))
    assert result.code == 2
    assert f"{script}:2: stopped at `vm show ghost`" in result.err
    assert "b" not in json.loads(cm("var", "list", "-f", "json").out)[-1]["name"]


def test_script_keeps_going_when_told(cm, tmp_path):
    script = tmp_path / "batch.cm"
    script.write_text("var a=1\nvm show ghost\nvar b=2\n")
    result = cm("--keep-going", str(script))
    assert result.code == 2
    assert "1 line(s) failed" in result.err
    names = [v["name"] for v in json.loads(cm("var", "list", "-f", "json").out)]
    assert names == ["a", "b"]


def test_commands_piped_on_stdin_run_as_a_script(cm_process):
    result = cm_process(input="var greeting=hello\nvar list -f value\n")
    assert result.code == 0, result.err
    assert "greeting hello" in result.out


def test_missing_script_is_a_usage_error(cm):
    result = cm("nothere.cm")
    assert result.code == 2 and "cannot read script nothere.cm" in result.err


def test_unknown_variable_is_an_error(cm):
    result = cm("vm", "list", "$nothing")
    assert result.code == 2 and "unknown variable '$nothing'" in result.err


def _shell(out: io.StringIO):
    from cm.shell import Shell

    app = Shell(Context())
    app.stdout = out
    return app


def test_interactive_shell_runs_the_same_commands(capsys):
    out = io.StringIO()
    app = _shell(out)
    assert app.prompt == "cm (local)> "
    app.onecmd_plus_hooks("var n=3")
    app.onecmd_plus_hooks("var list -f json")
    assert {"name": "n", "value": "3"} in json.loads(out.getvalue().split("n=3\n", 1)[1])
    app.onecmd_plus_hooks("vm frobnicate")
    assert app.last_result == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_interactive_shell_keeps_running_after_errors_and_expands_variables(capsys):
    out = io.StringIO()
    app = _shell(out)
    app.onecmd_plus_hooks("default cloud=nowhere")
    assert "unknown cloud 'nowhere'" in capsys.readouterr().err
    app.onecmd_plus_hooks("var fmt=csv")
    app.onecmd_plus_hooks("cloud list -f $fmt")
    assert "name,kind,active,source,where" in out.getvalue()


def test_interactive_prompt_follows_the_active_cloud(cm, tmp_path):
    assert cm("cloud", "add", "lab", "--kind", "kvm", "uri=test:///default").code == 0
    out = io.StringIO()
    app = _shell(out)
    app.onecmd_plus_hooks("default cloud=lab")
    assert app.prompt == "cm (lab)> "


def _completions(app, line: str) -> list[str]:
    word = line.split(" ")[-1]
    return [item.text for item in app.complete(word, line, len(line) - len(word), len(line)).items]


def test_interactive_tab_completion_through_cmd2(cm):
    cm("cloud", "add", "lab", "--kind", "kvm", "uri=test:///default")
    from cm.shell import Shell

    app = Shell(Context())
    app.ctx.mirror.put("vm", "local", {"name": "tester-001", "id": "1", "state": "running"})
    app.ctx.mirror.put("image", "local", {"name": "ubuntu-22.04", "id": "u"})
    assert _completions(app, "vm st") == ["start", "status", "stop"]
    assert _completions(app, "vm stop tes") == ["tester-001"]
    assert _completions(app, "vm boot --image ub") == ["ubuntu-22.04"]
    assert _completions(app, "vm list --cloud l") == ["lab", "local"]
    assert _completions(app, "default cloud=la") == ["cloud=lab"]
    assert "--refresh" in _completions(app, "vm list --re")


def test_interactive_help_describes_cm_commands_only(capsys):
    out = io.StringIO()
    app = _shell(out)
    app.onecmd_plus_hooks("help")
    text = out.getvalue()
    assert "Boot, list, show, start, stop" in text
    assert "run_pyscript" not in text and "macro" not in text


def test_a_typed_password_stays_out_of_the_history(cm_home):
    out = io.StringIO()
    app = _shell(out)
    app.onecmd_plus_hooks("cloud add far --kind kvm uri=test:///default password=hunter2")
    app.onecmd_plus_hooks("var list")
    assert [h.statement.raw for h in app.history] == ["var list"]
    app._persist_history()
    assert (cm_home / "history").stat().st_mode & 0o777 == 0o600


def test_history_file_lives_in_the_user_directory(cm_home):
    from cm.shell import Shell

    app = Shell(Context())
    assert Path(app.persistent_history_file) == cm_home / "history"


def test_script_variables_expand_once_shell_lines_keep_their_own_and_dollars_can_be_written(cm, tmp_path):
    out = tmp_path / "out.txt"
    script = tmp_path / "vars.cm"
    script.write_text(f"""var x=1
var y=$$x
var list -f csv   # costs $5, and a $comment is no variable
!echo "$HOME $x" > {out}
""")
    result = cm(str(script))
    assert result.code == 0, result.err
    assert "y,$x" in result.out  # $$ is a literal dollar, expanded exactly once
    assert out.read_text().strip() == f"{tmp_path / 'home'} 1"


def test_file_option_without_a_path_is_a_usage_error(cm):
    result = cm("--file")
    assert result.code == 2 and result.err.strip() == "cm: --file needs the path of a script"


def test_an_unusable_cm_home_is_one_line(cm, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("CM_HOME", str(blocker / "sub"))
    result = cm("vm", "list")
    assert result.code == 2 and "cannot create the cm directory" in result.err
    assert "Traceback" not in result.err


def test_scripts_stop_at_quit_refuse_redirection_and_bad_encodings(cm, tmp_path):
    script = tmp_path / "q.cm"
    script.write_text("var a=1\nquit\nvar b=2\n")
    assert cm(str(script)).code == 0
    assert [v["name"] for v in json.loads(cm("var", "list", "-f", "json").out)] == ["a"]
    script.write_text("var list > out.txt\n")
    result = cm(str(script))
    assert result.code == 2 and "works in the interactive shell only" in result.err
    script.write_bytes(b"\xff\xfe bad\n")
    result = cm(str(script))
    assert result.code == 2 and result.err.strip() == f"cm: cannot read script {script}: line 1 is not UTF-8 text"
    script.write_bytes("\ufeffvar c=3\n".encode())
    assert cm(str(script)).code == 0  # a byte-order mark is not part of the first command
