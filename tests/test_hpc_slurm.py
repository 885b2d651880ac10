"""`cm hpc` and `cm singularity run` against a real Slurm: slurmctld, two slurmd (each in its own network
namespace with its own hostname), munge, slurmdbd + MariaDB, and a real sshd login host reached over ssh
with a key the test made (tests/infra).  Images run under a real Apptainer built from its Go module."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.infra import apptainer as apptainer_build
from tests.infra.slurm import SlurmCluster
from tests.infra.sshd import LoginHost
from tests.test_singularity import HELLO, busybox_root

pytestmark = pytest.mark.e2e

# The first build of Apptainer takes minutes: start it at collection, the fixture waits for it.
apptainer_build.build_in_background()

PARTITIONS = ["PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
              "PartitionName=short Nodes=ALL MaxTime=00:10:00 State=UP"]


@pytest.fixture(scope="module")
def apptainer() -> Path:
    """The cached Apptainer build (built now, once, if the cache is empty)."""
    try:
        return apptainer_build.build()
    except Exception as exc:
        pytest.fail(f"Apptainer could not be built from its Go module: {exc}")


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """A networked Slurm cluster with accounting, and its login host; shared dirs for jobs and images."""
    shared = tmp_path_factory.mktemp("hpc-shared")
    with SlurmCluster("hpc-a", 23100, nodes=2, networked=True, partitions=PARTITIONS, accounting=True,
                      accounts={"phys": ["root"]}) as slurm:
        with LoginHost("hpc-l", 23110, env=slurm.client_env, host=slurm.head) as login:
            yield slurm, login, shared


@pytest.fixture
def hpc(cm, system, apptainer):
    """cm with the system registered as the active cloud 'hpc' (ssh through the login host's config)."""
    slurm, login, shared = system
    assert cm("cloud", "add", "hpc", "--kind", "slurm", f"host={login.alias}", f"ssh_config={login.ssh_config}",
              f"jobs_dir={shared / 'jobs'}", f"image_dir={shared / 'images'}",
              f"setup=export PATH={apptainer.parent}:$$PATH").code == 0  # $$: a literal $ for cm
    assert cm("default", "cloud=hpc").code == 0
    return cm


def squeue(slurm) -> dict[str, str]:
    out = slurm.run(["squeue", "-h", "-o", "%i %T"]).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def wait_state(cm, job: str, state: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        [row] = json.loads(cm("hpc", "status", job, "-f", "json").out)
        if row["state"] == state or time.monotonic() > deadline:
            return row
        time.sleep(0.5)


def test_a_two_node_job_completes_and_get_brings_its_output_back(hpc, system, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.txt").write_text("alpha=1\n")
    (tmp_path / "job.sh").write_text("#!/bin/sh\n#CM input params.txt\nsrun hostname | sort\ncat params.txt\n"
                                     "echo result > result.dat\n")
    result = hpc("hpc", "run", "job.sh", "--nodes", "2", "--time", "5m", "--wait", "--output", "out", "-f", "json")
    assert result.code == 0, result.err
    done = json.loads(result.out)
    assert done["state"] == "COMPLETED" and done["nodes"] == "n[1-2]"
    log = (tmp_path / "out" / f"slurm-{done['id']}.out").read_text()
    assert log.splitlines() == ["n1", "n2", "alpha=1"]
    assert (tmp_path / "out" / "result.dat").read_text() == "result\n"
    got = hpc("hpc", "get", str(done["id"]), "again", "-f", "json")
    assert got.code == 0, got.err
    assert {r["file"] for r in json.loads(got.out)} >= {f"slurm-{done['id']}.out", "result.dat", "job.sh",
                                                        "params.txt"}
    assert (tmp_path / "again" / f"slurm-{done['id']}.out").read_text() == log


def test_cancel_of_a_running_job_leaves_it_cancelled(hpc, system):
    result = hpc("hpc", "run", "--command", "sleep 300", "--name", "sleeper", "-f", "json")
    assert result.code == 0, result.err
    job = str(json.loads(result.out)["id"])
    assert wait_state(hpc, job, "RUNNING")["state"] == "RUNNING"
    cancelled = hpc("hpc", "cancel", job, "-f", "json")
    assert cancelled.code == 0 and json.loads(cancelled.out)[0]["result"] == "cancelled"
    row = wait_state(hpc, job, "CANCELLED")
    assert row["state"] == "CANCELLED" and row["job_name"] == "sleeper"
    assert json.loads(hpc("hpc", "queue", "-f", "json", "-c", "id", "-c", "state").out) and \
        {"id": int(job), "state": "CANCELLED"} in json.loads(hpc("hpc", "queue", "-f", "json", "-c", "id", "-c",
                                                                 "state").out)


def test_queue_agrees_with_squeue_and_answers_offline(hpc, system):
    slurm, _, _ = system
    ids = [json.loads(hpc("hpc", "run", "--command", "sleep 120", "--nodes", "2", "-f", "json").out)["id"]
           for _ in range(3)]
    try:
        rows = json.loads(hpc("hpc", "queue", "--refresh", "-f", "json").out)
        live = squeue(slurm)
        mine = {str(r["id"]): r["state"] for r in rows if str(r["id"]) in live}
        assert mine == live
        assert {str(i) for i in ids} <= set(live)
        assert sorted(live.values()).count("PENDING") >= 2  # two nodes, three two-node jobs
        offline = json.loads(hpc("hpc", "queue", "-f", "json").out)
        assert {str(r["id"]): r["state"] for r in offline if str(r["id"]) in live} == live
    finally:
        hpc("hpc", "cancel", f"[{min(ids)}-{max(ids)}]")


def test_info_shows_partitions_and_node_states(hpc):
    rows = json.loads(hpc("hpc", "info", "-f", "json").out)
    assert {(r["partition"], r["max_time"], r["nodelist"]) for r in rows} >= {("debug*", "UNLIMITED", "n[1-2]"),
                                                                              ("short", "00:10:00", "n[1-2]")}
    nodes = json.loads(hpc("hpc", "info", "--nodes", "-f", "json", "-c", "name", "-c", "partitions").out)
    assert nodes == [{"name": "n1", "partitions": ["debug", "short"]}, {"name": "n2", "partitions": ["debug", "short"]}]


def test_bad_jobs_are_refused_in_one_line_and_nothing_is_half_submitted(hpc, system, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # --wait fetches the good job's output here
    slurm, _, shared = system
    before, dirs = squeue(slurm), set(os.listdir(shared / "jobs")) if (shared / "jobs").exists() else set()
    (tmp_path / "job.sh").write_text("#!/bin/sh\n#CM input data.txt\nhostname\n")
    cases = {("--command", "hostname", "--partition", "nope"):
             "unknown partition 'nope' on cloud 'hpc' (partitions: debug, short)",
             ("--command", "hostname", "--account", "nosuch"): "unknown account 'nosuch' on cloud 'hpc'",
             ("--command", "hostname", "--partition", "short", "--time", "2h"):
             "time limit 02:00:00 is over partition 'short''s maximum",
             ("--command", "hostname", "--nodes", "5"): "refuses the job: Requested node configuration is not available",
             # a limit sbatch takes without a word but stores wrapped around (2957761-01:03:00)
             ("--command", "hostname", "--time", "35791394"):
             "bad time limit '35791394': Slurm takes at most 24855-03:13:00 (or UNLIMITED)",
             ("--command", "hostname", "--time", "1:99"): "bad time limit '1:99'",
             ("nope.sh",): "cm: script 'nope.sh' does not exist",
             ("job.sh",): "cm: input 'data.txt' does not exist"}
    for words, message in cases.items():
        result = hpc("hpc", "run", *words)
        assert result.code == 2, (words, result.err)
        [line] = result.err.strip().splitlines()
        assert message in line, line
    assert hpc("hpc", "run", "--command", "hostname", "--account", "phys", "--wait").code == 0
    for words, ids in ((("status", "99999"), "99999"), (("cancel", "99999"), "99999"),
                       (("cancel", "9999[8-9]"), "[99998-99999]")):
        missing = hpc("hpc", *words)
        assert missing.code == 2, words
        assert missing.err.strip() == f"cm: no job {ids} on cloud 'hpc' (Slurm knows no such job)", missing.err
    got = hpc("hpc", "get", "99999")
    assert got.code == 2
    assert got.err.strip() == "cm: job 99999 on cloud 'hpc' was not submitted by cm (see `cm hpc queue`)"
    assert squeue(slurm) == before
    assert len(set(os.listdir(shared / "jobs")) - dirs) == 1  # only the good job's directory


def test_an_unreachable_login_host_fails_fast_in_one_line_and_sends_nothing(hpc, system, tmp_path):
    slurm, login, shared = system
    before = squeue(slurm)
    # the login host's address (inside its namespace), on a port where nothing listens
    assert hpc("cloud", "add", "down", "--kind", "slurm", f"host={login.alias}", f"ssh_config={login.ssh_config}",
               "port=1", f"jobs_dir={shared / 'jobs'}", "connect_timeout=3").code == 0
    for words in (["hpc", "run", "--command", "hostname"], ["hpc", "queue", "--refresh"], ["hpc", "status", "5"],
                  ["hpc", "cancel", "5"], ["hpc", "info"]):
        started = time.monotonic()
        result = hpc(*words, "--cloud", "down")
        assert time.monotonic() - started < 10, words
        assert result.code == 1, (words, result.err)
        [line] = result.err.strip().splitlines()
        assert line.startswith(f"cm: cannot reach cloud 'down' ({login.alias}): "), line
    assert squeue(slurm) == before


def test_an_image_built_from_a_definition_runs_on_two_nodes(hpc, system, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    busybox_root(tmp_path / "base")
    assert hpc("singularity", "build", "base", "--from", str(tmp_path / "base")).code == 0
    (tmp_path / "base.sif").write_bytes((Path(os.environ["CM_HOME"]) / "images" / "base.sif").read_bytes())
    (tmp_path / "data.txt").write_text("input-data\n")
    (tmp_path / "hello.def").write_text(HELLO)
    assert hpc("singularity", "build", "hello", "--def", "hello.def").code == 0
    result = hpc("singularity", "run", "hello", "--nodes", "2", "--", "x", "y")
    assert result.code == 0, result.err
    lines = sorted(result.out.splitlines())
    assert lines == sorted([f"{n}: {text}" for n in ("n1", "n2") for text in
                            ("hello from the image, args: x y", "input-data", "made-by-post")])
    assert "ran hello on 2 node(s) of hpc with apptainer" in result.err
    pushed = json.loads(hpc("singularity", "push", "hello", "-f", "json").out)
    assert pushed["result"] == "identical copy already there, not copied"
    out = hpc("singularity", "exec", "hello", "--nodes", "2", "--", "cat", "/opt/data.txt").out
    assert sorted(out.splitlines()) == ["n1: input-data", "n2: input-data"]


@pytest.fixture(scope="module")
def local_system():
    """A second, loopback Slurm cluster used in local mode (this machine is its login host)."""
    with SlurmCluster("hpc-b", 23130, nodes=1) as slurm:
        yield slurm


def test_local_mode_and_one_queue_over_every_system(hpc, system, local_system, tmp_path):
    assert hpc("cloud", "add", "here", "--kind", "slurm", "host=localhost",
               f"setup=export SLURM_CONF={local_system.conf}", f"jobs_dir={tmp_path / 'jobs'}").code == 0
    here = json.loads(hpc("hpc", "run", "--command", "sleep 60", "--cloud", "here", "-f", "json").out)
    there = json.loads(hpc("hpc", "run", "--command", "sleep 60", "-f", "json").out)
    try:
        assert (tmp_path / "jobs").is_dir()  # local mode: the job directory is on this machine
        rows = json.loads(hpc("hpc", "queue", "--cloud", "all", "--refresh", "-f", "json").out)
        seen = {(r["cloud"], r["id"]) for r in rows}
        assert {("here", here["id"]), ("hpc", there["id"])} <= seen
        assert str(here["id"]) in squeue(local_system) and str(there["id"]) in squeue(system[0])
    finally:
        hpc("hpc", "cancel", str(here["id"]), "--cloud", "here")
        hpc("hpc", "cancel", str(there["id"]))
    # no container runtime on this login host: said in one line, nothing copied
    busybox_root(tmp_path / "root")
    assert hpc("singularity", "build", "tiny", "--from", str(tmp_path / "root")).code == 0
    result = hpc("singularity", "run", "tiny", "--cloud", "here")
    assert result.code == 2
    assert result.err.strip() == ("cm: cloud 'here' has no container runtime on this host: neither apptainer nor "
                                  "singularity is on the PATH (load its module in the cloud's 'setup')")


def test_cm_refresh_brings_the_jobs_of_every_system_into_the_mirror(hpc, system, local_system):
    slurm, _, _ = system
    assert hpc("cloud", "add", "here", "--kind", "slurm", "host=localhost",
               f"setup=export SLURM_CONF={local_system.conf}").code == 0
    # jobs cm did not submit: only a refresh can bring them into the mirror
    there = slurm.run(["sbatch", "--parsable", "--hold", "-J", "outside", "--wrap", "true"]).stdout.strip()
    here = local_system.run(["sbatch", "--parsable", "--hold", "-J", "local", "--wrap", "true"]).stdout.strip()
    try:
        assert there not in hpc("hpc", "queue", "-f", "value", "-c", "id").out.split()
        result = hpc("refresh", "--cloud", "all", "-f", "json")
        assert result.code == 0, result.err
        jobs = {r["cloud"]: r["result"] for r in json.loads(result.out) if r["kind"] == "job"}
        counts = {"hpc": len(squeue(slurm)), "here": len(squeue(local_system))}
        assert jobs == {cloud: f"{n} record{'' if n == 1 else 's'}" for cloud, n in counts.items()}
        offline = json.loads(hpc("hpc", "queue", "--cloud", "all", "-f", "json").out)
        seen = {(r["cloud"], str(r["id"])): (r["job_name"], r["state"], r["reason"]) for r in offline}
        assert seen[("hpc", there)] == ("outside", "PENDING", "JobHeldUser")
        assert seen[("here", here)] == ("local", "PENDING", "JobHeldUser")
        assert {i for c, i in seen if c == "hpc"} == set(squeue(slurm))
        slurm.run(["scancel", there])
        again = hpc("refresh", "job", "-f", "json")  # the active cloud only
        assert again.code == 0 and [r["cloud"] for r in json.loads(again.out)] == ["hpc"]
        rows = json.loads(hpc("hpc", "queue", "-f", "json", "-c", "id", "-c", "state").out)
        # Slurm shows the cancelled job a while, or forgets it at once: the mirror then forgets it too
        assert {"id": int(there), "state": "PENDING"} not in rows
        assert [r for r in rows if r["id"] == int(there)] in ([], [{"id": int(there), "state": "CANCELLED"}])
    finally:
        slurm.run(["scancel", there])
        local_system.run(["scancel", here])


def test_ctrl_c_stops_waiting_but_not_the_job(hpc, system, tmp_path):
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "cm.main", "hpc", "run", "--command", "sleep 120", "--wait"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    first = proc.stderr.readline()
    assert first.startswith("submitted job "), first
    job = first.split()[2]
    assert wait_state(hpc, job, "RUNNING")["state"] == "RUNNING"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert f"cm: stopped waiting for job {job}; it keeps running (`cm hpc status {job}`" in err
    try:
        assert json.loads(hpc("hpc", "status", job, "-f", "json").out)[0]["state"] == "RUNNING"
    finally:
        hpc("hpc", "cancel", job)
