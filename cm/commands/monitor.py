"""`cm monitor`: collect, store, show and understand the resource use of VMs and their hosts."""

from __future__ import annotations

import re
import time
from argparse import ArgumentParser, Namespace
from typing import Any

from cm.commands import add_cloud_option, completes, subcommands, verb
from cm.errors import NotFound, UsageError
from cm.output import add_format_options

HELP = "Monitor VMs and hosts: collect samples, show dashboards, learn workload profiles, find bottlenecks."
EXAMPLE = "cm monitor start mycluster --interval 1s"

UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
STATUS_COLUMNS = ["running", "pid", "interval", "retention", "targets", "sampling", "samples", "nodes", "last_sample",
                  "store", "store_size"]


def seconds(text: str, what: str = "duration") -> float:
    """``1s``, ``500ms``, ``10m``, ``2h``, ``7d`` (a bare number is seconds) as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*", str(text))
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"bad {what} '{text}' (use a positive number with ms, s, m, h, d or w: 1s, 10m, 7d)")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]


def _store(ctx):
    from cm.monitoring.store import Store, path_in

    return Store(path_in(ctx.home))


# -- collection -----------------------------------------------------------------------------------
def start(ctx, args: Namespace) -> int:
    from cm.monitoring import daemon, targets

    interval = seconds(args.interval, "interval")
    retention = seconds(args.retention or ctx.value("monitor_retention") or "7d", "retention")
    cloud, names = targets.resolve(ctx, args)
    pid = daemon.start(ctx.home, {cloud: names}, interval, retention)
    ctx.say(f"collector started (pid {pid}): {len(names)} VM(s) on cloud '{cloud}' every {interval:g} s")
    return 0


def stop(ctx, args: Namespace) -> int:
    from cm.monitoring import daemon

    pid = daemon.stop(ctx.home)
    ctx.say("no collector runs" if pid is None else f"collector stopped (pid {pid})")
    return 0


def status(ctx, args: Namespace) -> None:
    from cm.monitoring import daemon

    pid = daemon.running_pid(ctx.home)
    conf = daemon.settings(ctx.home)
    with _store(ctx) as store:
        last = store.last_time()
        record = {"running": pid is not None, "pid": pid or "", "interval": conf.get("interval", ""),
                  "retention": conf.get("retention", ""),
                  "targets": ", ".join(f"{c}: {','.join(n)}" for c, n in conf.get("targets", {}).items()),
                  "sampling": "; ".join(f"{c}: {_sampling(ctx, c)}" for c in conf.get("targets", {})),
                  "samples": store.count(), "nodes": len(store.nodes()),
                  "last_sample": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last / 1000)) if last else "",
                  "store": str(store.path), "store_size": _size(store.path)}
    ctx.emit_one(record, args)


def _sampling(ctx, cloud: str) -> str:
    """How the collector reads a cloud's VMs: what its provider says, else the guests over ssh."""
    from cm.errors import CmError
    from cm.plugins import provider_class

    try:
        kind = provider_class(ctx.config.cloud(cloud)["kind"])
    except (CmError, KeyError):
        return "unknown (the cloud is gone)"
    if "vm_stats" not in kind.verbs():
        return "each guest's /proc over ssh every interval"
    return getattr(kind, "SAMPLING", "") or "the hypervisor's statistics every interval"


