"""Slurm's machine-readable output turned into plain job, node and partition rows.

``squeue --json`` and ``sinfo --json`` (Slurm 21.08 and later, through the openapi
serializer plugins; 22.05 has them), ``sacct --parsable2`` (``|``-separated,
no trailing delimiter) and ``scontrol show partition --oneliner`` (KEY=VALUE).
"""

from __future__ import annotations

import json
import time
from typing import Any

from cm.errors import ProviderError, UsageError

# sacct fields cm reads, in order (also the jobcomp file's: `sacct -c` knows them all).
SACCT_FIELDS = ["JobID", "JobName", "User", "State", "Partition", "NodeList", "NNodes", "Timelimit", "Submit",
                "Start", "End", "ExitCode", "WorkDir", "Account"]


def _when(epoch: Any) -> str:
    """An epoch second as local ISO time; 0/None/far future (not known yet) as ''."""
    try:
        value = int(epoch)
    except (TypeError, ValueError):
        return ""
    if value <= 0 or value > time.time() + 5 * 365 * 86400:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(value))


def _limit(minutes: Any) -> str:
    """A time limit in minutes as Slurm writes it (D-HH:MM:SS), or UNLIMITED."""
    if minutes in (None, "", 0) or (isinstance(minutes, int) and minutes >= 0xFFFFFFFE):
        return "UNLIMITED"
    minutes = int(minutes)
    days, rest = divmod(minutes, 1440)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


