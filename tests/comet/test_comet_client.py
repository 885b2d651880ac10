"""`cm comet` and the generic commands on a comet cloud, against the service on loopback with a real Slurm."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import requests
import yaml

from tests.comet.conftest import squeue
from tests.comet.nucleus import PASSWORDS


def _json(result):
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_clusters_and_nodes_show_and_land_in_the_mirror(cm, comet):
    clusters = _json(cm("comet", "cluster", "-f", "json"))
    assert [c["name"] for c in clusters] == ["vc1"]  # alice cannot see vc2
    assert clusters[0]["computes"] == "vm-vc1-[0-3]" and clusters[0]["nodes"] == 4
    nodes = _json(cm("comet", "cluster", "vc1", "--status", "-f", "json", "--sort", "name"))
    assert [n["name"] for n in nodes] == ["vc1", "vm-vc1-0", "vm-vc1-1", "vm-vc1-2", "vm-vc1-3"]
    vms = _json(cm("vm", "list", "-f", "json"))  # from the mirror, filled by the command above
    assert {v["name"]: v["state"] for v in vms} == {n: "stopped" for n in
                                                  ["vc1", "vm-vc1-0", "vm-vc1-1", "vm-vc1-2", "vm-vc1-3"]}
    assert provider_clusters(cm) == ["vc1"]
    assert cm("refresh", "--cloud", "comet").code == 0  # kinds a comet cloud lacks are skipped
    assert [c["name"] for c in mirrored_clusters()] == ["vc1"]
    listed = _json(cm("cluster", "list", "--cloud", "comet", "-f", "json"))
    assert [(c["name"], c["recipe"], c["state"], c["nodes"], c["login"]) for c in listed] == \
        [("vc1", "(comet)", "frontend stopped, 0 of 4 computes running", "frontend=1, compute=4", "127.0.0.1")]
    long = cm("comet", "ll")
    assert long.code == 0 and "vm-vc1-3" in long.out and "frontend" in long.out


def mirrored_clusters() -> list[dict]:
    """What `cm cluster list` can show offline: the mirror's cloud_cluster records."""
    from cm.context import Context

    return Context().mirror.records("cloud_cluster", "comet")


def provider_clusters(cm) -> list[str]:
    from cm.context import Context

    ctx = Context()
    try:
        return [c["name"] for c in ctx.provider("comet").list_clusters()]
    finally:
        ctx.close()


def test_start_computeset_runs_nodes_then_terminate_ends_the_job(cm, comet, slurm):
    started = _json(cm("comet", "start", "vc1", "--count", "2", "--walltime", "90m", "-f", "json"))[0]
    assert started["state"] == "running" and started["walltime"] == "90m" and started["account"] == "abc101"
    assert squeue(slurm) == {started["job_id"]: "RUNNING"}
    listed = _json(cm("comet", "computeset", "-f", "json"))
    assert [c["id"] for c in listed] == [started["id"]]
    vms = {v["name"]: v for v in _json(cm("vm", "list", "--refresh", "-f", "json"))}
    running = sorted(n for n, v in vms.items() if v["state"] == "running")
    status = {n["name"]: n for n in _json(cm("comet", "cluster", "vc1", "--status", "-f", "json"))}
    assert len(running) == 2 and all(status[n]["computeset"] == started["id"] for n in running)
    # nodes already in an active computeset are refused before any request
    busy = cm("comet", "start", "vc1", running[0], "--walltime", "1h")
    assert busy.code == 2 and "already in active computeset" in busy.err
    assert len(squeue(slurm)) == 1
    ended = cm("comet", "terminate", str(started["id"]), "-f", "json")
    assert ended.code == 0 and _json(ended)[0]["state"] == "ending"
    from tests.comet.nucleus import wait_for

    wait_for("cancelled", lambda: _json(cm("comet", "computeset", str(started["id"]), "-f", "json"))["state"]
               == "cancelled", 60)
    assert started["job_id"] not in squeue(slurm)
    assert _json(cm("comet", "computeset", "--state", "all", "-f", "json"))[0]["state"] == "cancelled"
    vms = _json(cm("vm", "list", "--refresh", "-f", "json"))
    assert all(v["state"] == "stopped" for v in vms)