def _size(path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


# -- looking ------------------------------------------------------------------------------------
def _window(args: Namespace) -> tuple[float, float]:
    """(start, end) epoch seconds: from --since ago to --until ago (default now)."""
    now = time.time()
    start = now - seconds(args.since, "--since")
    end = now - (seconds(args.until, "--until") if getattr(args, "until", None) else 0)
    if start >= end:
        raise UsageError(f"--since {args.since} must reach further back than --until {args.until}")
    return start, end


def _nodes(ctx, args: Namespace, store) -> list[dict[str, Any]]:
    """The stored nodes the command means, with the hosts their VMs ran on."""
    from cm.monitoring import targets

    wanted = targets.stored_names(ctx, args)
    nodes = store.nodes(wanted or None)
    if wanted:
        missing = sorted(set(wanted) - {n["name"] for n in nodes})
        if missing:
            raise NotFound(f"no samples of {', '.join(missing)} (is it monitored? see `cm monitor status`)")
        hosts = {n["host"] for n in nodes if n["host"]}
        nodes += [n for n in store.nodes(hosts, kind="host") if n not in nodes]
    return nodes


def show(ctx, args: Namespace) -> None:
    from cm.monitoring import dashboard

    start, end = _window(args)
    with _store(ctx) as store:
        nodes = _nodes(ctx, args, store)
        series = [s for s in (dashboard.load(store, n, start, end, dashboard.WIDTH) for n in nodes) if s]
        if not series:
            raise NotFound(f"no samples in the last {args.since} (is the collector running? see `cm monitor status`)")
        if args.png:
            detail = [s for s in (dashboard.load(store, n, start, end, dashboard.PNG_BINS) for n in nodes) if s]
    if args.png:
        title = f"{' '.join(args.targets) or 'all nodes'}: {time.strftime('%H:%M:%S', time.localtime(start))}" \
                f" - {time.strftime('%H:%M:%S', time.localtime(end))}"
        dashboard.png(detail, args.png, title)
        ctx.warn(f"dashboard written to {args.png}")
    ctx.emit(dashboard.COLUMNS, dashboard.rows(series), args)


def export(ctx, args: Namespace) -> None:
    from cm.monitoring import export as exporter

    if args.format == "parquet" and not args.output:
        raise UsageError("--format parquet needs --output FILE")
    since = time.time() - seconds(args.since, "--since") if args.since else 0
    with _store(ctx) as store:
        nodes = _nodes(ctx, args, store)
        if not nodes:
            raise NotFound("no samples to export (see `cm monitor status`)")
        rows = store.iter_rows([n["id"] for n in nodes], int(since * 1000))
        text = exporter.write(rows, args.format, args.output)
    if text is not None:
        ctx.out(text)
    else:
        ctx.warn(f"samples written to {args.output}")


# -- runs, profiles, bottlenecks -----------------------------------------------------------------
def run_add(ctx, args: Namespace) -> None:
    from cm.monitoring import runs

    with _store(ctx) as store:
        if args.job:
            run = runs.from_slurm(args.job, args.name)
        else:
            if not args.name or not args.nodes:
                raise UsageError("give the run's NAME and NODES (a hostlist), or --job JOBID")
            from cm.names import expand

            start, end = _window(args)
            run = {"name": args.name, "nodes": expand([args.nodes]), "start": int(start * 1000),
                   "end": int(end * 1000), "source": "window"}
        run["label"] = args.label or ""
        run["name"] = args.name or run["name"]
        store.save_run(run)
        joined = sum(len(store.samples(n["id"], run["start"], run["end"])) for n in store.nodes(run["nodes"]))
        ctx.emit_one({**runs.display(run), "samples": joined}, args)


def run_list(ctx, args: Namespace) -> None:
    from cm.monitoring import runs

    with _store(ctx) as store:
        ctx.emit(runs.COLUMNS, [runs.display(r) for r in store.runs()], args)


def run_delete(ctx, args: Namespace) -> None:
    with _store(ctx) as store:
        if not store.delete_run(args.name):
            raise NotFound(f"unknown run '{args.name}' (see `cm monitor run list`)")
    ctx.say(f"run {args.name} deleted")


def profile_learn(ctx, args: Namespace) -> None:
    from cm.monitoring import profiles

    with _store(ctx) as store:
        model = profiles.learn(store, args.runs or None, k=args.k)
        store.save_model(model)
    ctx.emit(profiles.PROFILE_COLUMNS, profiles.profile_rows(model), args)


def profile_list(ctx, args: Namespace) -> None:
    from cm.monitoring import profiles

    with _store(ctx) as store:
        model = profiles.stored(store)
    ctx.emit(profiles.PROFILE_COLUMNS, profiles.profile_rows(model), args)


def check(ctx, args: Namespace) -> int:
    from cm.monitoring import profiles

    with _store(ctx) as store:
        verdict = profiles.check(store, args.run_name)
    ctx.emit_one(verdict, args)
    return 0


def tune(ctx, args: Namespace) -> int:
    from cm.monitoring import profiles, tuning

    with _store(ctx) as store:
        verdict = profiles.check(store, args.run_name)
        run = store.runs([args.run_name])[0]
        target = tuning.least_loaded_host(store, ctx.cloud_name(args), run) if verdict["level"] == "host" else None
    changes = tuning.suggest(ctx, args, run, verdict, target)
    failed = tuning.apply(ctx, args, changes) if args.apply or args.dryrun else False
    ctx.emit(tuning.COLUMNS, [{k: v for k, v in row.items() if not k.startswith("_")} for row in changes], args)
    return 1 if failed else 0


# -- the parser -----------------------------------------------------------------------------------
def _targets(parser: ArgumentParser) -> None:
    completes(parser.add_argument("targets", nargs="*", metavar="CLUSTER|NAMES",
                                  help="a cluster, or VM names (hostlists such as node[01-04]); default: every VM"),
              "vm")
    add_cloud_option(parser)


def _window_options(parser: ArgumentParser, since: str = "10m") -> None:
    parser.add_argument("--since", default=since, help=f"how far back the window starts (default {since})")
    parser.add_argument("--until", help="how far back the window ends (default now)")


def build(parser: ArgumentParser) -> None:
    subs = subcommands(parser)
    p = verb(subs, "start", start, "start the background collector", "cm monitor start node[01-04] --interval 1s")
    _targets(p)
    p.add_argument("--interval", default="1s", help="time between samples (default 1s)")
    p.add_argument("--retention", help="how long samples are kept (default: the monitor_retention default, else 7d)")
    verb(subs, "stop", stop, "stop the collector (it finishes the sample in flight)")
    p = verb(subs, "status", status, "whether the collector runs, what it samples, the store's size")
    add_format_options(p)
    p = verb(subs, "show", show, "dashboard of CPU, memory, disk and network per node and for all",
             "cm monitor show mycluster --since 30m --png dash.png")
    _targets(p)
    _window_options(p)
    p.add_argument("--png", metavar="FILE", help="also draw the dashboard into a PNG file (needs matplotlib)")
    add_format_options(p)
    p = verb(subs, "export", export, "write samples as CSV or Parquet for other tools",
             "cm monitor export --format parquet --output samples.parquet")
    _targets(p)
    p.add_argument("--format", choices=("csv", "parquet"), default="csv", help="file format (default csv)")
    p.add_argument("--output", "-o", metavar="FILE", help="file to write (csv default: stdout)")
    p.add_argument("--since", help="only samples this recent (default: all)")
    run = verb(subs, "run", None, "runs: a Slurm job or a time window on nodes, to learn from and check")
    runs = subcommands(run)
    p = verb(runs, "add", run_add, "record a run", "cm monitor run add train-1 node[01-04] --since 20m --label cpu")
    p.add_argument("name", metavar="NAME", nargs="?", help="the run's name (default for a job: job-JOBID)")
    p.add_argument("nodes", nargs="?", metavar="NODES", help="the run's nodes (a hostlist)")
    p.add_argument("--job", metavar="JOBID", help="a Slurm job: its nodes and times from sacct (sstat while it runs)")
    p.add_argument("--label", help="what you know the run was (kept for your reference)")
    _window_options(p)
    add_format_options(p)
    p = verb(runs, "list", run_list, "the recorded runs")
    add_format_options(p)
    p = verb(runs, "delete", run_delete, "forget a run")
    p.add_argument("name", metavar="NAME")
    profile = verb(subs, "profile", None, "workload profiles learnt from runs")
    profs = subcommands(profile)
    p = verb(profs, "learn", profile_learn, "group runs into workload profiles (scikit-learn)",
             "cm monitor profile learn")
    p.add_argument("runs", nargs="*", metavar="RUNS", help="the runs to learn from (default: every run)")
    p.add_argument("--k", type=int, help="number of profiles (default: chosen by silhouette)")
    add_format_options(p)
    p = verb(profs, "list", profile_list, "the learnt profiles")
    add_format_options(p)
    p = verb(subs, "check", check, "nearest profile, whether the run deviates, and its bottleneck",
             "cm monitor check train-2")
    p.add_argument("run_name", metavar="RUN")
    add_format_options(p)
    p = verb(subs, "tune", tune, "the change that addresses a run's bottleneck; --apply makes it",
             "cm monitor tune train-2 --apply")
    p.add_argument("run_name", metavar="RUN")
    p.add_argument("--apply", action="store_true", help="make the change on the running VMs (kvm)")
    p.add_argument("--dryrun", action="store_true", help="say what --apply would do")
    add_cloud_option(p)
    add_format_options(p)