def _json(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProviderError(f"{what} did not answer JSON: {text.strip()[:120]!r}") from exc
    errors = [e.get("error") or e.get("description") or str(e) for e in data.get("errors") or []]
    if errors:
        raise ProviderError(f"{what}: {errors[0]}")
    return data


def job_from_squeue(job: dict[str, Any]) -> dict[str, Any]:
    """One job of ``squeue --json`` as a cm job row."""
    exit_code = job.get("exit_code")
    return {"name": str(job["job_id"]), "id": int(job["job_id"]), "job_name": job.get("name", ""),
            "user": job.get("user_name", ""), "state": str(job.get("job_state", "")).upper(),
            "partition": job.get("partition", ""), "nodes": job.get("nodes", ""),
            "node_count": job.get("node_count", 0), "time_limit": _limit(job.get("time_limit")),
            "submitted": _when(job.get("submit_time")), "started": _when(job.get("start_time")),
            "ended": _when(job.get("end_time")) if str(job.get("job_state")) not in ("PENDING", "RUNNING") else "",
            "reason": "" if job.get("state_reason") in (None, "None") else job.get("state_reason"),
            "exit_code": exit_code if isinstance(exit_code, int) else "", "account": job.get("account", ""),
            "workdir": job.get("current_working_directory", "")}


# `squeue --format` fields for the queue, the job name last (it may hold anything), separated by
# the ASCII unit separator.  For 1,000 jobs this is 0.03 s and 0.1 MB against `squeue --json`'s
# 0.33 s and 3 MB on Slurm 22.05, so the queue uses it; status (a few jobs) uses --json.
SEP = "\x1f"
QUEUE_FIELDS = ["%i", "%u", "%T", "%P", "%D", "%N", "%l", "%V", "%S", "%e", "%r", "%a", "%Z", "%j"]
QUEUE_FORMAT = SEP.join(QUEUE_FIELDS)


def squeue_rows(text: str) -> list[dict[str, Any]]:
    """The jobs of ``squeue --noheader --format=QUEUE_FORMAT``."""
    rows = []
    for line in text.splitlines():
        cells = line.split(SEP, len(QUEUE_FIELDS) - 1)
        if len(cells) != len(QUEUE_FIELDS) or not cells[0].strip().isdigit():
            continue
        job, user, state, part, count, nodes, limit, submit, start, end, reason, account, workdir, name = \
            [c.strip() for c in cells]
        rows.append({"name": job, "id": int(job), "job_name": name, "user": user, "state": state.upper(),
                     "partition": part, "nodes": nodes, "node_count": int(count) if count.isdigit() else 0,
                     "time_limit": _format_limit(limit), "submitted": _sacct_time(submit),
                     "started": _sacct_time(start) if state != "PENDING" else "",  # pending: a forecast
                     "ended": _sacct_time(end) if state not in ("PENDING", "RUNNING", "COMPLETING") else "",
                     "reason": "" if reason in ("None", "(null)") else reason,
                     "exit_code": "", "account": "" if account == "(null)" else account, "workdir": workdir})
    return rows


def _format_limit(text: str) -> str:
    """squeue's %l (1:00:00, 10:00, 1-00:00:00, UNLIMITED) the way the JSON rows write it."""
    from cm.jobs import timelimit

    try:
        return timelimit.slurm(timelimit.minutes(text))
    except UsageError:  # a form cm does not know: show Slurm's own
        return text


def squeue_jobs(text: str) -> list[dict[str, Any]]:
    """Every job of ``squeue --json``."""
    return [job_from_squeue(job) for job in _json(text, "squeue").get("jobs", [])]


def sacct_jobs(text: str) -> list[dict[str, Any]]:
    """The jobs (not their steps) of ``sacct --parsable2 -o SACCT_FIELDS``."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0].split("|")
    rows = []
    for line in lines[1:]:
        values = dict(zip(header, line.split("|")))
        if "." in values.get("JobID", "") or not values.get("JobID", "").isdigit():
            continue  # a step (123.batch) or an array/het id: the job's own line carries its state
        code, _, signal = values.get("ExitCode", "").partition(":")
        rows.append({"name": values["JobID"], "id": int(values["JobID"]), "job_name": values.get("JobName", ""),
                     "user": values.get("User", "").split("(")[0],
                     "state": values.get("State", "").split(" ")[0].upper(),
                     "partition": values.get("Partition", ""), "nodes": values.get("NodeList", ""),
                     "node_count": int(values.get("NNodes") or 0), "time_limit": values.get("Timelimit", ""),
                     "submitted": _sacct_time(values.get("Submit")), "started": _sacct_time(values.get("Start")),
                     "ended": _sacct_time(values.get("End")), "reason": "",
                     "exit_code": int(code) if code.isdigit() else "", "account": values.get("Account", ""),
                     "workdir": values.get("WorkDir", "")})
    return rows


def _sacct_time(value: str | None) -> str:
    return "" if not value or value in ("Unknown", "None", "N/A") else value


def oneliners(text: str) -> list[dict[str, str]]:
    """``scontrol show ... --oneliner``: one dict of KEY=VALUE per line."""
    items = []
    for line in text.splitlines():
        if "=" not in line:
            continue
        item = {}
        for word in line.split():
            key, sep, value = word.partition("=")
            if sep:
                item[key] = value
        items.append(item)
    return items


def partitions(text: str) -> list[dict[str, Any]]:
    """The partitions of ``scontrol show partition --oneliner``."""
    return [{"name": p["PartitionName"], "state": p.get("State", ""), "default": p.get("Default") == "YES",
             "max_time": p.get("MaxTime", ""), "max_nodes": p.get("MaxNodes", ""),
             "nodes": p.get("Nodes", ""), "total_nodes": int(p.get("TotalNodes") or 0),
             "total_cpus": int(p.get("TotalCPUs") or 0), "allow_accounts": p.get("AllowAccounts", "ALL"),
             "deny_accounts": p.get("DenyAccounts", "")}
            for p in oneliners(text) if "PartitionName" in p]


def nodes(text: str) -> list[dict[str, Any]]:
    """The nodes of ``sinfo --json``."""
    rows = []
    for node in _json(text, "sinfo").get("nodes", []):
        flags = [str(f).lower() for f in node.get("state_flags") or []]
        rows.append({"name": node.get("name", ""), "state": "+".join([str(node.get("state", "")).lower(), *flags]),
                     "partitions": node.get("partitions", []), "cpus": node.get("cpus", 0),
                     "alloc_cpus": node.get("alloc_cpus", 0), "memory": node.get("real_memory", 0),
                     "address": node.get("address", ""), "reason": node.get("reason", "")})
    return rows


def sections(text: str) -> dict[str, str]:
    """Split the output of a probe script into its ``@@name`` sections."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("@@"):
            current = line[2:].strip()
            found[current] = []
        elif current:
            found[current].append(line)
    return {name: "\n".join(lines) for name, lines in found.items()}
