"""Elastic Slurm and checkpoint figures (issue 11), on real slurmctld + libvirtd + QEMU (TCG):

* burst overhead: srun (and sbatch) to a powered-down cloud node, from submission to the job
  running, minus the VM's own boot (cm's create call to its slurmd registering); split into what
  Slurm adds before calling cm, cm's own work, and Slurm after the registration;
* `cm vm save` / `cm vm restore` of a 256 MiB and a 1 GiB guest, against libvirt's bare
  managedSave / create of the same guest in the same run;
* live migration between two libvirt daemons: wall time and the downtime libvirt measured;
* backfill: a high-priority job on n1 alone, then while a low-priority job runs in a virtual node
  on n1's host that cm checkpoints, then one it migrates to a free host (wall time of the high job,
  ratios against alone, and the low job's longest silence).

Run as root: ``.venv/bin/python benchmarks/elastic.py [--skip-burst] [--skip-checkpoint] [--skip-backfill]``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.elastic_lab import CLOUD, ElasticLab, guest_files, running_lab, two_hosts, write_cloud  # noqa: E402

PORT = 24700


def stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def registered(lab: ElasticLab, node: str, since: float) -> float:
    """When slurmctld logged the node's slurmd registering (its log has millisecond times)."""
    log = (lab.slurm.tmp / "log" / "slurmctld.log").read_text(errors="replace")
    for match in re.finditer(r"^\[(\S+)\] (?:Node %s now responding|.*node %s returned to service|"
                             r"validate_node_specs: Node %s .*boot)" % (node, node, node), log, re.M):
        at = datetime.fromisoformat(match.group(1)).timestamp()
        if at >= since - 1:
            return at
    return float("nan")


def burst(lab: ElasticLab, how: str) -> dict[str, float]:
    """One job on powered-down cloud1: the phases, from cm's log and slurmctld's."""
    wait_powered_down(lab)
    start = time.time()
    if how == "srun":
        out = lab.slurm.run(["srun", "-p", "cloud", "-w", "cloud1", "true"], timeout=600)
        assert out.returncode == 0, out.stderr
        running = time.time()   # `true` ends at once: srun's return is the job running (and done)
    else:
        job = lab.slurm.run(["sbatch", "--parsable", "-p", "cloud", "-w", "cloud1", "--wrap", "true"]).stdout.strip()
        while True:
            state = lab.slurm.run(["squeue", "-h", "-j", job, "-o", "%T"]).stdout.strip()
            if state in ("RUNNING", "COMPLETING", "") or state.startswith("COMPLET"):
                running = time.time()
                break
            time.sleep(0.05)
    actions = (lab.cm_home / "elastic" / lab.slurm.cluster_name / "actions.log").read_text().splitlines()
    boot = [stamp(a.split()[0]) for a in actions if "resume cloud1: booting" in a and stamp(a.split()[0]) >= start - 1]
    addr = [stamp(a.split()[0]) for a in actions if "resume cloud1: VM" in a and stamp(a.split()[0]) >= start - 1]
    reg = registered(lab, "cloud1", start)
    total = running - start
    vm_boot = reg - boot[0] if boot else float("nan")
    return {"total": total, "vm_boot_to_registration": vm_boot, "overhead": total - vm_boot,
            "slurm_before_cm": (boot[0] - start) if boot else float("nan"),
            "cm_to_address": (addr[0] - boot[0]) if boot and addr else float("nan"),
            "slurm_after_registration": running - reg}


