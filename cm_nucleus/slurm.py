"""Slurm through its own commands (sbatch, scancel, squeue, scontrol), with the service's SLURM_CONF."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

# Slurm job states -> what the computeset becomes once the job has left the queue
FINAL = {"COMPLETED": "completed", "TIMEOUT": "completed", "CANCELLED": "cancelled", "DEADLINE": "completed",
         "PREEMPTED": "cancelled", "FAILED": "failed", "NODE_FAIL": "failed", "BOOT_FAIL": "failed",
         "OUT_OF_MEMORY": "failed", "REVOKED": "cancelled", "SPECIAL_EXIT": "failed"}
ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "STOPPED",
          "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "REQUEUE_FED", "REQUEUE_HOLD", "PREEMPTED"}


class SlurmError(Exception):
    """A Slurm command failed; the message is Slurm's own first line."""


@dataclass
class Job:
    id: str
    name: str
    state: str
    nodes: str  # hostlist, empty while pending
    reason: str = ""


class Slurm:
    def __init__(self, env: dict[str, str], partition: str = "") -> None:
        self.env = {**os.environ, **env}
        self.partition = partition

    def _run(self, argv: list[str], timeout: float = 30, input: str | None = None) -> str:
        try:
            proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, input=input)
        except FileNotFoundError as exc:
            raise SlurmError(f"{argv[0]} is not installed") from exc
        except subprocess.TimeoutExpired as exc:
            raise SlurmError(f"{argv[0]} did not answer within {timeout:g} s") from exc
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            raise SlurmError(lines[-1].strip() if lines else f"{argv[0]} failed ({proc.returncode})")
        return proc.stdout

    def submit(self, script: str, *, name: str, nodes: int, minutes: int, account: str, reservation: str = "",
               exclude: list[str] | None = None, output: str = "/dev/null") -> str:
        """sbatch the script; return the job id."""
        argv = ["sbatch", "--parsable", f"--job-name={name}", f"--nodes={nodes}", "--ntasks-per-node=1",
                f"--time={minutes}", f"--account={account}", f"--output={output}", "--no-requeue"]
        if self.partition:
            argv.append(f"--partition={self.partition}")
        if reservation:
            argv.append(f"--reservation={reservation}")
        if exclude:
            argv.append(f"--exclude={','.join(exclude)}")
        out = self._run(argv, input=script)
        return out.strip().split(";")[0]

    def cancel(self, job_id: str) -> None:
        self._run(["scancel", job_id])

    def jobs(self, prefix: str) -> dict[str, Job]:
        """The queue's jobs whose name starts with ``prefix``, by job id."""
        out = self._run(["squeue", "-h", "-t", "all", "-o", "%i|%j|%T|%N|%r"])
        jobs = {}
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) == 5 and parts[1].startswith(prefix):
                jobs[parts[0]] = Job(parts[0], parts[1], parts[2], parts[3], parts[4])
        return jobs

    def job(self, job_id: str) -> Job | None:
        """The job as slurmctld still remembers it (MinJobAge after its end), or None."""
        try:
            out = self._run(["scontrol", "-o", "show", "job", job_id])
        except SlurmError:
            return None
        fields = dict(word.split("=", 1) for word in out.split() if "=" in word)
        nodes = fields.get("NodeList", "")
        return Job(job_id, fields.get("JobName", ""), fields.get("JobState", ""),
                   "" if nodes == "(null)" else nodes, fields.get("Reason", ""))

    def final_state(self, job_id: str) -> str | None:
        """The job's end state from slurmctld, else from the accounting (sacct); None if unknown."""
        job = self.job(job_id)
        if job and job.state not in ACTIVE:
            return job.state
        if job:
            return None
        try:
            out = self._run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"])
        except SlurmError:
            return None
        words = out.split()
        return words[0].upper() if words else None

    def reservations(self) -> list[dict[str, str]]:
        out = self._run(["scontrol", "-o", "show", "reservation"])
        found = []
        for line in out.splitlines():
            if "ReservationName=" not in line:
                continue
            fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
            found.append({"name": fields.get("ReservationName", ""), "state": fields.get("State", ""),
                          "start": fields.get("StartTime", ""), "end": fields.get("EndTime", ""),
                          "nodes": fields.get("Nodes", ""), "accounts": fields.get("Accounts", ""),
                          "users": fields.get("Users", "")})
        return found


def holder_script(callback: str, secret: str) -> str:
    """The computeset's job: tell the service it started, hold the nodes, tell it when Slurm ends the job.

    Slurm sends SIGTERM at cancellation and at the time limit: the trap reports
    it at once, so the nodes power off without waiting for a poll.
    """
    return f"""#!/bin/sh
# a Nucleus computeset: its virtual nodes run while this job runs
cb() {{
    # retried while the service restarts (connection refused, 5xx), not when it refuses the job
    curl -fsS -m 60 --retry 60 --retry-delay 1 --retry-connrefused -o /dev/null -X POST -H "X-Callback-Secret: {secret}" \\
        --data-urlencode "event=$1" --data-urlencode "job=$SLURM_JOB_ID" \\
        --data-urlencode "nodes=$SLURM_JOB_NODELIST" "{callback}"
}}
trap 'cb ending; exit 0' TERM INT
cb started || {{ echo "cannot reach the Nucleus service at {callback}" >&2; exit 1; }}
while :; do
    sleep 3600 &
    wait $!
done
"""
