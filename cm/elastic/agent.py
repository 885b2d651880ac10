"""Bursting a cluster whose controller host has no cm: a spool there, an agent here.

slurmctld's Resume/Suspend/ResumeFail programs on such a host are tiny shell scripts that only
record the request (action, hostlist, time, the jobs of SLURM_RESUME_FILE) as one file in
``/var/spool/cm-burst/CLUSTER/requests`` (written under a dot name, then renamed: atomic) and exit.
The agent runs detached on the user's machine (cm.detached: ``agent.pid``, ``agent.log`` in the
cluster's state directory), looks at the spool about every second through one ssh ControlMaster
connection, and hands each request to the code the local programs run (cm.elastic.power), whose
scontrol calls go over that same connection.  A request leaves the spool only once handled; the
names handled are also kept here (``agent-done``), so an agent killed between handling and
removing one never handles it twice.  Nodes whose request failed only because the controller host
could not be reached (ssh) are tried again with backoff while Slurm's ResumeTimeout allows; any other
failure is final (slurmctld then marks the node down and calls the ResumeFailProgram).
"""

from __future__ import annotations

import json
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cm import detached
from cm.bulk import Outcome
from cm.errors import CmError
from cm.elastic import spool_hooks, state
from cm.elastic.slurmctl import Controller

SPOOL = Path("/var/spool/cm-burst")
MODULE = "cm.elastic.agent"
NAME = "agent"
POLL = 1.0          # seconds between two looks at the spool
MARK = "@@cm-request "
KEEP_DONE = 500     # names of handled requests remembered
ACTIONS = ("resume", "suspend", "resume-fail")
HOOKS = tuple(spool_hooks.HOOKS.values())   # backfill's prolog and epilog, spooled too
RETRY_FIRST, RETRY_MAX = 1.0, 16.0   # seconds before the first try again, and at most between two


@dataclass
class Request:
    """One program run slurmctld recorded in the spool."""

    name: str
    action: str     # resume, suspend, resume-fail (or damaged: not written by our script)
    nodes: str      # a hostlist
    at: float
    jobs: dict[str, list[str]]
    env: dict[str, str] = field(default_factory=dict)   # a backfill hook's job (cm.elastic.spool_hooks)


def spool(cluster: str) -> Path:
    return SPOOL / cluster


def script(cluster: str, action: str) -> str:
    """The program slurmctld runs: record the request, nothing else (it must return at once)."""
    where = shlex.quote(str(spool(cluster) / "requests"))
    return f"""#!/bin/sh
# written by `cm slurm burst enable`: slurmctld runs it. It only records the request; cm's agent
# on the user's machine boots or deletes the VMs (`cm slurm burst status {cluster}` shows it).
d={where}
t=$(date +%s%N)
umask 077
{{ echo "{action} $1 $t"; if [ -r "$SLURM_RESUME_FILE" ]; then cat "$SLURM_RESUME_FILE"; fi; }} > "$d/.$t.$$" || exit 1
exec mv -f "$d/.$t.$$" "$d/$t.$$.req"
"""


def install(ctl: Controller, cluster: str, slurm_user: str, actions: dict[str, str]) -> dict[str, Path]:
    """Write the programs and the spool on the controller host; {setting: program path}."""
    root = spool(cluster)
    owner = shlex.quote(slurm_user or "root")
    # slurmctld runs its programs as SlurmUser: the spool is that user's alone
    ctl.check(["sh", "-c", f"mkdir -p {shlex.quote(str(root / 'requests'))} && "
                           f"chown -R {owner} {shlex.quote(str(root))} && chmod 0700 {shlex.quote(str(root))} "
                           f"{shlex.quote(str(root / 'requests'))}"], timeout=30)
    paths = {}
    for setting, action in actions.items():
        paths[setting] = root / action
        ctl.write_text(paths[setting], script(cluster, action), mode=0o755)
    return paths


def uninstall(ctl: Controller, cluster: str) -> None:
    """Remove the programs and the spool (and the spool root once no cluster uses it)."""
    ctl.check(["sh", "-c", f"rm -rf {shlex.quote(str(spool(cluster)))}; rmdir {shlex.quote(str(SPOOL))} "
                           "2>/dev/null; true"], timeout=30)


def cm_runs_there(ctl: Controller, home: Path) -> bool:
    """Whether the controller host can run this cm with this home, clouds and all (the programs could call it)."""
    import cm

    source = str(Path(cm.__file__).resolve().parent.parent)
    probe = (f"test -r {shlex.quote(str(home / 'cm.yaml'))} && env PYTHONPATH={shlex.quote(source)} "
             f"{shlex.quote(sys.executable)} -c 'import cm.main'")
    proc = ctl.run(["sh", "-c", probe], timeout=60)
    if proc.returncode == 255:
        ctl.check(["true"], timeout=30)   # one line naming the host when ssh itself fails
    return proc.returncode == 0


