"""`cm hpc`: batch jobs on Slurm systems (clouds of kind slurm), mirrored so queue answers offline."""

from __future__ import annotations

import time
from argparse import ArgumentParser, Namespace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cm.commands import add_cloud_option, subcommands, verb
from cm.errors import CmError, NotFound, ProviderError, UsageError
from cm.jobs import store
from cm.jobs.systems import each_cloud, slurm_cloud, slurm_clouds
from cm.output import add_format_options

if TYPE_CHECKING:  # for annotations only: start-up imports nothing more
    from cm.context import Context

HELP = "Batch jobs on HPC systems (Slurm over ssh): run, queue, status, cancel, get output, info."
EXAMPLE = "cm hpc run job.sh --nodes 2 --time 1h --wait"
COLUMNS = ["id", "cloud", "job_name", "user", "state", "partition", "node_count", "nodes", "time_limit",
           "submitted", "started", "ended", "reason", "exit_code"]
QUEUE_COLUMNS = ["id", "cloud", "job_name", "user", "state", "partition", "node_count", "nodes", "time_limit",
                 "started", "reason"]


def run_job(ctx: Context, args: Namespace) -> int | None:
    """Check, copy the script and its inputs to a fresh job directory, sbatch it, remember it."""
    from cm.jobs.request import build_request, check_against

    cloud = slurm_cloud(ctx, args)
    request = build_request(args)  # local checks first: nothing is sent for a bad command line
    provider = ctx.provider(cloud)
    try:
        check_against(request, provider.probe(request.options), cloud)
        remote_dir = request.remote_dir(provider.jobs_dir())
        job_id = provider.submit(request.files(), remote_dir, request.script.name, request.options)
    finally:
        request.discard()
    record = store.record_submitted(ctx, cloud, job_id, request.name, request.script.name, remote_dir,
                                    request.options)
    if not args.wait:
        ctx.emit_one({k: record[k] for k in ("id", "job_name", "state", "remote_dir")} | {"cloud": cloud}, args)
        return None
    ctx.warn(f"submitted job {job_id} to {cloud}; waiting for it to end")
    final = wait_for_job(ctx, cloud, job_id, args.timeout)
    files = fetch_output(ctx, cloud, final, Path(args.output) if args.output else None)
    ctx.emit_one({k: final.get(k, "") for k in ("id", "job_name", "state", "nodes", "exit_code", "fetched_to")}
                 | {"cloud": cloud, "files": files}, args)
    return 0 if str(final.get("state")) == "COMPLETED" else 1


def wait_for_job(ctx: Context, cloud: str, job_id: int, timeout: float | None) -> dict[str, Any]:
    """Poll Slurm until the job ended; store each state seen.  Ctrl-C stops waiting, not the job."""
    from cm.bulk import pause, waiting

    provider = ctx.provider(cloud)
    deadline = time.monotonic() + timeout if timeout else None
    interval = 0.5
    try:
        with waiting(f"job {job_id} on {cloud}"):
            while True:
                states = provider.get_jobs([job_id])
                if job_id in states:
                    store.update(ctx, cloud, [states[job_id]])
                record = ctx.mirror.get(store.KIND, cloud, str(job_id)) or {}
                if store.ended(record):
                    return record
                if deadline and time.monotonic() >= deadline:
                    raise ProviderError(f"job {job_id} is still {record.get('state', 'PENDING')} after {timeout:g} s;"
                                        f" it keeps running (`cm hpc status {job_id}`)")
                pause(interval)
                interval = min(interval * 1.5, 5.0)
    except KeyboardInterrupt:
        ctx.warn(f"cm: stopped waiting for job {job_id}; it keeps running (`cm hpc status {job_id}`, "
                 f"`cm hpc get {job_id}`)")
        raise


def fetch_output(ctx: Context, cloud: str, record: dict[str, Any], dest: Path | None) -> list[str]:
    """Copy the job directory back (default ./NAME-ID) and remember where it went."""
    dest = (dest or Path.cwd() / f"{record.get('job_name') or 'job'}-{record['name']}").resolve()
    files = ctx.provider(cloud).fetch(record["remote_dir"], dest)
    record["fetched_to"] = str(dest)
    store.update(ctx, cloud, [{k: v for k, v in record.items() if k not in ("cloud", "kind", "_schema")}])
    return sorted(files)


