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
    cases = {("--partition", "nope"): "unknown partition 'nope' on cloud 'hpc' (partitions: debug, short)",
             ("--account", "nosuch"): "unknown account 'nosuch' on cloud 'hpc'",
             ("--partition", "short", "--time", "2h"): "time limit 02:00:00 is over partition 'short''s maximum",
             ("--nodes", "5"): "refuses the job: Requested node configuration is not available"}
    for options, message in cases.items():
        result = hpc("hpc", "run", "--command", "hostname", *options)
        assert result.code == 2, (options, result.err)
        [line] = result.err.strip().splitlines()
        assert message in line, line
    assert hpc("hpc", "run", "--command", "hostname", "--account", "phys", "--wait").code == 0
    missing = hpc("hpc", "status", "99999")
    assert missing.code == 2 and missing.err.strip() == "cm: no job 99999 on cloud 'hpc' (Slurm knows no such job)"
    cancel = hpc("hpc", "cancel", "99999")
    assert cancel.code == 1 and "Invalid job id specified" in cancel.out
    assert squeue(slurm) == before
    assert len(set(os.listdir(shared / "jobs")) - dirs) == 1  # only the good job's directory


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
