"""The Slurm launcher's rendered slurm.conf on real slurmctld + slurmd 22.05 (loopback only):
a worker started as the recipe starts it (`slurmd -Z --conf Feature=cmworker`) registers
with its real CPUs and memory, joins the partition idle, runs a job, and a resize's drain
and delete take it out again without restarting slurmctld."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

PORTS = (22510, 22511)  # this helper's range
ROOT = Path(__file__).resolve().parent.parent


def _render(tmp: Path) -> str:
    from tests.test_clusters_local import _context

    recipe, cluster = _context("slurm", 1)
    cluster["nodes"][0]["address"] = "127.0.0.1"
    from cm.clusters import plan

    return recipe.render_files(plan.context(cluster, recipe, {}, None))["slurm.conf"]


def _local_paths(conf: str, tmp: Path) -> str:
    """Only what must differ on a shared machine: ports, state and log paths, a private munge socket."""
    conf = re.sub(r"^(SlurmctldHost)=.*$", "SlurmctldHost=localhost(127.0.0.1)", conf, flags=re.M)
    conf = re.sub(r"=/var/(spool|log/slurm)/", f"={tmp}/", conf)
    conf = re.sub(r"=/run/", f"={tmp}/", conf)
    return conf + (f"SlurmctldPort={PORTS[0]}\nSlurmdPort={PORTS[1]}\n"
                   f"AuthInfo=socket={tmp}/munge/munge.sock\n")


def _wait(check, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.3)
    return False


def test_the_rendered_slurm_conf_takes_dynamic_workers_and_lets_resize_drain_and_delete_them(tmp_path):
    for tool in ("slurmctld", "slurmd", "munged", "srun"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.skip(f"{tool} is not installed (scripts/install-system-packages.sh)")
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="cm-clusters-slurm-"))  # munged (user munge) must reach it: not under 0700 dirs
    for directory in ("munge", "slurmctld", "slurmd"):  # the recipe's bootcmd makes these in a guest
        (tmp / directory).mkdir()
    key = tmp / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    shutil.chown(key, "munge", "munge")
    shutil.chown(tmp / "munge", "munge", "munge")
    os.chmod(key, 0o400)
    os.chmod(tmp, 0o755)
    conf = tmp / "slurm.conf"
    conf.write_text(_local_paths(_render(tmp), tmp))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged", f"--socket={tmp}/munge/munge.sock",
                    f"--key-file={key}", f"--pid-file={tmp}/munge/munged.pid", f"--seed-file={tmp}/munge/seed",
                    f"--log-file={tmp}/munge/munged.log"], check=True)
    pids = [tmp / "munge" / "munged.pid"]
    try:
        subprocess.run(["slurmctld", "-i"], env=env, check=True, stdin=subprocess.DEVNULL)
        pids.append(tmp / "slurmctld.pid")
        assert _wait(lambda: subprocess.run(["scontrol", "ping"], env=env, capture_output=True,
                                            text=True).stdout.count("UP") > 0), (tmp / "slurmctld.log").read_text()
        # The worker's own command line, from the recipe's /etc/default/slurmd.
        worker = (ROOT / "launchers/slurm/worker.yaml.j2").read_text()
        options = re.search(r'SLURMD_OPTIONS="([^"]*)"', worker).group(1).split(" ", 2)
        assert options[:2] == ["-Z", "--conf"]
        subprocess.run(["slurmd", *options[:2], options[2], "-N", "w1"], env=env, check=True,
                       stdin=subprocess.DEVNULL, cwd=tmp)
        pids.append(tmp / "slurmd.pid")

        def idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-N", "-t", "idle", "-o", "%N %P"], env=env, capture_output=True,
                                 text=True).stdout
            return "w1 batch" in out

        assert _wait(idle), (tmp / "slurmd.log").read_text()[-2000:]
        node = subprocess.run(["scontrol", "show", "node", "w1"], env=env, capture_output=True, text=True).stdout
        assert f"CPUTot={os.cpu_count()}" in node and "ActiveFeatures=cmworker" in node
        ran = subprocess.run(["srun", "-N1", "hostname"], env=env, capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0 and ran.stdout.strip() == os.uname().nodename

        # The resize hooks of the recipe: drain, nothing busy, delete; slurmctld keeps running.
        import yaml

        hooks = yaml.safe_load((ROOT / "launchers/slurm.yaml").read_text())["resize"]
        run = lambda step: subprocess.run(hooks[step].replace("{{ node }}", "w1"), shell=True, env=env,  # noqa: E731
                                          capture_output=True, text=True)
        assert run("drain").returncode == 0
        assert run("busy").stdout.strip() == ""
        os.kill(int((tmp / "slurmd.pid").read_text()), 15)
        pids.remove(tmp / "slurmd.pid")
        time.sleep(1)
        assert run("remove").returncode == 0
        assert "w1" not in subprocess.run(["sinfo", "-h", "-N"], env=env, capture_output=True, text=True).stdout
    finally:
        for pid_file in reversed(pids):
            try:
                os.kill(int(pid_file.read_text()), 15)
            except (OSError, ValueError):
                pass
        time.sleep(0.5)
        shutil.rmtree(tmp, ignore_errors=True)
