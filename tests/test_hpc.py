"""`cm hpc` and the slurm cloud kind without a Slurm cluster: parsing, bad input, the contract, the cluster hook.

The tests against real slurmctld/slurmd/munge and a real sshd login host are in test_hpc_slurm.py.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from cm.jobs import timelimit
from cm_plugins.slurm import parse


@pytest.fixture
def hpc(cm, tmp_path):
    """A slurm cloud whose login host does not answer (a closed loopback port), active."""
    with socket.socket() as probe:  # a port in our range nobody listens on
        port = 23499
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert cm("cloud", "add", "hpc", "--kind", "slurm", "host=127.0.0.1", f"port={port}", "user=nobody",
              "connect_timeout=3").code == 0
    assert cm("default", "cloud=hpc").code == 0
    return cm


@pytest.mark.parametrize("text, minutes", [("2h", 120), ("90m", 90), ("1d12h", 2160), ("30", 30), ("10:00", 10),
                                           ("1:00:00", 60), ("2-12", 3600), ("2-12:30:00", 3630), ("45s", 1),
                                           ("UNLIMITED", None)])
def test_time_limits_in_every_form_users_and_slurm_write(text, minutes):
    assert timelimit.minutes(text) == minutes


@pytest.mark.parametrize("text", ["abc", "0", "1:99", "-1", "2x", "1-25", "99999999h", "24855-03:14:00"])
def test_a_time_limit_slurm_would_not_take_is_refused(text):
    from cm.errors import UsageError

    with pytest.raises(UsageError, match="bad time limit"):
        timelimit.minutes(text)


def test_squeue_json_becomes_job_rows():
    text = json.dumps({"meta": {}, "errors": [], "jobs": [
        {"job_id": 7, "name": "job", "user_name": "root", "job_state": "RUNNING", "partition": "debug",
         "nodes": "n[1-2]", "node_count": 2, "time_limit": 120, "submit_time": int(time.time()) - 5,
         "start_time": int(time.time()), "end_time": int(time.time()) + 7200, "state_reason": "None",
         "exit_code": 0, "account": "", "current_working_directory": "/home/u/cm-jobs/job-1"}]})
    [row] = parse.squeue_jobs(text)
    assert row["name"] == "7" and row["state"] == "RUNNING" and row["nodes"] == "n[1-2]"
    assert row["time_limit"] == "02:00:00" and row["reason"] == "" and row["ended"] == ""
    with pytest.raises(Exception, match="squeue: Invalid job id"):
        parse.squeue_jobs(json.dumps({"errors": [{"error": "Invalid job id"}], "jobs": []}))


def test_squeue_format_rows_keep_any_job_name():
    sep = parse.SEP
    text = sep.join(["8", "ann", "PENDING", "debug", "2", "", "1-00:00:00", "2026-01-01T00:00:00", "N/A", "N/A",
                     "Resources", "(null)", "/w", f"odd{sep}name | x"]) + "\n"
    [row] = parse.squeue_rows(text)
    assert (row["id"], row["job_name"], row["state"], row["reason"]) == (8, f"odd{sep}name | x", "PENDING", "Resources")
    assert (row["time_limit"], row["started"], row["account"], row["node_count"]) == ("1-00:00:00", "", "", 2)


def test_sacct_parsable2_keeps_jobs_not_steps():
    text = ("JobID|JobName|User|State|Partition|NodeList|NNodes|Timelimit|Submit|Start|End|ExitCode|WorkDir|Account\n"
            "12|run|root(0)|CANCELLED by 0|debug|n[1-2]|2|UNLIMITED|2026-01-01T00:00:00|2026-01-01T00:00:01|"
            "2026-01-01T00:00:09|0:15|/w|\n"
            "12.batch|batch||CANCELLED||n1|1||2026-01-01T00:00:00|||0:15||\n")
    [row] = parse.sacct_jobs(text)
    assert (row["id"], row["user"], row["state"], row["exit_code"]) == (12, "root", "CANCELLED", 0)


def test_partitions_and_probe_sections():
    out = ("\n@@partitions\nPartitionName=debug Default=YES MaxTime=UNLIMITED State=UP TotalNodes=2 TotalCPUs=2 "
           "Nodes=n[1-2] AllowAccounts=ALL\n\n@@accounts\nphys\n\n@@test\nsbatch: Job 3 to start\n@@rc 0\n")
    found = parse.sections(out)
    [part] = parse.partitions(found["partitions"])
    assert part["name"] == "debug" and part["default"] and part["max_time"] == "UNLIMITED"
    assert found["accounts"].split() == ["phys"]


def test_the_slurm_kind_is_registered_and_refuses_vm_verbs_in_one_line(hpc):
    shown = json.loads(hpc("cloud", "show", "hpc", "-f", "json").out)
    assert shown["kind"] == "slurm"
    result = hpc("vm", "boot")
    assert result.code == 2
    assert result.err.strip() == ("cm: cloud 'hpc' cannot boot VMs: it is a batch system (Slurm): "
                                  "run work with `cm hpc run`")


def test_an_unreachable_login_host_fails_fast_in_one_line(hpc, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\nhostname\n")
    for words in (["hpc", "run", str(script)], ["hpc", "queue", "--refresh"], ["hpc", "status", "5"],
                  ["hpc", "info"], ["hpc", "cancel", "5"]):
        started = time.monotonic()
        result = hpc(*words)
        assert time.monotonic() - started < 10
        assert result.code == 1, words
        [line] = result.err.strip().splitlines()
        assert line.startswith("cm: cannot reach cloud 'hpc' (nobody@127.0.0.1):"), line
        assert "Connection refused" in line


def test_refresh_of_an_unreachable_system_says_so_in_its_row(hpc):
    started = time.monotonic()
    result = hpc("refresh", "-f", "json")
    assert time.monotonic() - started < 10
    assert result.code == 1
    [row] = json.loads(result.out)
    assert row["kind"] == "job" and row["result"].startswith("failed: cannot reach cloud 'hpc' (nobody@127.0.0.1):")
    every = json.loads(hpc("refresh", "--cloud", "all", "-f", "json").out)
    assert {(r["cloud"], r["kind"]) for r in every} >= {("hpc", "job"), ("local", "vm")}
    assert all(r["kind"] != "job" for r in every if r["cloud"] == "local")  # a kvm cloud has no jobs: left out


def test_bad_job_requests_are_refused_before_anything_is_sent(hpc, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\n#CM input missing.dat\nhostname\n")
    cases = {("hpc", "run", str(tmp_path / "nope.sh")): "script '",
             ("hpc", "run", str(script)): "input 'missing.dat' does not exist",
             ("hpc", "run", "--command", "true", "--time", "soon"): "bad time limit 'soon'",
             ("hpc", "run", "--command", "true", "--nodes", "0"): "--nodes must be at least 1",
             ("hpc", "run"): "give a SCRIPT or --command",
             ("hpc", "run", "--command", "true", "--name", "a b"): "bad job name",
             ("hpc", "status", "abc"): "bad job id 'abc'",
             ("hpc", "get", "77"): "job 77 on cloud 'hpc' was not submitted by cm"}
    for words, message in cases.items():
        result = hpc(*words)
        assert result.code == 2, (words, result.err)
        [line] = result.err.strip().splitlines()
        assert message in line, line


def test_hpc_on_a_cloud_that_is_no_hpc_system_says_so(cm):
    result = cm("hpc", "queue", "--cloud", "local")
    assert result.code == 2
    assert "cloud 'local' is a kvm cloud, not an HPC system" in result.err


def test_queue_answers_offline_from_the_mirror(hpc):
    from cm.context import Context
    from cm.jobs import store

    ctx = Context()
    store.update(ctx, "hpc", [{"name": "41", "id": 41, "job_name": "sim", "user": "ann", "state": "RUNNING",
                               "partition": "debug", "nodes": "n1", "node_count": 1}])
    result = hpc("hpc", "queue", "-f", "json", "-c", "id", "-c", "state", "-c", "job_name")
    assert result.code == 0
    assert json.loads(result.out) == [{"id": 41, "state": "RUNNING", "job_name": "sim"}]


def test_a_ready_slurm_cluster_in_the_mirror_is_a_slurm_cloud(cm):
    from cm.context import Context

    ctx = Context()
    ctx.mirror.put("cluster", "local", {"name": "c1", "recipe": "slurm", "state": "launching", "params": {},
                                        "outputs": {"login": "127.0.0.1"}, "nodes": []})
    assert "c1" not in cm("cloud", "list", "-f", "json").out
    ctx.mirror.put("cluster", "local", {"name": "c1", "recipe": "slurm", "state": "ready",
                                        "params": {"key": "/k/id_ed25519.pub"},
                                        "outputs": {"login": "127.0.0.1", "user": "debian"}, "nodes": []})
    clouds = {c["name"]: c for c in json.loads(cm("cloud", "list", "-f", "json").out)}
    assert clouds["c1"]["kind"] == "slurm" and clouds["c1"]["source"] == "cluster"
    shown = json.loads(cm("cloud", "show", "c1", "-f", "json").out)
    assert (shown["host"], shown["user"], shown["key"]) == ("127.0.0.1", "debian", "/k/id_ed25519")
    assert cm("default", "cloud=c1").code == 0
    assert cm("hpc", "queue").code == 0


def test_the_interactive_shell_has_hpc_and_singularity(hpc, capsys):
    import io

    from cm.context import Context
    from cm.jobs import store
    from cm.shell import Shell

    store.update(Context(), "hpc", [{"name": "9", "id": 9, "job_name": "sim", "user": "ann", "state": "PENDING"}])
    out = io.StringIO()
    app = Shell(Context())
    app.stdout = out
    assert app.prompt == "cm (hpc)> "
    app.onecmd_plus_hooks("hpc queue -f value -c id -c state")
    assert out.getvalue().strip().splitlines()[-1] == "9 PENDING"
    app.onecmd_plus_hooks("singularity list -f json")
    assert app.last_result == 0
    app.onecmd_plus_hooks("hpc run")
    assert app.last_result == 2 and "give a SCRIPT or --command" in capsys.readouterr().err