def test_walltimes_are_parsed_and_checked(cm, comet, slurm):
    for bad in ("0", "2x", "-5m", "5w", "h"):
        result = cm("comet", "start", "vc1", "--count", "1", f"--walltime={bad}")
        assert result.code == 2 and "bad walltime" in result.err and "Traceback" not in result.err
    assert squeue(slurm) == {}
    cs = _json(cm("comet", "start", "vc1", "vm-vc1-[1-2]", "--walltime", "1d12h", "--no-wait", "-f", "json"))[0]
    assert cs["walltime"] == "36h" and cs["nodes"] == "vm-vc1-[1-2]"
    assert "TimeLimit=1-12:00:00" in slurm.run(["scontrol", "-o", "show", "job", cs["job_id"]]).stdout


def test_several_allocations_are_refused_in_scripts_and_chosen_with_the_option(cm, cm_process, comet, slurm):
    assert cm("cloud", "add", "comet-bob", "--kind", "comet", f"base_url={comet.base}", "username=bob",
              f"password={PASSWORDS['bob']}").code == 0
    refused = cm_process("comet", "start", "vc1", "--count", "1", "--cloud", "comet-bob", input="1\n")
    assert refused.code == 2 and "several allocations (abc101, xyz202): give --allocation" in refused.err
    assert squeue(slurm) == {}
    cs = _json(cm("comet", "start", "vc1", "--count", "1", "--allocation", "xyz202", "--cloud", "comet-bob",
                  "--no-wait", "-f", "json"))[0]
    assert cs["account"] == "xyz202"
    wrong = cm("comet", "start", "vc1", "--count", "1", "--allocation", "nope", "--cloud", "comet-bob")
    assert wrong.code == 2 and "not one of cluster vc1's" in wrong.err


def test_several_allocations_are_asked_for_at_a_terminal(cm, comet, slurm):
    assert cm("cloud", "add", "comet-bob", "--kind", "comet", f"base_url={comet.base}", "username=bob",
              f"password={PASSWORDS['bob']}").code == 0
    terminal, typed = os.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "cm.main", "comet", "start", "vc1", "--count", "1", "--cloud",
                                 "comet-bob", "--no-wait", "-f", "json"], stdin=typed, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        os.write(terminal, b"2\n")
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(terminal)
        os.close(typed)
    assert proc.returncode == 0, err
    assert "1) abc101" in err and "2) xyz202" in err and "allocation to charge on vc1 (1-2):" in err
    assert json.loads(out)[0]["account"] == "xyz202"


def test_a_script_of_comet_commands(cm_process, comet, tmp_path):
    script = tmp_path / "session.cm"
    script.write_text("# a comet session\ncomet cluster -f value -c name\n"
                      "comet start vc1 vm-vc1-3 --walltime 15m -f value -c nodes -c state\n"
                      "comet computeset -f value -c nodes\n")
    result = cm_process(str(script))
    assert result.code == 0, result.err
    assert result.out.split() == ["vc1", "vm-vc1-3", "running", "vm-vc1-3"]


