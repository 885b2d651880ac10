"""`cm slurm burst` on a Comet cloud when things go wrong: a computeset that ends under several
watchers at once, a node that failed with its computeset still running, a start whose answer is lost.

Real daemons, no guest: the bursting cluster's own slurmctld (tests/infra/slurm.py, its cloud nodes
never get a slurmd), the reference Comet service on loopback with libvirt's test driver as its
hypervisors (tests/comet/conftest.py).  cm runs the programs slurmctld would run (`cm slurm burst
resume CLUSTER NODES`); the compute nodes "boot" in the test driver, so a node stays `booted` in
cm's state while Slurm still counts it powering up.  Booting a real guest is test_burst_comet_e2e.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.comet.nucleus import PASSWORDS, free_ports, prefix
from tests.infra.procs import wait_for
from tests.infra.slurm import SlurmCluster

pytest.importorskip("pycdlib")
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (slurmctld, munged)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("slurmctld", "slurmd", "munged")),
                       reason="run scripts/install-system-packages.sh"),
]


@pytest.fixture
def bursting(cm, comet) -> Iterator[SlurmCluster]:
    """The user's own Slurm (static node n1), its cloud nodes cloud[1-2] backed by virtual cluster vc1;
    watchers cm started are stopped after."""
    with SlurmCluster(prefix("cburst-f"), free_ports(4), nodes=1) as slurm:
        folder = Path(os.environ["CM_HOME"]) / "elastic" / slurm.cluster_name
        try:
            yield slurm
        finally:
            for pid_file in folder.glob("*.pid"):  # watchers (each exits once its node stopped)
                try:
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
                except (OSError, ValueError):
                    pass
            for log in sorted(folder.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text()[-3000:]}")


def enable(cm, slurm: SlurmCluster, cloud: str = "comet") -> None:
    result = cm("slurm", "burst", "enable", str(slurm.conf), "--cloud", cloud, "--max", "2", "--walltime", "1h",
                "--idle", "600", "--resume-timeout", "60", "--munge-key", str(slurm.tmp / "munge" / "munge.key"),
                "--restart-command", f"slurmctld -f {slurm.conf}")
    assert result.code == 0, result.err


def saved(slurm: SlurmCluster) -> dict:
    return json.loads((Path(os.environ["CM_HOME"]) / "elastic" / slurm.cluster_name / "state.json").read_text())


def actions(slurm: SlurmCluster) -> str:
    return (Path(os.environ["CM_HOME"]) / "elastic" / slurm.cluster_name / "actions.log").read_text()


def computeset(cm, cs_id: int, cloud: str = "comet") -> dict:
    return json.loads(cm("comet", "computeset", str(cs_id), "--cloud", cloud, "-f", "json").out)


def running(cm) -> dict[str, str]:
    """Compute node -> the computeset it runs in (one ending is not counted), as the service shows vc1."""
    rows = json.loads(cm("comet", "cluster", "vc1", "--status", "--cloud", "comet", "-f", "json").out)
    return {r["name"]: r["computeset"] for r in rows if r.get("computeset") and r.get("computeset_state") != "ending"}


def test_an_ended_computeset_is_dealt_with_once_however_many_processes_see_it(cm, comet, bursting):
    """cloud1's computeset is terminated at the centre while cloud1 and cloud2 run: its watcher and four
    more processes (as resume and suspend look on their way) see it end at once; one of them sets cloud1
    DOWN with the reason and ends what is left, the others leave it; cloud2 runs on, untouched."""
    from cm.context import Context
    from cm.elastic import power, state
    from cm.elastic.nodesource import source_for
    from cm.elastic.target import controller

    slurm = bursting
    enable(cm, slurm)
    booted = cm("slurm", "burst", "resume", slurm.cluster_name, "cloud[1-2]")
    assert booted.code == 0, booted.err
    nodes = saved(slurm)["nodes"]
    one, two = nodes["cloud1"]["computeset"], nodes["cloud2"]["computeset"]
    assert nodes["cloud1"]["state"] == nodes["cloud2"]["state"] == "booted" and one and two and one != two
    assert cm("comet", "terminate", str(one), "--cloud", "comet").code == 0

    found: list[list[str]] = []

    def look() -> None:
        ctx = Context(out=print, err=print)
        try:
            st = state.load(ctx.home, slurm.cluster_name)
            found.append(power.ended(ctx, slurm.cluster_name, source_for(ctx, st), controller(st)))
        finally:
            ctx.close()

    threads = [threading.Thread(target=look) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    folder = Path(os.environ["CM_HOME"]) / "elastic" / slurm.cluster_name
    wait_for("cloud1's watcher to exit", lambda: not (folder / "watch-cloud1.pid").exists(), 30, 0.2)
    watcher_acted = "node set DOWN" in (folder / "watch-cloud1.log").read_text()
    assert sum(f.count("cloud1") for f in found) + watcher_acted == 1, (found, watcher_acted)
    log = actions(slurm)
    assert log.count("fail cloud1: ") == 1, log
    assert re.search(rf"fail cloud1: computeset {one} ended: (ending|cancelled)", log), log
    shown = slurm.run(["scontrol", "show", "node", "cloud1"]).stdout
    assert re.search(rf"Reason=cm: computeset {one} ended: (ending|cancelled)", shown), shown
    after = saved(slurm)["nodes"]
    assert after["cloud1"]["state"] == "failed" and not after["cloud1"]["computeset"]
    assert after["cloud2"]["state"] == "booted" and after["cloud2"]["computeset"] == two
    assert computeset(cm, two)["state"] == "running" and not re.search(r"(fail|suspend) cloud2", log)

    # cloud2's computeset turns `ending` before cm ends it itself: stopping takes it as ended, not as a failure
    os.kill(int((folder / "watch-cloud2.pid").read_text().split()[0]), signal.SIGTERM)  # this test plays it
    wait_for("cloud2's watcher to exit", lambda: not (folder / "watch-cloud2.pid").exists(), 30, 0.2)
    assert cm("comet", "terminate", str(two), "--cloud", "comet").code == 0
    source = source_for(Context(), saved(slurm))
    assert source.stop(slurm.cluster_name, "cloud2", after["cloud2"]).startswith(f"computeset {two} was ")
    assert not saved(slurm)["nodes"]["cloud2"]["computeset"]


def test_disable_ends_the_computeset_of_a_node_whose_stop_failed(cm, comet, bursting):
    """A node failed and its computeset could not be ended then (the service did not answer): cm keeps the
    computeset in the node's entry; `burst disable` ends it, rather than leave it charging until its walltime."""
    slurm = bursting
    enable(cm, slurm)
    assert cm("slurm", "burst", "resume", slurm.cluster_name, "cloud1").code == 0
    cs_id = saved(slurm)["nodes"]["cloud1"]["computeset"]
    state_file = Path(os.environ["CM_HOME"]) / "elastic" / slurm.cluster_name / "state.json"
    st = saved(slurm)   # as power._fail leaves a node whose machine could not be stopped
    st["nodes"]["cloud1"].update(state="failed", since=0.0, reason="boot failed: x; its machine could not be "
                                 "stopped: cannot reach the service")
    state_file.write_text(json.dumps(st))
    assert computeset(cm, cs_id)["state"] == "running"

    result = cm("slurm", "burst", "disable", slurm.cluster_name, "--timeout", "30", "-f", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["vms_deleted"] == 1
    assert computeset(cm, cs_id)["state"] in ("ending", "cancelled", "completed")
    assert not running(cm) and comet.iso_files() == {}   # nothing of cm's left on the service, seed included
    assert f"suspend cloud1: powered down after it failed; ended computeset {cs_id}" in actions(slurm)


class LosingProxy:
    """An HTTP proxy on loopback to the service that forwards everything, but drops the answer to the
    first computeset start after passing it on (the service acted; cm never hears of it)."""

    def __init__(self, upstream: str) -> None:
        self.upstream, self.lost = upstream.rstrip("/"), threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = requests.request(self.command, proxy.upstream + self.path, headers=headers, data=body,
                                          allow_redirects=False, timeout=60)
                if self.command == "POST" and self.path.rstrip("/").endswith("/computeset") \
                        and not proxy.lost.is_set():
                    proxy.lost.set()
                    self.close_connection = True   # the answer is lost on the way back
                    return
                self.send_response(answer.status_code)
                for key in ("Content-Type", "Location"):
                    if key in answer.headers:
                        self.send_header(key, answer.headers[key])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/nucleus"

    def __enter__(self) -> "LosingProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_computeset_started_though_its_answer_was_lost_is_ended(cm, comet, bursting):
    slurm = bursting
    with LosingProxy(comet.base.removesuffix("/nucleus")) as proxy:
        assert cm("cloud", "add", "lossy", "--kind", "comet", f"base_url={proxy.base}", "username=alice",
                  f"password={PASSWORDS['alice']}").code == 0
        enable(cm, slurm, "lossy")
        result = cm("slurm", "burst", "resume", slurm.cluster_name, "cloud1")
        assert proxy.lost.is_set()
    assert result.code == 1
    found = re.search(r"ended computeset (\d+) \(started on (vm-vc1-\d) though the answer was lost\)", result.err)
    assert found, result.err
    assert computeset(cm, int(found.group(1)))["state"] in ("ending", "cancelled", "completed")
    assert not running(cm)   # no computeset of cm's runs on, charging until its walltime
    log = actions(slurm)
    assert f"the service started computeset {found.group(1)} on {found.group(2)} though its answer was lost" in log
    assert "fail cloud1: boot failed" in log and saved(slurm)["nodes"]["cloud1"]["state"] == "failed"
