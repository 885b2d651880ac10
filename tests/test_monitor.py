"""`cm monitor` plumbing on libvirt's test hypervisor (made-up statistics) and on synthetic samples.

The detection on real guests is in tests/e2e/test_monitor_e2e.py; here: the
detached collector's life (start, status, stop, kill -9), the store (WAL,
retention), show/export, bad input, profiles and bottlenecks on samples whose
truth is known, `tune --apply` through the provider contract, the ssh reader
against a real sshd, and Slurm jobs joined to samples on a real Slurm.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_kvm import qcow2_file

VMS = ["mon1", "mon2", "mon3"]


@pytest.fixture
def vms(cm, tmp_path: Path) -> list[str]:
    assert cm("image", "add", "cirros", str(qcow2_file(tmp_path / "cirros.qcow2"))).code == 0
    result = cm("vm", "boot", "--name", "mon[1-3]")
    assert result.code == 0, result.err
    return VMS


@pytest.fixture
def collector(cm, cm_process, cm_home: Path, vms):
    """A collector started as from bash, sampling every 0.2 s; stopped (by pid) after the test."""
    result = cm_process("monitor", "start", "mon[1-3]", "--interval", "0.2s")
    assert result.code == 0, result.err
    pid = int((cm_home / "monitor" / "collector.pid").read_text())
    yield pid
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def samples(cm_home: Path) -> int:
    db = sqlite3.connect(cm_home / "monitor" / "samples.db")
    try:
        return db.execute("SELECT count(*) FROM sample").fetchone()[0]
    finally:
        db.close()


def wait_for_samples(cm_home: Path, count: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            have = samples(cm_home)
        except sqlite3.OperationalError:
            have = 0
        if have >= count:
            return have
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} samples after {timeout} s")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def one_error_line(result) -> str:
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    return lines[0]


# -- the collector's life -----------------------------------------------------------------------
def test_the_collector_outlives_the_command_and_stops_cleanly(cm, cm_process, cm_home, collector):
    assert alive(collector)  # `cm monitor start` returned; its collector runs on
    wait_for_samples(cm_home, 6)
    status = json.loads(cm("monitor", "status", "-f", "json").out)
    assert status["running"] is True and status["pid"] == collector
    assert status["targets"] == "local: mon1,mon2,mon3" and status["samples"] >= 6
    assert status["sampling"].startswith("local: ") and "balloon statistics every 5 s" in status["sampling"]
    again = cm_process("monitor", "start", "mon1")
    assert again.code == 1 and "already runs" in one_error_line(again)
    stopped = cm_process("monitor", "stop")
    assert stopped.code == 0 and f"collector stopped (pid {collector})" in stopped.out
    assert not alive(collector) and not (cm_home / "monitor" / "collector.pid").exists()
    assert "collector stopped" in (cm_home / "monitor" / "collector.log").read_text()
    assert json.loads(cm("monitor", "status", "-f", "json").out)["running"] is False
    assert "no collector runs" in cm("monitor", "stop").out


def waiting_for_a_lock(pid: int) -> bool:
    """Whether process ``pid`` is blocked on a file lock (a ``->`` line of /proc/locks)."""
    lines = [line.split() for line in Path("/proc/locks").read_text().splitlines()]
    return any(len(f) > 5 and f[1] == "->" and f[5] == str(pid) for f in lines)


def test_a_start_given_up_while_another_starts_leaves_the_others_targets(cm, cm_home, vms):
    """Two `cm monitor start` at once: the one killed while waiting does not leave its targets behind."""
    folder = cm_home / "monitor"
    folder.mkdir(mode=0o700, exist_ok=True)
    starts = []
    with open(folder / "collector.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a third start in flight: both below wait for it
        for name in ("mon1", "mon2"):
            starts.append(subprocess.Popen([sys.executable, "-m", "cm.main", "monitor", "start", name,
                                            "--interval", "0.2s"], stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True))
            deadline = time.monotonic() + 60
            while not waiting_for_a_lock(starts[-1].pid):
                assert starts[-1].poll() is None, starts[-1].communicate()
                assert time.monotonic() < deadline
                time.sleep(0.05)
        starts[1].kill()  # the second is given up (kill -9) while it waits
        starts[1].wait()
    out, err = starts[0].communicate(timeout=60)
    assert starts[0].returncode == 0 and "collector started" in out, err
    pid = int((folder / "collector.pid").read_text())
    try:
        status = json.loads(cm("monitor", "status", "-f", "json").out)
        assert status["running"] is True and status["targets"] == "local: mon1"
        assert not (folder / "collector.next.json").exists()
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def test_kill_9_loses_at_most_the_sample_in_flight(cm, cm_process, cm_home, collector):
    wait_for_samples(cm_home, 9)
    os.kill(collector, signal.SIGKILL)
    while alive(collector):
        time.sleep(0.05)
    db = sqlite3.connect(cm_home / "monitor" / "samples.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # every committed round is whole: each VM has the same number of samples, give or take none
    counts = [c for (c,) in db.execute("SELECT count(*) FROM sample GROUP BY node")]
    db.close()
    assert len(counts) == 3 and len(set(counts)) == 1, counts
    status = json.loads(cm("monitor", "status", "-f", "json").out)
    assert status["running"] is False  # the stale pid file names a dead process
    restarted = cm_process("monitor", "start", "mon[1-3]", "--interval", "0.2s")
    assert restarted.code == 0, restarted.err
    pid = int((cm_home / "monitor" / "collector.pid").read_text())
    wait_for_samples(cm_home, sum(counts) + 3)
    os.kill(pid, signal.SIGTERM)


def test_retention_prunes_old_samples(cm, cm_process, cm_home, vms):
    from cm.monitoring.sample import Sample
    from cm.monitoring.store import Store, path_in

    store = Store(path_in(cm_home))
    node = store.node_id("mon1", "vm", "local")
    old = int((time.time() - 7200) * 1000)
    store.add((node, Sample(old + i * 1000, 1, 500, b"\x32", 0, 0, 1, 2, 3, 4, 5, 6, 7)) for i in range(10))
    store.close()
    assert samples(cm_home) == 10
    result = cm_process("monitor", "start", "mon1", "--interval", "0.2s", "--retention", "1h")
    assert result.code == 0, result.err
    pid = int((cm_home / "monitor" / "collector.pid").read_text())
    try:
        deadline = time.monotonic() + 20
        db = sqlite3.connect(cm_home / "monitor" / "samples.db")
        while db.execute("SELECT count(*) FROM sample WHERE t < ?", (old + 20000,)).fetchone()[0]:
            assert time.monotonic() < deadline, "old samples were not pruned"
            time.sleep(0.1)
        db.close()
    finally:
        os.kill(pid, signal.SIGTERM)


def test_a_cluster_name_means_its_live_nodes(cm, cm_process, cm_home, vms):
    from cm.mirror import Mirror

    # A cluster record as `cm cluster` keeps it in the mirror: its nodes, one of them failed.
    Mirror(cm_home / "mirror.json").put("cluster", "local", {
        "name": "hpc", "state": "degraded",
        "nodes": [{"name": "mon1", "role": "head", "state": "ready"}, {"name": "mon2", "role": "worker", "state": "ready"},
                  {"name": "mon3", "role": "worker", "state": "failed"}]})
    result = cm_process("monitor", "start", "hpc", "--interval", "0.2s")
    assert result.code == 0 and "2 VM(s) on cloud 'local'" in result.out, result.err
    pid = int((cm_home / "monitor" / "collector.pid").read_text())
    try:
        wait_for_samples(cm_home, 4)
        rows = json.loads(cm("monitor", "show", "hpc", "-f", "json").out)
        assert [r["node"] for r in rows] == ["mon1", "mon2", "all"]
    finally:
        os.kill(pid, signal.SIGTERM)


# -- looking at samples -------------------------------------------------------------------------
def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_show_draws_a_terminal_dashboard_and_a_png(cm, cm_home, collector, tmp_path):
    wait_for_samples(cm_home, 12)
    table = cm("monitor", "show", "--since", "1m")
    assert table.code == 0, table.err
    for name in [*VMS, "all"]:
        assert name in table.out
    rows = json.loads(cm("monitor", "show", "mon[1-2]", "--since", "1m", "-f", "json").out)
    assert [r["node"] for r in rows] == ["mon1", "mon2", "all"]
    assert rows[0]["samples"] >= 3 and rows[0]["cpu mean/peak"].endswith("%")
    png = tmp_path / "dash.png"
    drawn = cm("monitor", "show", "mon1", "--png", str(png))
    assert drawn.code == 0 and f"dashboard written to {png}" in drawn.err
    assert png_size(png) == (1200, 900)
    from PIL import Image

    assert len(Image.open(png).convert("RGB").getcolors(1 << 20)) > 20


def test_export_csv_and_parquet(cm, cm_home, collector, tmp_path):
    wait_for_samples(cm_home, 9)
    os.kill(collector, signal.SIGTERM)
    while alive(collector):
        time.sleep(0.05)
    out = cm("monitor", "export", "mon[1-3]")
    rows = list(csv.DictReader(io.StringIO(out.out)))
    assert len(rows) == samples(cm_home) and {r["node"] for r in rows} == set(VMS)
    assert rows[0]["kind"] == "vm" and int(rows[0]["t"]) > 1_600_000_000_000 and rows[0]["vcpu"]
    target = tmp_path / "s.parquet"
    assert cm("monitor", "export", "--format", "parquet", "-o", str(target)).code == 0
    import pyarrow.parquet as pq

    table = pq.read_table(target)
    assert table.num_rows == len(rows) and table.column_names[:4] == ["node", "kind", "t", "ncpu"]


@pytest.mark.parametrize("words, expected", [
    (("monitor", "start", "--interval", "0"), "bad interval '0'"),
    (("monitor", "start", "--retention", "soon"), "bad retention 'soon'"),
    (("monitor", "start", "nosuch"), "unknown VM 'nosuch'"),
    (("monitor", "show", "--since=5 minutes"), "bad --since '5 minutes'"),
    (("monitor", "show", "nosuch"), "no samples of nosuch"),
    (("monitor", "show", "--since", "1m", "--until", "2m"), "--since 1m must reach further back than --until 2m"),
    (("monitor", "check", "nosuch"), "no profiles learnt yet"),
    (("monitor", "profile", "list"), "no profiles learnt yet"),
    (("monitor", "profile", "learn", "nosuch"), "unknown run 'nosuch'"),
    (("monitor", "export", "--format", "parquet"), "--format parquet needs --output FILE"),
    (("monitor", "run", "add", "r1"), "give the run's NAME and NODES"),
    (("monitor", "run", "delete", "r1"), "unknown run 'r1'"),
    (("monitor", "run", "add", "j", "--job", "12; rm"), "bad Slurm job id"),
])
def test_bad_input_is_one_line_and_exit_2(cm, vms, words, expected):
    result = cm(*words)
    assert result.code == 2, (result.out, result.err)
    assert expected in one_error_line(result)


# -- profiles, bottlenecks and tuning on samples whose truth is known -----------------------------
# (cpu, steal, mem %, disk B/s, disk requests in flight, net B/s) per kind: what each workload looks like
KINDS = {
    "cpu": (950, 20, 20, 0, 0, 200),
    "disk": (250, 100, 20, 40_000_000, 600, 200),
    "mem": (100, 20, 96, 0, 0, 200),
    "net": (300, 50, 20, 0, 0, 8_000_000),
    "starved": (250, 700, 20, 0, 0, 200),  # wants its CPU, waits for the host's
    "waits": (600, 350, 20, 0, 0, 200),  # busy, and waits a little for a host CPU (emulation, other guests)
}


def synthetic_run(store, name: str, node: str, kind: str, start: int, seed: int, host_cpu: int = 300,
                  host: str = "hv1") -> None:
    """Thirty 1-s samples of ``node`` doing ``kind`` (with a little noise), its host beside it, and the run."""
    import random

    from cm.monitoring.sample import Sample

    rnd = random.Random(seed)
    cpu, steal, mem, disk, busy, net = KINDS[kind]
    vm = store.node_id(node, "vm", "local", host=host)
    host_id = store.node_id(host, "host", "local")

    def noisy(value: float) -> int:
        return max(0, int(value * rnd.uniform(0.9, 1.1)))

    rows = []
    for i in range(30):
        t = start + i * 1000
        rows.append((vm, Sample(t, 1, min(1000, noisy(cpu)), bytes([min(100, cpu // 10)]), noisy(steal), 0,
                                noisy(mem * 2000), 200_000, noisy(disk / 2), noisy(disk / 2), noisy(busy),
                                noisy(net / 2), noisy(net / 2))))
        rows.append((host_id, Sample(t, 2, host_cpu, b"\x1e\x1e", 0, 0, 4_000_000, 16_000_000, 1000, 1000, 10, 0, 0)))
    store.add(rows)
    store.save_run({"name": name, "nodes": [node], "start": start, "end": start + 29_000, "label": kind})


@pytest.fixture
def learnt(cm, cm_home, vms):
    from cm.monitoring.store import Store, path_in

    store = Store(path_in(cm_home))
    start = int((time.time() - 3600) * 1000)
    for i, kind in enumerate(k for k in KINDS for _ in range(3)):
        if kind not in ("starved", "waits"):
            synthetic_run(store, f"{kind}-{i % 3 + 1}", "mon1", kind, start + i * 40_000, seed=i)
    synthetic_run(store, "starved-1", "mon2", "starved", start + 20 * 40_000, seed=99, host_cpu=1000)
    synthetic_run(store, "disk-slow", "mon3", "disk", start + 21 * 40_000, seed=98)
    store.db.execute("UPDATE sample SET disk_rd = disk_rd / 100, disk_wr = disk_wr / 100, disk_busy = 1000 "
                     "WHERE node = (SELECT id FROM node WHERE name = 'mon3')")
    store.close()
    result = cm("monitor", "profile", "learn", *(f"{k}-{i}" for k in ("cpu", "disk", "mem", "net") for i in (1, 2, 3)),
                "-f", "json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def check(cm, run: str) -> dict:
    result = cm("monitor", "check", run, "-f", "json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_profiles_group_runs_by_kind_and_check_names_the_bottleneck(cm, learnt):
    assert sorted(p["profile"] for p in learnt) == ["cpu-bound", "disk-bound", "memory-bound", "network-bound"]
    for profile in learnt:
        assert {run.rsplit("-", 1)[0] for run in profile["runs"].split(", ")} == {profile["profile"].split("-")[0]
                                                                                    .replace("memory", "mem")
                                                                                    .replace("network", "net")}
    listed = json.loads(cm("monitor", "profile", "list", "-f", "json").out)
    assert listed == learnt  # stored
    for run, resource in (("cpu-2", "cpu"), ("disk-1", "disk"), ("mem-3", "memory"), ("net-1", "network")):
        verdict = check(cm, run)
        assert (verdict["bottleneck"], verdict["level"], verdict["deviates"]) == (resource, "vm", False), verdict


def test_a_vm_starved_by_its_host_is_a_host_bottleneck_and_tune_says_move_it(cm, learnt):
    verdict = check(cm, "starved-1")
    assert (verdict["bottleneck"], verdict["level"]) == ("cpu", "host"), verdict
    assert "waited for a host CPU" in verdict["why"] and verdict["host_cpu"] == "100%"
    rows = json.loads(cm("monitor", "tune", "starved-1", "--apply", "-f", "json").out)
    assert rows[0]["node"] == "mon2" and "cm vm migrate mon2 --to HOST" in rows[0]["change"]
    assert rows[0]["result"].startswith("not applied")


def test_waiting_for_a_host_cpu_is_the_hosts_fault_only_while_the_host_is_busy(cm, learnt):
    from cm.monitoring.store import Store, path_in

    start = int((time.time() - 600) * 1000)
    with Store(path_in(os.environ["CM_HOME"])) as store:
        synthetic_run(store, "waits-idle-host", "mon4", "waits", start, seed=5, host_cpu=450, host="hv2")
        synthetic_run(store, "waits-busy-host", "mon5", "waits", start + 40_000, seed=6, host_cpu=950, host="hv3")
    spare = check(cm, "waits-idle-host")
    assert (spare["bottleneck"], spare["level"], spare["host_cpu"]) == ("cpu", "vm", "45%"), spare
    assert "while the host's CPUs were 45% busy" in spare["why"]
    busy = check(cm, "waits-busy-host")
    assert (busy["bottleneck"], busy["level"], busy["host_cpu"]) == ("cpu", "host", "95%"), busy


def test_tune_moves_a_starved_vm_to_the_least_loaded_other_host(cm, learnt):
    from cm.monitoring.store import Store, path_in

    with Store(path_in(os.environ["CM_HOME"])) as store:
        run = store.runs(["starved-1"])[0]
        for name, busy in (("hv2", 700), ("hv3", 200)):  # sampled over the starved run's window
            node = store.node_id(name, "host", "local")
            store.add([(node, synthetic_host(t, busy)) for t in range(run["start"], run["end"] + 1, 1000)])
        other = store.node_id("hv9", "host", "elsewhere")  # another cloud's host is no candidate
        store.add([(other, synthetic_host(t, 0)) for t in range(run["start"], run["end"] + 1, 1000)])
    rows = json.loads(cm("monitor", "tune", "starved-1", "-f", "json").out)
    assert rows[0]["change"].startswith("move it to the least loaded other host: cm vm migrate mon2 --to hv3 ")
    assert "hv3's CPUs 20% busy" in rows[0]["change"] and rows[0]["result"] == "suggested"
    dry = json.loads(cm("monitor", "tune", "starved-1", "--dryrun", "-f", "json").out)
    assert dry[0]["result"] == "would call migrate_vm(mon2, hv3)"
    applied = cm("monitor", "tune", "starved-1", "--apply", "-f", "json")
    assert applied.code == 1  # the test hypervisor lists no hosts: the cloud refuses, cm says why
    assert "has no host 'hv3'" in json.loads(applied.out)[0]["result"]


def synthetic_host(t: int, busy: int):
    from cm.monitoring.sample import Sample

    return Sample(t, 2, busy, b"\x1e\x1e", 0, 0, 4_000_000, 16_000_000, 1000, 1000, 10, 0, 0)


def test_a_slow_disk_deviates_from_its_profile(cm, learnt):
    verdict = check(cm, "disk-slow")
    assert verdict["profile"] == "disk-bound" and verdict["deviates"] is True, verdict
    assert verdict["distance"] > verdict["threshold"]
    assert (verdict["bottleneck"], verdict["level"]) == ("disk", "vm")
    assert "disk" in verdict["deviation"]


def test_tune_adds_a_vcpu_only_up_to_the_vms_maximum(cm, learnt):
    suggested = json.loads(cm("monitor", "tune", "cpu-1", "-f", "json").out)
    assert suggested == [{"node": "mon1", "bottleneck": "cpu", "level": "vm", "change": "add a vCPU: 1 -> 2",
                          "result": "suggested"}]
    dry = json.loads(cm("monitor", "tune", "cpu-1", "--dryrun", "-f", "json").out)
    assert dry[0]["result"] == "would call set_vm_vcpus(mon1, 2)"
    applied = cm("monitor", "tune", "cpu-1", "--apply", "-f", "json")
    assert applied.code == 1  # the small flavor's VM has 1 vCPU at most: the cloud refuses, cm says why
    assert "at most 1 vCPUs" in json.loads(applied.out)[0]["result"]


def test_learning_needs_scikit_learn_only_and_says_so(cm, learnt, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    result = cm("monitor", "profile", "learn")
    assert result.code == 2 and "pip install 'cm[monitor]'" in one_error_line(result)
    assert check(cm, "cpu-1")["bottleneck"] == "cpu"  # checking uses the stored model alone


# -- guests read over ssh (clouds whose hypervisor cm cannot reach) ------------------------------
def test_a_guest_is_read_over_ssh_through_one_kept_connection(tmp_path):
    from cm.monitoring.sample import between
    from cm.monitoring.sources import close_masters, read_over_ssh, ssh_command
    from tests.infra.sshd import LoginHost

    with LoginHost("monitor-ssh", port=24010) as login:
        import tempfile

        control = Path(tempfile.mkdtemp(prefix="cm-mon-"))  # short: a socket path must fit in 108 bytes
        command = ssh_command(login.alias, "root", control, ["-F", str(login.ssh_config)])
        first = read_over_ssh("guest", command)
        assert len(list(control.iterdir())) == 1  # the master connection, reused by the next reading
        time.sleep(0.5)
        second = read_over_ssh("guest", command)
        close_masters(control)
        assert not list(control.iterdir())
        control.rmdir()
    local = Path("/proc/meminfo").read_text().split()[1]  # the "guest" is this machine, through sshd
    assert first.mem_total_kib == int(local) and first.vcpus == os.cpu_count()
    assert second.cpu_ns >= first.cpu_ns and second.net_rx_bytes >= first.net_rx_bytes
    sample = between(first, second)
    assert sample is not None and 0 <= sample.cpu <= 1000 and len(sample.vcpu) == os.cpu_count()


def test_an_unreachable_guest_is_one_clear_error(tmp_path):
    from cm.errors import CmError
    from cm.monitoring.sources import read_over_ssh, ssh_command

    command = ssh_command("127.0.0.1", "root", tmp_path, ["-p", "24011", "-o", "UserKnownHostsFile=/dev/null"])
    with pytest.raises(CmError, match="ssh to g1 failed: .*(refused|closed)"):
        read_over_ssh("g1", command)


# -- Slurm jobs joined to the samples of their nodes ------------------------------------------------
def test_a_slurm_job_becomes_a_run_on_the_nodes_it_ran_on(cm, cm_process, cm_home, tmp_path, monkeypatch):
    from tests.infra.slurm import SlurmCluster

    assert cm("image", "add", "cirros", str(qcow2_file(tmp_path / "cirros.qcow2"))).code == 0
    assert cm("vm", "boot", "--name", "n[1-2]").code == 0  # VMs named like the Slurm nodes
    with SlurmCluster("monitor-sl", 24020, nodes=2, accounting=True) as slurm:
        monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
        started = cm_process("monitor", "start", "n[1-2]", "--interval", "0.2s")
        assert started.code == 0, started.err
        pid = int((cm_home / "monitor" / "collector.pid").read_text())
        try:
            wait_for_samples(cm_home, 4)
            job = slurm.run(["sbatch", "--parsable", "-N2", "--wrap", "srun sleep 2"]).stdout.strip()
            deadline = time.monotonic() + 120
            while "COMPLETED" not in slurm.run(["sacct", "-j", job, "-X", "-n", "-o", "State"]).stdout:
                assert time.monotonic() < deadline, slurm.run(["sacct", "-j", job]).stdout
                time.sleep(0.5)
            result = cm("monitor", "run", "add", "--job", job, "-f", "json")
        finally:
            os.kill(pid, signal.SIGTERM)
    assert result.code == 0, result.err
    run = json.loads(result.out)
    assert run["name"] == f"job-{job}" and run["source"] == f"slurm:{job}" and run["nodes"] == "n[1-2]"
    assert run["metrics"]["state"] == "COMPLETED" and run["metrics"]["alloc_cpus"] == "2"
    assert 2 <= run["seconds"] <= 60
    assert run["samples"] >= 2 * run["seconds"]  # both nodes' samples over the job's time, at 5 a second
    listed = json.loads(cm("monitor", "run", "list", "-f", "json").out)
    assert [r["name"] for r in listed] == [f"job-{job}"]


def test_runs_all_of_one_kind_still_name_the_saturated_resource(cm, learnt):
    assert cm("monitor", "profile", "learn", "mem-1", "mem-2", "mem-3").code == 0
    verdict = check(cm, "mem-2")
    assert (verdict["profile"], verdict["bottleneck"], verdict["level"]) == ("memory-bound", "memory", "vm"), verdict
    assert len(json.loads(cm("monitor", "profile", "list", "-f", "json").out)) == 1  # no split of noise


def test_a_run_is_the_window_asked_for(cm, vms):
    result = cm("monitor", "run", "add", "w1", "mon[1-2]", "--since", "90s", "--until", "30s", "--label", "x", "-f", "json")
    assert result.code == 0, result.err
    run = json.loads(result.out)
    assert run["seconds"] == 60 and run["nodes"] == "mon[1-2]" and run["label"] == "x" and run["samples"] == 0
    assert cm("monitor", "run", "delete", "w1").out.strip() == "run w1 deleted"