def test_generic_vm_commands_power_the_frontend(cm, comet):
    assert cm("vm", "list", "--refresh").code == 0
    started = cm("vm", "start", "vc1", "-f", "json")
    assert started.code == 0 and _json(started)[0]["state"] == "running"
    refused = cm("vm", "start", "vm-vc1-0")
    assert refused.code == 1 and "Compute is not a member of an active computeset" in refused.out
    link = cm("comet", "console", "--link", "vc1")
    assert link.code == 0 and link.out.startswith(f"{comet.base}/console/")
    assert requests.get(link.out.strip(), timeout=30).status_code == 200
    assert cm("comet", "console", "vc1").code == 0  # the test hypervisor's guests print nothing
    stopped = cm("vm", "stop", "vc1", "-f", "json")
    assert stopped.code == 0 and _json(stopped)[0]["state"] == "stopped"
    assert cm("comet", "power", "on", "vc1").code == 0
    off = cm("comet", "power", "off", "vc1")
    assert off.code == 0 and "poweroff: frontend of vc1" in off.out
    assert _json(cm("comet", "node", "info", "vc1", "-f", "json"))["state"] == "shutoff"
    not_running = cm("comet", "console", "vc1")
    assert not_running.code == 1 and not_running.err.strip() == "cm: console of vc1: The VM is not running"


def test_power_on_nodes_is_the_older_spelling_of_start_and_power_off_by_id(cm, comet, slurm):
    cs = _json(cm("comet", "power", "on", "vc1", "vm-vc1-[0-1]", "--walltime", "2h", "-f", "json"))[0]
    assert cs["state"] == "running" and cs["nodes"] == "vm-vc1-[0-1]"
    rebooted = cm("comet", "power", "reboot", "vc1", "vm-vc1-[0-1]")
    assert rebooted.code == 0 and "rebooted 2 of 2" in rebooted.err
    off = _json(cm("comet", "power", "off", "vc1", str(cs["id"]), "-f", "json"))[0]
    assert off["state"] == "ending"


def test_rename_iso_and_reservations(cm, comet, tmp_path, slurm):
    uneven = cm("comet", "node", "rename", "vc1", "vm-vc1-[0-1]", "node[1-3]", "--yes")
    assert uneven.code == 2 and "names 2 nodes but node[1-3] names 3" in uneven.err
    renamed = cm("comet", "node", "rename", "vc1", "vm-vc1-[0-1]", "node[1-2]", "--yes")
    assert renamed.code == 0, renamed.err
    names = {v["name"] for v in _json(cm("vm", "list", "-f", "json"))}
    assert {"node1", "node2"} <= names and "vm-vc1-0" not in names
    asked = cm("comet", "node", "rename", "vc1", "node1", "first")
    assert asked.code == 2 and "--yes" in asked.err
    iso = tmp_path / "tiny.iso"
    iso.write_bytes(b"ISO" * 5000)
    assert cm("comet", "iso", "upload", str(iso)).code == 0
    assert _json(cm("comet", "iso", "list", "-f", "json")) == [{"name": "public/tiny.iso"}]
    assert cm("comet", "iso", "attach", "tiny.iso", "vc1").code == 0
    assert _json(cm("comet", "node", "info", "vc1", "-f", "json"))["iso"] == "public/tiny.iso"
    assert cm("comet", "iso", "detach", "vc1").code == 0
    assert _json(cm("comet", "node", "info", "vc1", "-f", "json"))["iso"] == ""
    slurm.run(["scontrol", "create", "reservation", "ReservationName=comet_res", "StartTime=now", "Duration=60",
               "Users=root", "Nodes=n3"])
    try:
        rows = _json(cm("comet", "reservation", "list", "-f", "json"))
        assert [r["name"] for r in rows] == ["comet_res"] and rows[0]["nodes"] == "n3"
        cs = _json(cm("comet", "start", "vc1", "--count", "1", "--reservation", "comet_res", "-f", "json"))[0]
        assert cs["state"] == "running" and cs["reservation"] == "comet_res" and cs["hosts"] == "n3"
    finally:
        for job in squeue(slurm):
            slurm.run(["scancel", job])
        slurm.run(["scontrol", "delete", "ReservationName=comet_res"])


