"""Benchmarks of the comet client and the Nucleus service on a private Slurm (run on demand, not in tests).

    python benchmarks/comet.py [--clients 50] [--requests 20] [--sets 5] [--qemu] [--together 3 [--only-together]]

1. 50 concurrent clients listing clusters and computesets: p50/p99 latency
   (target p99 <= 100 ms), against the same clients fetching the service's
   static OpenAPI document (the baseline: HTTP + FastAPI with no auth, no DB).
2. Slurm starts a computeset's job -> its nodes are powered on (target <= 2 s):
   slurmd's "Launching batch job" to the service's "computeset N running".
3. `cm comet start` -> nodes running, and where the time goes.
4. --together N: N one-node computesets started at the same moment -> all running,
   against one started alone (the baseline, same run), and how their power-ons overlapped.
With --qemu the nodes are real QEMU guests on the system libvirtd (the e2e guest).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from tests.comet.nucleus import PASSWORDS, Nucleus, free_ports, prefix, write_config  # noqa: E402
from tests.infra.slurm import SlurmCluster  # noqa: E402

SLURM_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})\] (.*)$")
SERVICE_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) cm_nucleus \w+ (.*)$")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def hammer(urls: list[str], headers: dict[str, str], clients: int, per_client: int) -> list[float]:
    """``clients`` concurrent keep-alive connections, each sending ``per_client`` GETs; latencies in s.

    A minimal asyncio HTTP/1.1 client: on 2 shared cores, a heavier client
    (requests in 50 threads) would spend more CPU than the service it measures.
    """
    import asyncio
    from urllib.parse import urlsplit

    async def client(index: int, latencies: list[float]) -> None:
        first = urlsplit(urls[0])
        reader, writer = await asyncio.open_connection(first.hostname, first.port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        for i in range(per_client):
            url = urlsplit(urls[(index + i) % len(urls)])
            target = url.path + (f"?{url.query}" if url.query else "")
            t0 = time.perf_counter()
            writer.write(f"GET {target} HTTP/1.1\r\nHost: {url.netloc}\r\n{extra}\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            assert head.startswith(b"HTTP/1.1 200"), head
        writer.close()

    async def run() -> list[float]:
        latencies: list[float] = []
        await asyncio.gather(*(client(i, latencies) for i in range(clients)))
        return latencies

    return asyncio.run(run())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def slurm_times(log: str, pattern: str) -> dict[str, datetime]:
    """Job id -> when a slurm log line matching ``pattern`` (with a (\\d+) job id group) was written."""
    found = {}
    for line in log.splitlines():
        m = SLURM_STAMP.match(line)
        if m and (j := re.search(pattern, m.group(2))):
            found.setdefault(j.group(1), datetime.fromisoformat(m.group(1)))
    return found


def service_times(log: str, pattern: str, last: bool = False) -> dict[str, datetime]:
    """Id -> when the service logged the first (or ``last``) line matching ``pattern`` (a (\\d+) id group)."""
    found: dict[str, datetime] = {}
    for line in log.splitlines():
        m = SERVICE_STAMP.match(line)
        if m and (j := re.search(pattern, m.group(2))) and (last or j.group(1) not in found):
            found[j.group(1)] = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
    return found


def qemu_hosts(work: Path) -> tuple[dict[str, str], Path]:
    from tests.e2e import guest, libvirtd
    from tests.comet.test_comet_e2e import DOMAIN

    kernel, initrd = guest.build_guest(Path(os.environ.get("CM_E2E_CACHE", Path.home() / ".cache" / "cm-e2e")))
    uri = libvirtd.start_libvirtd()
    template = work / "domain.xml"
    template.write_text(DOMAIN.replace("@KERNEL@", str(kernel)).replace("@INITRD@", str(initrd)))
    return {"n1": uri, "n2": uri, "n3": uri}, template


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--sets", type=int, default=5, help="computesets started for the start-latency figures")
    parser.add_argument("--qemu", action="store_true", help="real QEMU guests on the system libvirtd")
    parser.add_argument("--together", type=int, default=0, help="computesets started at once (at most 3)")
    parser.add_argument("--only-together", action="store_true", help="skip the listing and start figures")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cm-comet-bench-"))
    work.chmod(0o755)
    template = None
    if args.qemu:
        hosts, template = qemu_hosts(work)
    else:
        hosts = {}
        for name in ("n1", "n2", "n3"):
            (work / f"{name}.xml").write_text("<node></node>\n")
            hosts[name] = f"test://{work / name}.xml"
    slurm = SlurmCluster(prefix("comet-bench"), free_ports(4), nodes=3)
    service = None
    try:
        slurm.start()
        port = free_ports()
        config = write_config(work / "service", port, slurm.client_env, hosts, domain_xml=template,
                              computes="bvm-[0-3]", compute_hosts="n[1-3]")
        service = Nucleus(config, port).start()
        if not args.only_together:
            latency(service, args)
            start_figures(service, slurm, work, args)
        if args.together:
            together_figures(service, min(args.together, 3))
    finally:
        if service:
            service.stop()
        slurm.stop()
        if args.qemu:
            from tests.e2e import libvirtd

            libvirtd.stop_libvirtd()
        shutil.rmtree(work, ignore_errors=True)


def latency(service: Nucleus, args: argparse.Namespace) -> None:
    token = service.token()
    auth = {"Authorization": f"Token {token}"}
    for _ in range(2):  # a few computesets, so the listings have something in them
        requests.post(f"{service.base}/v1/computeset/", headers=auth, json={"cluster": "vc1", "count": "1",
                                                                           "walltime_mins": "30"}, timeout=60)
    lists = [f"{service.base}/v1/cluster/", f"{service.base}/v1/computeset/?state=running&state=submitted"]
    hammer(lists, auth, 5, 5)  # warm up
    base = hammer([f"{service.base}/openapi.json"], {}, args.clients, args.requests)
    cpu0 = cpu_seconds(service.proc.pid)
    measured = hammer(lists, auth, args.clients, args.requests)
    cpu = cpu_seconds(service.proc.pid) - cpu0
    p50, p99 = percentile(measured, 50) * 1000, percentile(measured, 99) * 1000
    b50, b99 = percentile(base, 50) * 1000, percentile(base, 99) * 1000
    print(f"{args.clients} concurrent clients, {len(measured)} listings (clusters and computesets, token auth); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores:")
    print(f"  p50 {p50:.1f} ms   p99 {p99:.1f} ms   (target p99 <= 100 ms: {'met' if p99 <= 100 else 'NOT met'})")
    print(f"  baseline, the static OpenAPI document: p50 {b50:.1f} ms  p99 {b99:.1f} ms;"
          f" ratio p99 {p99 / b99:.2f}x")
    print(f"  service CPU per listing {cpu / len(measured) * 1000:.2f} ms (what bounds throughput on an idle machine)")
    for cs in requests.get(f"{service.base}/v1/computeset/", headers=auth, params={"state": ["running", "submitted"]},
                           timeout=30).json():
        requests.put(f"{service.base}/v1/computeset/{cs['id']}/shutdown", headers=auth, timeout=30)
    time.sleep(3)


def start_figures(service: Nucleus, slurm: SlurmCluster, work: Path, args: argparse.Namespace) -> None:
    home = work / "cmhome"
    home.mkdir()
    env = {**os.environ, "CM_HOME": str(home), "PYTHONPATH": str(ROOT)}
    cm = [sys.executable, "-m", "cm.main"]
    subprocess.run([*cm, "cloud", "add", "bench", "--kind", "comet", f"base_url={service.base}", "username=alice",
                    f"password={PASSWORDS['alice']}"], env=env, check=True, capture_output=True)
    subprocess.run([*cm, "default", "cloud=bench"], env=env, check=True, capture_output=True)
    subprocess.run([*cm, "comet", "cluster"], env=env, check=True, capture_output=True)  # log in once
    walls, rows = [], []
    for _ in range(args.sets):
        t0 = time.time()
        proc = subprocess.run([*cm, "comet", "start", "vc1", "--count", "2", "--walltime", "30m", "-f", "json"],
                              env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
        t_end = time.time()
        if proc.returncode != 0:
            raise SystemExit(f"cm comet start failed: {proc.stderr}")
        cs = json.loads(proc.stdout)[0]
        walls.append(t_end - t0)
        rows.append((cs, t0, t_end))
        subprocess.run([*cm, "comet", "terminate", str(cs["id"])], env=env, capture_output=True)
        time.sleep(1.5)
    ctld = slurm.log("slurmctld")
    launched: dict[str, datetime] = {}
    for node in slurm.node_names:
        launched.update(slurm_times(slurm.log(f"slurmd-{node}"), r"Launching batch job (\d+)"))
    allocated = slurm_times(ctld, r"(?:sched|backfill).*Allocate JobId=(\d+)")
    log = (service.config.parent / "service.log").read_text()
    submitted = service_times(log, r"computeset (\d+): job \d+ submitted")
    running = service_times(log, r"computeset (\d+) running")
    powering = service_times(log, r"^computeset (\d+): powering on")  # the first node's start
    powered = service_times(log, r"^computeset (\d+): \S+ powered on in", last=True)  # the last node's end
    phases: dict[str, list[float]] = {k: [] for k in ("client start + POST + sbatch", "Slurm schedules",
                                                        "slurmd launches the script", "job start -> nodes on",
                                                        "client notices + exits")}
    split: dict[str, list[float]] = {k: [] for k in ("callback reaches the service", "libvirt creates the domains",
                                                       "state committed")}
    for cs, t0, t_end in rows:
        job, cid = cs["job_id"], str(cs["id"])
        if not all(job in d for d in (launched, allocated)) or cid not in submitted or cid not in running:
            continue
        ts = [datetime.fromtimestamp(t0), submitted[cid], allocated[job], launched[job], running[cid],
              datetime.fromtimestamp(t_end)]
        for (key, a, b) in zip(phases, ts, ts[1:]):
            phases[key].append((b - a).total_seconds())
        if cid in powering and cid in powered:
            for (key, a, b) in zip(split, [launched[job], powering[cid], powered[cid]],
                                   [powering[cid], powered[cid], running[cid]]):
                split[key].append((b - a).total_seconds())
    on = phases["job start -> nodes on"]
    kind = "real QEMU guests" if args.qemu else "libvirt test driver"
    print(f"Slurm job start -> nodes powered on ({kind}, {len(on)} computesets of 2 nodes):")
    if on:
        print(f"  median {statistics.median(on):.2f} s  max {max(on):.2f} s  (target <= 2 s: "
              f"{'met' if max(on) <= 2 else 'NOT met'})")
    else:
        print("  no matching log lines (see the slurmd and service logs)")
    print(f"`cm comet start vc1 --count 2` -> nodes running: median {statistics.median(walls):.2f} s over {len(walls)}")
    for key, values in phases.items():
        if values:
            print(f"  {key:32s} median {statistics.median(values):.2f} s")
            if key == "job start -> nodes on":
                for part, times in split.items():
                    if times:
                        print(f"    {part:30s} median {statistics.median(times):.2f} s  max {max(times):.2f} s")
    per_node = [float(m) for m in re.findall(r"computeset \d+: \S+ powered on in ([\d.]+) s", log)]
    if per_node:
        print(f"  one node's power on (each, in parallel): median {statistics.median(per_node):.2f} s"
              f"  max {max(per_node):.2f} s")
    start = [sys.executable, "-m", "cm.main", "--version"]
    t0 = time.perf_counter()
    subprocess.run(start, env=env, capture_output=True)
    print(f"  (of which starting cm itself: `cm --version` {time.perf_counter() - t0:.2f} s)")


def together_figures(service: Nucleus, count: int, rounds: int = 3) -> None:
    """Computesets started at the same moment, each of one node on its own host, against one alone."""
    from concurrent.futures import ThreadPoolExecutor

    auth = {"Authorization": f"Token {service.token()}"}

    def start_and_wait(node: str) -> tuple[float, str]:
        t0 = time.perf_counter()
        cs = requests.post(f"{service.base}/v1/computeset/", headers=auth, timeout=60,
                           json={"cluster": "vc1", "computes": node, "walltime_mins": "30"}).json()
        while requests.get(f"{service.base}/v1/computeset/{cs['id']}/", headers=auth,
                           timeout=30).json()["state"] != "running":
            time.sleep(0.02)
        took = time.perf_counter() - t0
        requests.put(f"{service.base}/v1/computeset/{cs['id']}/shutdown", headers=auth, timeout=30)
        return took, str(cs["id"])

    def settle() -> None:  # the nodes are free again once their computesets ended
        while requests.get(f"{service.base}/v1/computeset/", headers=auth, timeout=30,
                           params={"state": ["submitted", "running", "ending"]}).json():
            time.sleep(0.2)

    alone, together, groups = [], [], []
    for _ in range(rounds):
        alone.append(start_and_wait("bvm-0")[0])
        settle()
        with ThreadPoolExecutor(count) as pool:
            results = list(pool.map(start_and_wait, [f"bvm-{i}" for i in range(count)]))
        together.append(max(t for t, _ in results))
        groups.append([cid for _, cid in results])
        settle()
    log = (service.config.parent / "service.log").read_text()
    began = service_times(log, r"^computeset (\d+): powering on")
    done = service_times(log, r"^computeset (\d+): \S+ powered on in", last=True)
    print(f"{count} computesets started at once -> all running, {rounds} rounds "
          f"(load average {os.getloadavg()[0]:.1f}):")
    print(f"  alone     median {statistics.median(alone):.2f} s")
    ratio = statistics.median(together) / statistics.median(alone)
    print(f"  together  median {statistics.median(together):.2f} s   ratio {ratio:.2f}x")
    for ids in groups:
        if not all(c in began and c in done for c in ids):
            continue
        spans = [(done[c] - began[c]).total_seconds() for c in ids]
        window = (max(done[c] for c in ids) - min(began[c] for c in ids)).total_seconds()
        spread = (max(began[c] for c in ids) - min(began[c] for c in ids)).total_seconds()
        overlapped = max(began[c] for c in ids) < min(done[c] for c in ids)
        print(f"  round: power-ons {', '.join(f'{x:.2f}' for x in spans)} s; first start to last done {window:.2f} s "
              f"(taking turns: at least {sum(spans):.2f} s); starts spread {spread:.2f} s; "
              f"{'all overlapped' if overlapped else 'not all overlapped'}")


if __name__ == "__main__":
    main()