def wait_powered_down(lab: ElasticLab, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while "~" not in lab.slurm.run(["sinfo", "-h", "-n", "cloud1", "-o", "%t"]).stdout:
        if time.monotonic() > deadline:
            raise RuntimeError("cloud1 did not power down")
        time.sleep(1)


def run_burst() -> None:
    home = Path(tempfile.mkdtemp(prefix="elastic-bench-"))
    with running_lab("elastic-b", "elastic-bench", PORT, home) as lab:
        conf = lab.slurm.conf
        done = lab.cm("slurm", "burst", "enable", str(conf), "--cloud", CLOUD, "--max", "1", "--image", "slurmd",
                      "--flavor", "node", "--idle", "5", "--munge-key", str(lab.slurm.tmp / "munge" / "munge.key"),
                      "--restart-command", f"slurmctld -f {conf}")
        assert done.returncode == 0, done.stderr
        for how in ("srun", "srun", "sbatch"):
            figures = burst(lab, how)
            print(f"burst {how:6s} " + "  ".join(f"{k}={v:.2f}s" for k, v in figures.items()))


def run_checkpoint() -> None:
    import libvirt

    kernel, initrd = guest_files()
    home = Path(tempfile.mkdtemp(prefix="elastic-bench-"))
    env = {**os.environ, "CM_HOME": str(home), "PYTHONPATH": str(ROOT)}

    def cm(*words: str) -> float:
        t = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "cm.main", *words, "--cloud", "two"], env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return time.monotonic() - t

    with two_hosts("elastic-b") as (one, two):
        conn2 = two.connect()
        write_cloud(home, one)
        import yaml

        config = yaml.safe_load((home / "cm.yaml").read_text())
        config["clouds"]["two"] = {**config["clouds"].pop(CLOUD), "migrate_storage": "shared",
                                   "hosts": {"h1": {"uri": one.uri, "tunnelled": True},
                                             "h2": {"uri": two.uri, "tunnelled": True}}}
        (home / "cm.yaml").write_text(yaml.safe_dump(config))
        cm("image", "add", "g", f"kernel={kernel},initrd={initrd}")
        conn1 = one.connect()
        for flavor, mib in (("node", 256), ("big", 1024)):
            name = f"bench-{mib}"
            cm("vm", "boot", "--name", name, "--image", "g", "--flavor", flavor)
            time.sleep(15)   # let the guest finish booting: saving a kernel mid-boot measures nothing useful
            save, restore = cm("vm", "save", name), cm("vm", "restore", name)
            dom = conn1.lookupByName(name)
            t = time.monotonic()
            dom.managedSave(0)
            raw_save = time.monotonic() - t
            t = time.monotonic()
            dom.create()
            raw_restore = time.monotonic() - t
            print(f"checkpoint {mib:5d} MiB: cm vm save {save:.2f}s (libvirt managedSave {raw_save:.2f}s, "
                  f"x{save / raw_save:.2f}); cm vm restore {restore:.2f}s (libvirt create {raw_restore:.2f}s, "
                  f"x{restore / raw_restore:.2f})")
            if mib == 256:
                wall = cm("vm", "migrate", name, "--to", "h2")
                moved = conn2.lookupByName(name)
                stats = moved.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
                print(f"live migration {mib} MiB: cm vm migrate {wall:.2f}s, downtime "
                      f"{stats.get('downtime', float('nan'))} ms (libvirt's measure), "
                      f"memory {stats.get('memory_total', 0) // (1 << 20)} MiB")
                cm("vm", "delete", name)
            else:
                cm("vm", "delete", name)
        conn1.close()
        conn2.close()


def high_job(lab: ElasticLab) -> float:
    """Seconds from srun to the end of a 1 s job on the physical node n1."""
    t = time.monotonic()
    out = lab.slurm.run(["srun", "-p", "debug", "-w", "n1", "sleep", "1"], timeout=600)
    assert out.returncode == 0, out.stderr
    return time.monotonic() - t


def with_low_job(lab: ElasticLab) -> tuple[float, float]:
    """(the high job's seconds, the low job's longest silence) while a low job prints every 0.2 s in cloud1."""
    import threading

    low = subprocess.Popen(lab.slurm.ns_host.wrap(["srun", "-p", "cloud", "-w", "cloud1", "sh", "-c",
                                                   "while :; do echo .; sleep 0.2; done"]),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=lab.slurm.env)
    seen: list[float] = []
    reader = threading.Thread(target=lambda: [seen.append(time.monotonic()) for _ in low.stdout], daemon=True)
    reader.start()
    try:
        while len(seen) < 5:
            if low.poll() is not None:
                raise RuntimeError("the low-priority job ended early")
            time.sleep(0.2)
        took = high_job(lab)
        time.sleep(3)   # its epilog restores a checkpointed VM: count that silence too
        mark = len(seen)
        while len(seen) < mark + 5:
            time.sleep(0.2)
    finally:
        low.terminate()
        low.wait(30)
    return took, max(b - a for a, b in zip(seen, seen[1:]))


def run_backfill() -> None:
    with tempfile.TemporaryDirectory(prefix="elastic-bench-") as tmp, \
            running_lab("elastic-b", "elastic-bench", PORT, Path(tmp), second_host=True) as lab:
        conf = lab.slurm.conf
        done = lab.cm("slurm", "burst", "enable", str(conf), "--cloud", CLOUD, "--max", "1", "--image", "slurmd",
                      "--flavor", "node", "--idle", "600", "--munge-key", str(lab.slurm.tmp / "munge" / "munge.key"),
                      "--restart-command", f"slurmctld -f {conf}")
        assert done.returncode == 0, done.stderr
        alone = sorted(high_job(lab) for _ in range(3))[1]
        print(f"backfill high job alone          {alone:.2f}s (median of 3)")
        for policy in ("checkpoint", "migrate"):
            done = lab.cm("slurm", "backfill", "enable", str(conf), "--virtual-partition", "cloud",
                          "--policy", policy)
            assert done.returncode == 0, done.stderr
            took, silence = with_low_job(lab)
            print(f"backfill high job, {policy:10s}  {took:.2f}s (x{took / alone:.2f} of alone); "
                  f"low job's longest silence {silence:.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-burst", action="store_true")
    parser.add_argument("--skip-checkpoint", action="store_true")
    parser.add_argument("--skip-backfill", action="store_true")
    args = parser.parse_args()
    if not args.skip_checkpoint:
        run_checkpoint()
    if not args.skip_burst:
        run_burst()
    if not args.skip_backfill:
        run_backfill()


if __name__ == "__main__":
    main()