def queue(ctx: Context, args: Namespace) -> int | None:
    """Jobs from the mirror; --refresh asks every system at once first."""
    clouds = slurm_clouds(ctx, args)
    if not clouds:
        raise NotFound("no HPC systems: add one with `cm cloud add NAME --kind slurm host=LOGIN`")
    code = None
    if args.refresh:
        results = each_cloud(ctx, clouds, lambda provider: store.fetch(ctx, provider, args.user))
        with ctx.mirror.transaction():  # one write of the mirror for every system
            for cloud, result in results.items():
                if isinstance(result, CmError):
                    ctx.warn(f"cm: {result} (showing what the mirror had)")
                    code = 1
                else:
                    store.replace_queue(ctx, cloud, result, args.user)
    rows = [r for cloud in clouds for r in ctx.mirror.records(store.KIND, cloud)
            if not args.user or r.get("user") == args.user]
    if args.state:
        rows = [r for r in rows if str(r.get("state", "")).split(" ")[0] in {s.upper() for s in args.state}]
    rows.sort(key=lambda r: (r.get("cloud", ""), int(r.get("id") or 0)))
    ctx.emit(QUEUE_COLUMNS, rows, args)
    return code


def status(ctx: Context, args: Namespace) -> int | None:
    """Slurm's current word on each job (queue, else accounting), stored and shown."""
    cloud = slurm_cloud(ctx, args)
    ids = store.job_ids(args.ids)
    found = ctx.provider(cloud).get_jobs(ids)
    store.update(ctx, cloud, list(found.values()))
    rows = [ctx.mirror.get(store.KIND, cloud, str(i)) for i in ids if i in found]
    missing = [i for i in ids if i not in found]
    if missing and not rows:
        raise NotFound(f"no job {_ids(missing)} on cloud '{cloud}' (Slurm knows no such job)")
    ctx.emit(COLUMNS, rows, args)
    if missing:
        ctx.warn(f"cm: no job {_ids(missing)} on cloud '{cloud}' (Slurm knows no such job)")
        return 1
    return None


def _ids(ids: list[int]) -> str:
    from cm.names import collect

    return collect([str(i) for i in ids])


def cancel(ctx: Context, args: Namespace) -> int:
    """scancel each job; a per-job result and a summary, exit 1 if any failed."""
    from cm.bulk import Outcome, report

    cloud = slurm_cloud(ctx, args)
    ids = store.job_ids(args.ids)
    provider = ctx.provider(cloud)
    results = provider.cancel(ids)
    if all(why == store.UNKNOWN_JOB for why in results.values()):  # nothing to cancel: bad input, said in one line
        raise NotFound(f"no job {_ids(ids)} on cloud '{cloud}' (Slurm knows no such job)")
    done = [i for i, why in results.items() if not why]
    if done:
        store.update(ctx, cloud, list(provider.get_jobs(done).values()))
    outcomes = [Outcome(str(i), not why, why) for i, why in results.items()]
    return report(ctx, cloud, outcomes, "cancelled", args, key="id")


def get(ctx: Context, args: Namespace) -> None:
    """Copy a job's directory (its output files) back."""
    cloud = slurm_cloud(ctx, args)
    ids = store.job_ids([args.id])
    if len(ids) != 1:
        raise UsageError("hpc get: give one job id")
    job_id = ids[0]
    record = store.known(ctx, cloud, job_id)
    files = fetch_output(ctx, cloud, record, Path(args.dir) if args.dir else None)
    ctx.emit(["file", "job", "cloud", "to"], [{"file": f, "job": job_id, "cloud": cloud, "to": record["fetched_to"]}
                                               for f in files], args)