def test_init_stores_an_api_key_0600_and_requests_are_signed(cm, cm_process, comet, cm_home, monkeypatch):
    refused = cm_process("comet", "init")
    assert refused.code == 2 and "COMET_PASSWORD" in refused.err
    monkeypatch.setenv("COMET_PASSWORD", PASSWORDS["alice"])
    done = cm("comet", "init")
    assert done.code == 0 and "alice@example.org" in done.out and PASSWORDS["alice"] not in done.out
    monkeypatch.delenv("COMET_PASSWORD")
    key_file = cm_home / "comet" / "comet.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    saved = json.loads(key_file.read_text())
    assert saved["api_key"] == "alice@example.org" and len(saved["api_secret"]) == 24
    # a signed-only endpoint: no password anywhere, only the stored key
    assert cm("cloud", "add", "signed", "--kind", "comet", f"base_url={comet.base}", "auth_provider=apikey").code == 0
    (cm_home / "comet" / "signed.json").write_text(key_file.read_text())
    os.chmod(cm_home / "comet" / "signed.json", 0o600)
    assert [c["name"] for c in _json(cm("comet", "cluster", "--cloud", "signed", "-f", "json"))] == ["vc1"]
    shown = cm("cloud", "show", "comet")
    assert PASSWORDS["alice"] not in shown.out
    assert cm("cloud", "add", "nokey", "--kind", "comet", f"base_url={comet.base}", "auth_provider=apikey").code == 0
    nokey = cm("comet", "cluster", "--cloud", "nokey")
    assert nokey.code == 1 and "run `cm comet init --cloud nokey`" in nokey.err


def test_two_endpoints_and_default_cloud_switches(cm, comet):
    assert cm("cloud", "add", "comet-dev", "--kind", "comet", f"base_url={comet.base}", "username=bob",
              f"password={PASSWORDS['bob']}").code == 0
    assert [c["name"] for c in _json(cm("comet", "cluster", "-f", "json"))] == ["vc1"]
    assert cm("default", "cloud=comet-dev").code == 0
    assert [c["name"] for c in _json(cm("comet", "cluster", "-f", "json"))] == ["vc1", "vc2"]


def test_expired_token_is_renewed_once_and_bad_passwords_are_one_line(cm, comet, cm_home):
    assert cm("comet", "cluster").code == 0
    token = json.loads((cm_home / "comet" / "comet.json").read_text())["token"]
    requests.post(f"{comet.base}/rest-auth/logout/", headers={"Authorization": f"Token {token}"}, timeout=30)
    assert cm("comet", "cluster").code == 0
    assert json.loads((cm_home / "comet" / "comet.json").read_text())["token"] != token
    conf = cm_home / "clouds.d" / "comet.yaml"
    data = yaml.safe_load(conf.read_text())
    conf.write_text(yaml.safe_dump({**data, "password": "wrong"}))
    (cm_home / "comet" / "comet.json").unlink()
    result = cm("comet", "cluster")
    assert result.code == 1 and result.err.strip() == "cm: login refused: Invalid username/password."
    from tests.comet.nucleus import free_ports

    dead = free_ports()
    unreachable = cm("cloud", "add", "gone", "--kind", "comet", f"base_url=http://127.0.0.1:{dead}/nucleus",
                     "username=a", "password=b")
    assert unreachable.code == 0
    gone = cm("comet", "cluster", "--cloud", "gone")
    assert gone.code == 1 and gone.err.startswith(f"cm: cannot reach http://127.0.0.1:{dead}/nucleus")
    assert len(gone.err.strip().splitlines()) == 1


def test_the_interactive_shell_runs_comet_commands(cm, comet, capsys):
    import io

    from cm.context import Context
    from cm.shell import Shell

    out = io.StringIO()
    app = Shell(Context(interactive=True))
    app.stdout = out
    assert app.prompt == "cm (comet)> "
    app.onecmd_plus_hooks("comet cluster -f json")
    assert [c["name"] for c in json.loads(out.getvalue())] == ["vc1"]
    app.onecmd_plus_hooks("comet start vc1 --walltime 3x --count 1")
    assert app.last_result == 2 and "bad walltime '3x'" in capsys.readouterr().err