def parse(listing: str) -> list[Request]:
    """The requests of one spool listing (``@@cm-request NAME`` then the file), oldest first."""
    from cm.elastic.power import jobs_from

    found = []
    for chunk in listing.split("\n" + MARK)[1:]:
        name, _, body = chunk.partition("\n")
        head, _, resume_file = body.partition("\n")
        words = head.split()
        if len(words) == 5 and words[0] in HOOKS and words[2].isdigit() and words[3].isdigit() and \
                (words[1] == "none" or _hostlist(words[1])):
            found.append(Request(name.strip(), words[0], words[1], int(words[2]) / 1e9, {},
                                 spool_hooks.environ(words[1], words[3], words[4])))
            continue
        if len(words) != 3 or words[0] not in ACTIONS or not words[2].isdigit() or not _hostlist(words[1]):
            found.append(Request(name.strip(), "damaged", head.strip()[:80], 0.0, {}))
            continue
        found.append(Request(name.strip(), words[0], words[1], int(words[2]) / 1e9, jobs_from(resume_file)))
    return sorted(found, key=lambda r: r.name)


def _hostlist(text: str) -> bool:
    """Whether ``text`` is a hostlist cm can expand."""
    from cm.names import expand

    try:
        return bool(expand([text]))
    except CmError:
        return False


def pending(ctl: Controller, cluster: str) -> list[Request]:
    """The requests waiting in the spool (one ssh round trip)."""
    where = shlex.quote(str(spool(cluster) / "requests"))
    listing = ctl.check(["sh", "-c", f"cd {where} || exit 1; for f in *.req; do [ -f \"$f\" ] || continue; "
                                     f"printf '\\n{MARK}%s\\n' \"$f\"; cat \"$f\"; done"], timeout=30)
    return parse(listing)


def handle(ctx: Any, cluster: str, request: Request) -> list[Outcome]:
    """What the local program of ``request.action`` would do: cm.elastic.power on its nodes."""
    from cm.elastic import power
    from cm.names import expand

    if request.action == "damaged":
        return [Outcome(request.name, False, f"not a request cm's programs write ({request.nodes!r}); removed")]
    if request.action in HOOKS:   # its effects are in the cluster's log
        from cm.elastic import backfill

        # a job given no nodes: the hook's own environment (never the agent's, maybe inside an allocation)
        env = {**request.env, "SLURM_JOB_NODELIST": ""} if request.nodes == "none" else request.env
        getattr(backfill, request.action)(ctx, cluster, env)
        return [Outcome(f"job {request.env['SLURM_JOB_ID']}", True)]
    nodes = expand([request.nodes])
    if request.action == "resume":
        return power.resume(ctx, cluster, nodes, request.jobs)
    return power.suspend(ctx, cluster, nodes, failed=request.action == "resume-fail")