def info(ctx: Context, args: Namespace) -> int | None:
    """Partitions with their node states (sinfo's view), or one row per node with --nodes."""
    from cm.names import collect

    clouds = slurm_clouds(ctx, args)
    results = each_cloud(ctx, clouds, lambda provider: provider.info())
    rows, code = [], None
    for cloud, result in results.items():
        if isinstance(result, CmError):
            ctx.warn(f"cm: {result}")
            code = 1
            continue
        partitions, nodes = result
        if args.nodes:
            rows += [{**n, "cloud": cloud} for n in nodes]
            continue
        for part in partitions:
            members = [n for n in nodes if part["name"] in n["partitions"]]
            by_state: dict[str, list[str]] = {}
            for node in members:
                by_state.setdefault(node["state"], []).append(node["name"])
            for state, names in sorted(by_state.items()) or [("", [])]:
                rows.append({"partition": part["name"] + ("*" if part["default"] else ""), "cloud": cloud,
                             "avail": part["state"].lower(), "max_time": part["max_time"],
                             "nodes": len(names), "state": state, "nodelist": collect(names) if names else ""})
    columns = (["name", "cloud", "state", "partitions", "cpus", "alloc_cpus", "memory", "address", "reason"]
               if args.nodes else ["partition", "cloud", "avail", "max_time", "nodes", "state", "nodelist"])
    ctx.emit(columns, rows, args)
    return code


def build(parser: ArgumentParser) -> None:
    subs = subcommands(parser)
    run = verb(subs, "run", run_job, "copy a batch script and its inputs to the system and submit it with sbatch",
               example="cm hpc run job.sh --nodes 2 --time 2h --partition debug --wait --output results/")
    run.add_argument("script", nargs="?", metavar="SCRIPT",
                     help="a batch script; '#CM input FILE' lines name files that travel with it")
    run.add_argument("--command", metavar="CMD", help="run this shell command instead of a script")
    run.add_argument("--input", action="append", metavar="FILE", help="another file to copy with it (repeatable)")
    run.add_argument("--nodes", "-N", type=int, metavar="N", help="nodes (sbatch --nodes)")
    run.add_argument("--ntasks", "-n", type=int, metavar="N", help="tasks (sbatch --ntasks)")
    run.add_argument("--time", "-t", metavar="LIMIT", help="time limit: 2h, 90m, 1d12h, or Slurm's HH:MM:SS")
    run.add_argument("--partition", "-p", metavar="NAME")
    run.add_argument("--account", "-A", metavar="NAME")
    run.add_argument("--name", "-J", metavar="NAME", help="the job's name (default: the script's name)")
    run.add_argument("--wait", action="store_true", help="follow the job to its end and fetch its output")
    run.add_argument("--timeout", type=float, metavar="SECONDS", help="with --wait: give up waiting after this")
    run.add_argument("--output", "-o", metavar="DIR", help="with --wait: fetch the output here (default ./NAME-ID)")
    add_cloud_option(run)
    add_format_options(run)

    q = verb(subs, "queue", queue, "list jobs (from the mirror; --refresh asks the systems)",
             example="cm hpc queue --cloud all --refresh -c id -c state")
    q.add_argument("--user", "-u", metavar="USER", help="only this user's jobs")
    q.add_argument("--state", action="append", metavar="STATE", help="only jobs in this state (repeatable)")
    q.add_argument("--refresh", action="store_true", help="sync the mirror from the systems first")
    add_cloud_option(q, allow_all=True)
    add_format_options(q)

    st = verb(subs, "status", status, "ask Slurm for the state of jobs", example="cm hpc status 12[3-5]")
    st.add_argument("ids", nargs="+", metavar="JOBID", help="job ids; hostlists such as 12[3-5] allowed")
    add_cloud_option(st)
    add_format_options(st)

    ca = verb(subs, "cancel", cancel, "cancel jobs (scancel)", example="cm hpc cancel 123 12[5-7]")
    ca.add_argument("ids", nargs="+", metavar="JOBID", help="job ids; hostlists allowed")
    add_cloud_option(ca)
    add_format_options(ca)

    g = verb(subs, "get", get, "copy a job's directory (its output) back", example="cm hpc get 123 results/")
    g.add_argument("id", metavar="JOBID")
    g.add_argument("dir", nargs="?", metavar="DIR", help="where to put it (default ./NAME-ID)")
    add_cloud_option(g)
    add_format_options(g)

    i = verb(subs, "info", info, "partitions, nodes and their states", example="cm hpc info --nodes")
    i.add_argument("--nodes", action="store_true", help="one row per node")
    add_cloud_option(i, allow_all=True)
    add_format_options(i)
