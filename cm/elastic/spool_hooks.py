"""`cm slurm backfill` on a controller host without cm: its PrologSlurmctld and EpilogSlurmctld
are spool programs too (cm.elastic.agent).

The prolog records the job (``prolog NODELIST TIME JOBID PARTITION``) in the cluster's spool and
waits, at most ``WAIT`` seconds, for the agent's answer (a file of the same name in ``answers``):
the job starts once the virtual nodes on its hosts are moved or saved, or when the wait runs out
(then as if backfill were off).  The epilog only records the job: the agent restores what the
prolog saved.  Jobs of the virtual partition itself return at once.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from cm.elastic.slurmctl import Controller

HOOKS = {"PrologSlurmctld": "prolog", "EpilogSlurmctld": "epilog"}
WAIT = 300   # seconds a job's prolog waits for the agent before the job starts anyway


def answers(root: Path) -> Path:
    return root / "answers"


def script(root: Path, action: str, partition: str) -> str:
    """The hook slurmctld runs for every job (its environment names the job)."""
    wait = "" if action != "prolog" else (
        f'i=0; while [ ! -e "$a/$n" ] && [ $i -lt {WAIT * 5} ]; do sleep 0.2; i=$((i+1)); done\nrm -f "$a/$n"\n')
    return f"""#!/bin/sh
# written by `cm slurm backfill enable`: slurmctld runs it for every job. It records the job; cm's
# agent on the user's machine moves or saves the virtual nodes on the job's hosts ({action}).
[ "$SLURM_JOB_PARTITION" = {shlex.quote(partition)} ] && exit 0
d={shlex.quote(str(root / "requests"))}
a={shlex.quote(str(answers(root)))}
t=$(date +%s%N)
n="$t.$$.req"
umask 077
echo "{action} ${{SLURM_JOB_NODELIST:-none}} $t ${{SLURM_JOB_ID:-0}} ${{SLURM_JOB_PARTITION:-none}}" > "$d/.$n" && \\
    mv -f "$d/.$n" "$d/$n" || exit 0
{wait}exit 0
"""


def install(ctl: Controller, root: Path, slurm_user: str, partition: str) -> dict[str, Path]:
    """Write the hooks and the answers directory into the cluster's spool; {setting: hook path}."""
    owner = shlex.quote(slurm_user or "root")
    where = shlex.quote(str(answers(root)))
    ctl.check(["sh", "-c", f"mkdir -p {where} && chown {owner} {where} && chmod 0700 {where}"], timeout=30)
    paths = {}
    for setting, action in HOOKS.items():
        paths[setting] = root / action
        ctl.write_text(paths[setting], script(root, action, partition), mode=0o755)
    return paths


def answer(ctl: Controller, root: Path, name: str) -> None:
    """Let the prolog that recorded request ``name`` return: its job may start."""
    ctl.check(["sh", "-c", f"umask 077; : > {shlex.quote(str(answers(root) / name))}"], timeout=30)


def environ(nodelist: str, job: str, partition: str) -> dict[str, str]:
    """The job's environment as slurmctld gave it to the hook (what cm.elastic.backfill reads)."""
    return {"SLURM_JOB_ID": job, "SLURM_JOB_PARTITION": partition, "SLURM_JOB_NODELIST": nodelist}
