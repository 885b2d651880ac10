"""The slurm cloud kind: an HPC system's login host, where Slurm's clients run.

A slurm cloud (``cm cloud add hpc --kind slurm host=login.example.org user=me key=~/.ssh/id_ed25519``)::

    kind: slurm
    host: login.example.org      # or localhost: this machine is the login host
    user, port, key, jump, ssh_config, connect_timeout   # see cm_plugins.slurm.remote
    setup: module load slurm     # shell run before every command (site modules, SLURM_CONF=...)
    jobs_dir: cm-jobs            # per-job directories, relative to the login home
    image_dir: cm-images         # where `cm singularity push` puts images (a shared file system)

Every command is one shell snippet sent over one multiplexed ssh connection;
Slurm answers in its machine-readable forms (see :mod:`cm_plugins.slurm.parse`).
A batch system has no VMs: those verbs keep the contract's one-line refusal.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from cm.errors import NotFound, ProviderError
from cm.jobs.store import UNKNOWN_JOB
from cm.provider import Provider
from cm_plugins.slurm import parse
from cm_plugins.slurm.remote import Remote

BATCH = "it is a batch system (Slurm): run work with `cm hpc run`"
RUNTIMES = ("apptainer", "singularity")


class SlurmProvider(Provider):
    """One Slurm cluster reached through its login host."""

    kind = "slurm"
    unsupported_why = {verb: BATCH for verb in (
        "list VMs", "show VMs", "boot VMs", "start VMs", "stop VMs", "reboot VMs", "suspend VMs", "resume VMs",
        "delete VMs", "rename VMs", "resize VMs", "show consoles", "list images", "list flavors", "list keys")}

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        super().__init__(name, config)
        self.remote = Remote(name, config)

    def close(self) -> None:
        self.remote.close()

    # -- running things on the login host ----------------------------------------------
    def shell(self, script: str, input: bytes | None = None, check: bool = True, timeout: float | None = 600):
        """Run ``script`` on the login host after the cloud's ``setup``."""
        return self.remote.run(self.with_setup(script), input=input, check=check, timeout=timeout)

    def with_setup(self, script: str) -> str:
        """``script`` preceded by the cloud's ``setup`` (site modules, SLURM_CONF=...)."""
        setup = str(self.config.get("setup") or "").strip()
        return f"{setup}\n{script}" if setup else script

    def jobs_dir(self) -> str:
        return str(self.config.get("jobs_dir") or "cm-jobs")

    def image_dir(self) -> str:
        return str(self.config.get("image_dir") or "cm-images")

    # -- what the system has ---------------------------------------------------------------
    def probe(self, test_options: list[str]) -> dict[str, Any]:
        """Partitions, the user's accounts and `sbatch --test-only` of the options, in one round trip."""
        opts = " ".join(shlex.quote(o) for o in test_options)
        script = ("printf '\\n@@partitions\\n'; scontrol show partition --oneliner 2>&1\n"
                  "printf '\\n@@accounts\\n'; sacctmgr -nP show assoc where user=\"$(id -un)\" format=account 2>/dev/null\n"
                  f"printf '\\n@@test\\n'; sbatch --test-only {opts} --wrap true 2>&1; echo \"@@rc $?\"\n")
        out = self.shell(script, check=False)
        found = parse.sections(out.out)
        if "test" not in found:
            raise ProviderError(f"cloud '{self.name}': Slurm's clients do not answer on {self.remote.where}: "
                                f"{out.last_error()}")
        test_lines = found.get("test", "").splitlines()
        code = next((line.split()[1] for line in reversed(out.out.splitlines()) if line.startswith("@@rc")), "1")
        return {"partitions": parse.partitions(found.get("partitions", "")),
                "accounts": [a for a in found.get("accounts", "").split() if a],
                "test_ok": code == "0", "test_output": [line for line in test_lines if line.strip()]}

    def info(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(partitions, nodes) of the system."""
        out = self.shell("scontrol show partition --oneliner; printf '\\n@@nodes\\n'; sinfo --json")
        found = parse.sections("@@partitions\n" + out.out)
        return parse.partitions(found["partitions"]), parse.nodes(found["nodes"])

    # -- jobs --------------------------------------------------------------------------------
    def submit(self, files: dict[str, Path], remote_dir: str, script: str, options: list[str]) -> int:
        """Copy ``files`` into ``remote_dir`` and sbatch ``script`` there; nothing is left behind on failure."""
        quoted_dir = shlex.quote(remote_dir)
        submit = (f"sbatch --parsable --chdir=\"$PWD\" {' '.join(shlex.quote(o) for o in options)} "
                  f"./{shlex.quote(script)} || {{ status=$?; cd / && rm -rf {quoted_dir}; exit $status; }}")
        result = self.remote.put_tree(files, remote_dir, then=self.with_setup(submit))
        if result.code:
            self.remote.run(f"rm -rf {quoted_dir}", check=False)
            raise ProviderError(f"cloud '{self.name}': sbatch refused the job: {result.last_error()}")
        text = result.out.strip().splitlines()
        try:
            return int(text[-1].split(";")[0])
        except (IndexError, ValueError) as exc:
            raise ProviderError(f"cloud '{self.name}': sbatch answered {result.out.strip()!r}, not a job id") from exc

    def list_jobs(self, user: str | None = None) -> list[dict[str, Any]]:
        """The jobs Slurm knows now (pending, running, recently ended)."""
        who = f" --user={shlex.quote(user)}" if user else ""
        out = self.shell(f"squeue --noheader --format={shlex.quote(parse.QUEUE_FORMAT)}{who}")
        return parse.squeue_rows(out.out)

    def get_jobs(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        """The jobs ``ids`` as Slurm knows them: squeue, then accounting for jobs squeue has forgotten."""
        joined = ",".join(str(i) for i in ids)
        fields = ",".join(parse.SACCT_FIELDS)
        script = (f"squeue --json --states=all --jobs={joined} 2>/dev/null || echo '{{\"jobs\": []}}'\n"
                  f"printf '\\n@@sacct\\n'; sacct --parsable2 --allocations -j {joined} -o {fields} 2>/dev/null "
                  f"|| sacct -c --parsable2 -j {joined} -o {fields} 2>/dev/null; true")
        out = self.shell(script)
        found = parse.sections("@@squeue\n" + out.out)
        known = {row["id"]: row for row in parse.sacct_jobs(found.get("sacct", ""))}
        known.update({row["id"]: row for row in parse.squeue_jobs(found["squeue"]) if row["id"] in ids})
        return known

    def cancel(self, ids: list[int]) -> dict[int, str]:
        """scancel each job; {id: ""} when cancelled, else Slurm's reason (UNKNOWN_JOB for an id it never had)."""
        # scancel exits 0 and says nothing for an unknown job unless verbose
        script = "".join(f"scancel -v {i} 2>&1 | grep 'error:' | tail -n1 | sed 's/^/@@{i} /'; " for i in ids)
        out = self.shell(script)
        result = {i: "" for i in ids}
        for line in out.out.splitlines():
            if line.startswith("@@"):
                job, _, message = line[2:].partition(" ")
                why = message.split("error: ")[-1].split(f"job id {job}: ")[-1].strip()
                result[int(job)] = UNKNOWN_JOB if why == "Invalid job id specified" else why
        return result

    def fetch(self, remote_dir: str, dest: Path) -> list[str]:
        """Copy the job directory's files into ``dest``."""
        return self.remote.get_tree(remote_dir, ["."], dest)

    # -- containers ------------------------------------------------------------------------
    def runtime(self) -> str:
        """The container runtime on the login host (apptainer, else singularity)."""
        out = self.shell("for r in " + " ".join(RUNTIMES) + "; do command -v $r && exit 0; done; exit 3", check=False)
        if out.code:
            raise NotFound(f"cloud '{self.name}' has no container runtime on {self.remote.where}: "
                           "neither apptainer nor singularity is on the PATH (load its module in the cloud's 'setup')")
        return out.out.strip().splitlines()[-1]
