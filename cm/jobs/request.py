"""A batch job as the user asked for it: the script, its declared inputs, and sbatch's options.

A script declares the files it needs with ``#CM input FILE`` lines (paths relative
to the script; globs allowed), and ``--input`` adds more; all of them travel with
the script to a per-job directory on the login host.  Everything that can be
checked here is checked before anything is copied.
"""

from __future__ import annotations

import glob
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from cm.errors import UsageError
from cm.jobs import timelimit

_INPUT = re.compile(r"^#\s*CM\s+input\s+(.+?)\s*$", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z0-9][\w.+-]*")


class JobRequest:
    """What `cm hpc run` submits."""

    def __init__(self, script: Path, inputs: dict[str, Path], name: str, options: list[str],
                 minutes: int | None, partition: str, account: str, generated: bool) -> None:
        self.script, self.inputs, self.name, self.options = script, inputs, name, options
        self.minutes, self.partition, self.account, self.generated = minutes, partition, account, generated

    def files(self) -> dict[str, Path]:
        """Everything copied to the job directory: {name there: local path}."""
        return {self.script.name: self.script, **self.inputs}

    def discard(self) -> None:
        """Remove the script written for --command (it has been sent, or will not be)."""
        if self.generated:
            shutil.rmtree(self.script.parent, ignore_errors=True)

    def remote_dir(self, jobs_dir: str) -> str:
        """A fresh per-job directory under the system's jobs_dir."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return f"{jobs_dir.rstrip('/')}/{self.name}-{stamp}-{secrets.token_hex(3)}"


def declared_inputs(script: Path) -> list[str]:
    """The patterns of the script's ``#CM input`` lines."""
    try:
        text = script.read_text(errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot read the script {script}: {exc.strerror}") from exc
    found: list[str] = []
    for line in text.splitlines():
        match = _INPUT.match(line.strip())
        if match:
            found += match.group(1).split()
    return found


def resolve_inputs(patterns: list[str], base: Path) -> dict[str, Path]:
    """Each input pattern (relative to ``base``) as {name in the job dir: path}; every one must exist."""
    inputs: dict[str, Path] = {}
    for pattern in patterns:
        path = Path(pattern).expanduser()
        full = path if path.is_absolute() else base / path
        matches = [Path(p) for p in sorted(glob.glob(str(full)))] or ([full] if full.exists() else [])
        if not matches:
            raise UsageError(f"input '{pattern}' does not exist (looked for {full})")
        for match in matches:
            inside = not path.is_absolute() and not pattern.startswith("..")
            name = str(match.relative_to(base)) if inside else match.name
            inputs[name] = match
    return inputs


def build_request(args: Any) -> JobRequest:
    """Check the command line of `cm hpc run` and turn it into a request (UsageError, exit 2, when bad)."""
    if bool(args.script) == bool(args.command):
        raise UsageError("hpc run: give a SCRIPT or --command CMD (one of them)")
    generated = False
    if args.command:
        script = _command_script(args.command)
        generated, base = True, Path.cwd()
    else:
        script = Path(args.script).expanduser()
        if not script.is_file():
            raise UsageError(f"script '{args.script}' does not exist" if not script.exists()
                             else f"'{args.script}' is not a file")
        base = script.resolve().parent
    inputs = resolve_inputs([*(declared_inputs(script) if not generated else []), *(args.input or [])], base)
    name = args.name or (script.stem if not generated else "command")
    if not _NAME.fullmatch(name):
        raise UsageError(f"bad job name '{name}': use letters, digits, '.', '-', '_' and '+'")
    minutes = timelimit.minutes(args.time) if args.time else None
    options = [f"--job-name={name}"]
    for flag, value in (("--nodes", args.nodes), ("--ntasks", args.ntasks)):
        if value is not None:
            if value < 1:
                raise UsageError(f"{flag} must be at least 1")
            options.append(f"{flag}={value}")
    if args.time:
        options.append(f"--time={timelimit.slurm(minutes)}")
    if args.partition:
        options.append(f"--partition={args.partition}")
    if args.account:
        options.append(f"--account={args.account}")
    return JobRequest(script, inputs, name, options, minutes, args.partition or "", args.account or "", generated)


def _command_script(command: str) -> Path:
    """A batch script running ``command`` (kept in a private temp dir until the process ends)."""
    directory = Path(tempfile.mkdtemp(prefix="cm-job-"))
    script = directory / "command.sh"
    script.write_text(f"#!/bin/sh\n{command}\n")
    script.chmod(0o755)
    return script


def check_against(request: JobRequest, probe: dict[str, Any], cloud: str) -> None:
    """Refuse what Slurm would refuse or leave pending forever: unknown partition or account,
    a time limit over the partition's MaxTime, anything `sbatch --test-only` rejects."""
    parts = {p["name"]: p for p in probe["partitions"]}
    if request.partition and request.partition not in parts:
        raise UsageError(f"unknown partition '{request.partition}' on cloud '{cloud}' "
                         f"(partitions: {', '.join(sorted(parts)) or 'none'})")
    part = parts.get(request.partition) or next((p for p in probe["partitions"] if p["default"]), None)
    if request.account:
        accounts = probe["accounts"]
        allowed = part["allow_accounts"] if part else "ALL"
        if (accounts and request.account not in accounts) or \
                (allowed != "ALL" and request.account not in allowed.split(",")):
            raise UsageError(f"unknown account '{request.account}' on cloud '{cloud}' "
                             f"(yours: {', '.join(accounts) or allowed})")
    if part and request.minutes is not None:
        limit = timelimit.minutes(part["max_time"]) if part["max_time"] else None
        if limit is not None and request.minutes > limit:
            raise UsageError(f"time limit {timelimit.slurm(request.minutes)} is over partition "
                             f"'{part['name']}''s maximum {part['max_time']} on cloud '{cloud}'")
    if not probe["test_ok"]:
        why = (probe["test_output"] or ["refused"])[-1]
        why = re.sub(r"^(sbatch: )?(error: )?(allocation failure: )?", "", why.strip())
        raise UsageError(f"cloud '{cloud}' refuses the job: {why}")