class Agent:
    """Polls one cluster's spool and handles each request once, several at a time."""

    def __init__(self, home: Path, cluster: str) -> None:
        from cm.elastic.target import controller

        self.home, self.cluster = Path(home), cluster
        self.folder = state.directory(self.home, cluster)
        self.ctl = controller(state.load(self.home, cluster))
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.busy: dict[str, list[str]] = {}   # request in flight -> its nodes
        self.threads: list[threading.Thread] = []
        self.done = self._load_done()
        self.unreachable = ""

    def say(self, text: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {text}", flush=True)

    def _load_done(self) -> list[str]:
        try:
            return (self.folder / "agent-done").read_text().split()
        except OSError:
            return []

    def _mark_done(self, name: str) -> None:
        from cm.config import write_private

        with self.lock:
            self.done = [*self.done, name][-KEEP_DONE:]
            write_private(self.folder / "agent-done", "\n".join(self.done) + "\n")

    def _remove(self, name: str) -> None:
        self.ctl.check(["rm", "-f", str(spool(self.cluster) / "requests" / name)], timeout=30)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                found = pending(self.ctl, self.cluster)
                if self.unreachable:
                    self.say(f"controller {self.ctl.host} reachable again")
                    self.unreachable = ""
            except CmError as exc:
                if str(exc) != self.unreachable:
                    self.say(f"cannot read the spool: {exc}; trying again")
                    self.unreachable = str(exc)
                found = []
            for request in found:
                self._dispatch(request)
            self.stop.wait(POLL)
        for thread in list(self.threads):
            thread.join(timeout=600)   # a boot in flight ends (or fails and cleans up) before we go

    def _dispatch(self, request: Request) -> None:
        from cm.names import expand

        nodes = expand([request.nodes]) if request.action != "damaged" else []
        with self.lock:
            taken = {n for held in self.busy.values() for n in held}
            # one request per node at a time, in the order slurmctld made them: a later one waits its turn
            if request.name in self.busy or taken & set(nodes):
                return
            handled = request.name in self.done
            if not handled:
                self.busy[request.name] = nodes
                self.threads = [t for t in self.threads if t.is_alive()]
                self.threads.append(threading.Thread(target=self._handle, args=(request,), name=request.name,
                                                     daemon=True))
                self.threads[-1].start()
        if handled:   # handled before a kill: only its removal was missing
            try:
                if request.action == "prolog":
                    spool_hooks.answer(self.ctl, spool(self.cluster), request.name)
                self._remove(request.name)
                self.say(f"{request.action} {request.nodes}: handled before ({request.name}); removed")
            except CmError:
                pass   # the next look tries again

    def _handle(self, request: Request) -> None:
        from cm.context import Context

        waited = time.time() - request.at if request.at else 0.0
        self.say(f"{request.action} {request.nodes}: requested {waited:.1f} s ago ({request.name})")
        ctx = Context(out=self.say, err=self.say)
        try:
            self._until_reached(ctx, request)
        except Exception as exc:   # noqa: BLE001  one bad request must not end the agent
            self.say(f"{request.action} {request.nodes}: failed: {type(exc).__name__}: {exc}")
        finally:
            ctx.close()
        if request.action == "prolog":   # its job waits for this (whatever the outcome)
            try:
                spool_hooks.answer(self.ctl, spool(self.cluster), request.name)
            except CmError as exc:
                self.say(f"could not answer {request.name} ({exc}); its job starts when the prolog's wait ends")
        self._mark_done(request.name)
        try:
            self._remove(request.name)
        except CmError as exc:
            self.say(f"could not remove {request.name} from the spool ({exc}); removing it later")
        with self.lock:
            self.busy.pop(request.name, None)

    def _until_reached(self, ctx: Any, request: Request) -> None:
        """Handle the request; nodes that failed only because the controller host was unreachable are tried
        again with backoff until Slurm's ResumeTimeout (counted from the request) would pass, then left to
        slurmctld (it marks them down and calls the ResumeFailProgram).  Any other failure is final."""
        from dataclasses import replace

        deadline = (request.at or time.time()) + float(state.load(self.home, self.cluster).get("resume_timeout", 300))
        delay, nodes = RETRY_FIRST, request.nodes
        while True:
            again, why = self._once(ctx, replace(request, nodes=nodes))
            if not again:
                return
            nodes = ",".join(again)
            if self.stop.is_set() or time.time() + delay >= deadline:
                self.say(f"{request.action} {nodes}: giving up ({why}); Slurm's ResumeTimeout takes over")
                return
            self.say(f"{request.action} {nodes}: {why}; trying again in {delay:g} s")
            self.stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX)

    def _once(self, ctx: Any, request: Request) -> tuple[list[str], str]:
        """One try: (the nodes to try again because the controller was unreachable, why)."""
        from cm.elastic.slurmctl import Unreachable
        from cm.names import expand

        try:
            outcomes = handle(ctx, self.cluster, request)
        except Unreachable as exc:   # before any node was tried
            return expand([request.nodes]), str(exc)
        except CmError as exc:
            self.say(f"{request.action} {request.nodes}: failed: {exc}")
            return [], ""
        again = [o for o in outcomes if isinstance(o.error, Unreachable)]
        for outcome in outcomes:
            if not isinstance(outcome.error, Unreachable):
                self.say(f"{request.action} {outcome.name}: {outcome.message or 'done'}")
        return [o.name for o in again], again[0].message if again else ""


def running_pid(home: Path, cluster: str) -> int | None:
    return detached.running_pid(state.directory(home, cluster), NAME, MODULE)


def start(home: Path, cluster: str) -> tuple[int, bool]:
    """Start the cluster's agent unless it runs: (its pid, whether this call started it)."""
    return detached.ensure(state.directory(home, cluster), NAME, MODULE, [str(home), cluster], home)


def log_path(home: Path, cluster: str) -> Path:
    return state.directory(home, cluster) / f"{NAME}.log"


def stop(home: Path, cluster: str) -> int | None:
    return detached.stop(state.directory(home, cluster), NAME, MODULE, wait=600)


def main(argv: list[str]) -> int:
    home, cluster = Path(argv[0]), argv[1]
    agent = Agent(home, cluster)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: agent.stop.set())
    pid_file = detached.write_pid(agent.folder, NAME)
    agent.say(f"agent {json.dumps(cluster)} started: spool {spool(cluster)} on {agent.ctl.host}, "
              f"every {POLL:g} s")
    try:
        agent.run()
    finally:
        agent.ctl.disconnect()
        detached.remove_pid(pid_file)
        agent.say("agent stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
