"""Batch jobs in the mirror (kind "job", named by the job id, per cloud).

Jobs cm submitted carry what only cm knows (the job directory on the login
host, where their output was fetched to) and stay in the mirror after Slurm
forgets them; other users' and other tools' jobs mirror the last queue seen.
"""

from __future__ import annotations

import time
from typing import Any

from cm.errors import NotFound, UsageError

KIND = "job"
ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
         "OUT_OF_MEMORY", "REVOKED", "SPECIAL_EXIT"}
UNKNOWN_JOB = "no such job"  # a provider's cancel answer for a job id the system never had
OWN = ("remote_dir", "script", "submitted_by_cm", "fetched_to")  # fields only cm knows
# squeue's format has no exit code, a submission record no user: keep what was known
STICKY = ("exit_code", "workdir", "account", "user", "submitted", "started", "partition", "job_name", "time_limit")


def ended(record: dict[str, Any]) -> bool:
    """True once the job left the queue for good (COMPLETED, CANCELLED by 0 ...)."""
    return str(record.get("state", "")).split(" ")[0] in ENDED


def record_submitted(ctx: Any, cloud: str, job_id: int, name: str, script: str, remote_dir: str,
                     options: list[str]) -> dict[str, Any]:
    """Remember a job cm just submitted (state PENDING until Slurm says more)."""
    record = {"name": str(job_id), "id": job_id, "job_name": name, "state": "PENDING", "script": script,
              "remote_dir": remote_dir, "options": options, "submitted_by_cm": True,
              "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"), "user": "", "partition": "", "nodes": ""}
    ctx.mirror.put(KIND, cloud, record)
    return record


def merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Slurm's fresh view of a job, keeping what only cm knows about it."""
    merged = dict(new)
    for key in (*OWN, "options"):
        if old and key in old:
            merged[key] = old[key]
    for key in STICKY:  # a field one of Slurm's sources leaves blank does not erase what another said
        if merged.get(key) in ("", None) and (old or {}).get(key) not in ("", None):
            merged[key] = old[key]
    return merged


def update(ctx: Any, cloud: str, rows: list[dict[str, Any]]) -> None:
    """Store Slurm's view of some jobs."""
    if not rows:
        return
    with ctx.mirror.transaction():
        for row in rows:
            ctx.mirror.put(KIND, cloud, merge(ctx.mirror.get(KIND, cloud, row["name"]), row))


def fetch(ctx: Any, provider: Any, user: str | None = None) -> list[dict[str, Any]]:
    """One system's jobs now: its queue, plus accounting's word on cm's jobs the queue forgot (no mirror write)."""
    rows = provider.list_jobs(user)
    missing = forgotten(ctx, provider.name, rows)
    if missing:
        rows += list(provider.get_jobs(missing).values())
    return rows


def replace_queue(ctx: Any, cloud: str, rows: list[dict[str, Any]], user: str | None = None) -> int:
    """The mirror after a full queue refresh: the queue's jobs, plus cm's own jobs Slurm has forgotten
    (and, when only one user's queue was read, everyone else's jobs as they were)."""
    old = {r["name"]: r for r in ctx.mirror.records(KIND, cloud)}
    fresh = {row["name"]: merge(old.get(row["name"]), row) for row in rows}
    for name, record in old.items():
        if name in fresh:
            continue
        if record.get("submitted_by_cm") or (user and record.get("user") != user):
            fresh[name] = record
    return ctx.mirror.replace(KIND, cloud, [{k: v for k, v in r.items() if k not in ("cloud", "kind", "_schema")}
                                            for r in fresh.values()])


def forgotten(ctx: Any, cloud: str, rows: list[dict[str, Any]]) -> list[int]:
    """cm's own jobs the mirror thinks unfinished that are not in ``rows`` (Slurm's queue forgot them)."""
    seen = {row["name"] for row in rows}
    return [int(r["name"]) for r in ctx.mirror.records(KIND, cloud)
            if r.get("submitted_by_cm") and not ended(r) and r["name"] not in seen]


def job_ids(words: list[str]) -> list[int]:
    """JOBID arguments, hostlists allowed (``12[3-5]``, ``10,11``), as numbers."""
    from cm.names import expand

    ids = []
    for name in expand(words):
        if not name.isdigit():
            raise UsageError(f"bad job id '{name}': a job id is a number (hostlists such as 12[3-5] allowed)")
        ids.append(int(name))
    return ids


def known(ctx: Any, cloud: str, job_id: int) -> dict[str, Any]:
    """The mirror's record of a job cm submitted (for get); NotFound when cm never submitted it."""
    record = ctx.mirror.get(KIND, cloud, str(job_id))
    if not record or not record.get("remote_dir"):
        raise NotFound(f"job {job_id} on cloud '{cloud}' was not submitted by cm (see `cm hpc queue`)")
    return record
