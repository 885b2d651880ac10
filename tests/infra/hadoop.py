"""Real Hadoop daemons running the configuration cm's Hadoop recipe renders, one netns per node.

Usage::

    from tests.infra.hadoop import HadoopCluster

    with HadoopCluster("hadoop-t", workers=2) as c:     # a tests.infra.netns Lab named by the prefix
        c.files["yarn-site.xml"]        # what the recipe rendered for this cluster
        c.hdfs(["-put", "local.txt", "/in"])             # FsShell, run on the head
        c.java("org.apache.hadoop.examples.ExampleDriver", ["wordcount", "/in", "/out"])

The cluster record comes from ``cm.clusters.plan.offline`` (as a launch of ``cm hadoop -n N``
would plan it: nodes ``c1-head``, ``c1-worker1``...); each node is a Lab host of that name whose
address becomes the node's address, and ``Recipe.render_files`` renders core-site, hdfs-site,
yarn-site, mapred-site, hadoop-env.sh and spark-defaults.conf from that record, unchanged, into
``PREFIX/hadoop/etc/hadoop`` (``--param prefix`` is the test's temp dir).  ``PREFIX/hadoop`` is
what the recipe's own install.sh installed: it downloads a release archive of the recipe's
``hadoop_version`` (``tests.infra.hadoop_release``, built from the jars ``tests.infra.hadoop_jars``
fetched) from a loopback mirror (``--param mirror=... checksums=...``) and checks its SHA-512.
The head runs NameNode (formatted first) and ResourceManager; each worker a DataNode and NodeManager, started as Hadoop's scripts do: the
recipe's hadoop-env.sh sourced (JAVA_HOME, HADOOP_HOME, HADOOP_OPTS with the ``--add-opens``
Java 17 needs), then ``java $HADOOP_OPTS -cp CONF:... MAIN``.  Each daemon sees its own private dir bind-mounted over /var/lib
and /var/log (its own mount namespace), so the recipe's paths (/var/lib/hadoop/name, .../data)
are used as rendered.  Default ports are fine: every node has its own network namespace.
As on many clouds, no node's name resolves (the Lab's ``resolve_names=False``: not the others',
not even a node's own) unless ``resolve_names=True``: the nodes find each other by the addresses
the recipe has them advertise.  Each node first runs the recipe's own-name.sh, as its user-data
does (it makes the node's own name, and no other, resolve on that node).

Ready as the recipe defines it: ``hdfs dfsadmin -report -live`` and ``yarn node -list -states
RUNNING`` list every worker's address.  Stop kills exactly the pids it started
(process groups and descendants, e.g. YARN containers), then the Lab removes the namespaces and
the temp dir; a start first reaps what a killed run with the same prefix left.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.infra.hadoop_jars import lib_dir, webapps_dir
from tests.infra.hadoop_release import Mirror, release_tarball, run_install
from tests.infra.netns import Host, Lab
from tests.infra.procs import kill_tree, reap_stale, wait_for

HADOOP_TIMEOUT = 300.0
# What Hadoop's scripts export from HADOOP_HOME (NodeManagers pass these on to containers).
SCRIPT_EXPORTS = ("export HADOOP_COMMON_HOME=$HADOOP_HOME HADOOP_HDFS_HOME=$HADOOP_HOME "
                  "HADOOP_YARN_HOME=$HADOOP_HOME HADOOP_MAPRED_HOME=$HADOOP_HOME "
                  "YARN_CONF_DIR=$HADOOP_CONF_DIR JAVA_HOME HADOOP_HOME HADOOP_CONF_DIR HADOOP_LOG_DIR")
# Small JVMs: 2 shared cores.  C1 only and serial GC start faster and cost less CPU.
JVM_FLAGS = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xss512k"]
DAEMONS = {
    "namenode": ("org.apache.hadoop.hdfs.server.namenode.NameNode", "256m"),
    "resourcemanager": ("org.apache.hadoop.yarn.server.resourcemanager.ResourceManager", "256m"),
    "datanode": ("org.apache.hadoop.hdfs.server.datanode.DataNode", "160m"),
    "nodemanager": ("org.apache.hadoop.yarn.server.nodemanager.NodeManager", "192m"),
}
ROLES = {"head": ["namenode", "resourcemanager"], "worker": ["datanode", "nodemanager"]}


def recipe_cluster(workers: int, name: str = "c1", params: dict[str, str] | None = None):
    """The shipped Hadoop recipe and a cluster record of it, planned as ``cm hadoop -n WORKERS
    [--param K=V ...]``."""
    from cm import recipes
    from cm.clusters import plan

    recipe = recipes.load(recipes.shipped_dir() / "hadoop.yaml")
    cluster = plan.offline(recipe, workers, name)
    cluster["params"] = recipe.params(params or {})
    return recipe, cluster


class HadoopCluster:
    """A Hadoop cluster of real daemons (see the module docstring)."""

    def __init__(self, prefix: str, workers: int = 2, name: str = "c1",
                 timeout: float = HADOOP_TIMEOUT, resolve_names: bool = False) -> None:
        self.prefix, self.workers, self.name, self.timeout = prefix, workers, name, timeout
        self.lab = Lab(prefix, resolve_names=resolve_names)
        self.procs: dict[str, subprocess.Popen] = {}
        self.hosts: dict[str, Host] = {}
        self.roles: dict[str, str] = {}
        self.files: dict[str, str] = {}
        self.outputs: dict[str, str] = {}
        self.tmp: Path | None = None
        self.timings: dict[str, float] = {}

    # -- setup ------------------------------------------------------------------------------
    def start(self) -> "HadoopCluster":
        """Fetch the jars, render the recipe for the lab's nodes, start the daemons, wait until ready."""
        reap_stale(self.prefix, "hadoop")
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-hadoop-"))
        mirror = Mirror(self.tmp / "mirror").start()
        params = {"prefix": str(self.tmp / "opt"), "mirror": mirror.url, "checksums": mirror.url}
        recipe, cluster = recipe_cluster(self.workers, self.name, params)
        try:
            t0 = time.monotonic()
            version = str(cluster["params"]["hadoop_version"])
            archive = release_tarball(version)
            self.timings["fetch"] = time.monotonic() - t0
            t0 = time.monotonic()
            self.install(recipe, cluster, mirror, archive)
            self.timings["install"] = time.monotonic() - t0
            t0 = time.monotonic()
            self.lab.start()
            self.place_nodes(recipe, cluster)
            self.name_nodes()
            self.start_daemons()
            self.wait_ready()
            self.timings["ready"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        finally:
            mirror.stop()
        return self

    def place_nodes(self, recipe, cluster) -> None:
        """One Lab host per planned node (same name); render the recipe with the hosts' addresses."""
        from cm.clusters import plan

        for node in cluster["nodes"]:
            host = self.lab.add_host(node["name"])
            node["address"] = host.addr
            self.hosts[node["name"]] = host
            self.roles[node["name"]] = node["role"]
        context = plan.context(cluster, recipe, {}, None)
        self.files = recipe.render_files(context)
        self.outputs = recipe.render_outputs(context)
        conf = self.conf_dir
        for fname, text in self.files.items():
            if fname not in ("install.sh", "own-name.sh"):
                (conf / fname).write_text(text)

    def name_nodes(self) -> None:
        """Run the recipe's own-name.sh on every node; it prints the address the node advertises."""
        assert self.tmp is not None
        script = self.tmp / "own-name.sh"
        script.write_text(self.files["own-name.sh"])
        for name, host in self.hosts.items():
            proc = host.run(["sh", str(script)])
            if proc.returncode != 0 or proc.stdout.strip() != host.addr:
                raise RuntimeError(f"own-name.sh on {name}: {proc.stdout.strip()} {proc.stderr.strip()}")

    def install(self, recipe, cluster, mirror: Mirror, archive: Path) -> None:
        """PREFIX/hadoop from the release archive on the mirror, by the recipe's own install.sh."""
        from cm.clusters import plan

        where = f"hadoop/common/{archive.name.removesuffix('.tar.gz')}"
        for path in (archive, Path(f"{archive}.sha512")):
            mirror.publish(where, path.name, path.read_bytes())
        script = recipe.render_files(plan.context(cluster, recipe, {}, None))["install.sh"]
        proc, console = run_install(script, "hadoop", self.tmp / "install")
        if proc.returncode != 0 or not (self.install_dir / "bin" / "hadoop").exists():
            raise RuntimeError(f"install.sh hadoop failed ({proc.returncode}): {console}{proc.stderr}")

    @property
    def install_dir(self) -> Path:
        assert self.tmp is not None
        return self.tmp / "opt" / "hadoop"

    @property
    def conf_dir(self) -> Path:
        return self.install_dir / "etc" / "hadoop"

    @property
    def head(self) -> Host:
        return next(h for n, h in self.hosts.items() if self.roles[n] == "head")

    @property
    def worker_hosts(self) -> list[Host]:
        return [h for n, h in self.hosts.items() if self.roles[n] == "worker"]

    def java_argv(self, main: str, args: list[str], heap: str = "256m", log: str = "client") -> list[str]:
        """A `java` command line as Hadoop's scripts build it (HADOOP_OPTS comes from hadoop-env.sh)."""
        home = self.install_dir
        classpath = f"{self.conf_dir}:{webapps_dir(home)}:{lib_dir(home)}/*"
        return [f"-Xmx{heap}", *JVM_FLAGS, "-Dhadoop.log.dir=/var/log/hadoop",
                "-Dyarn.log.dir=/var/log/hadoop", f"-Dhadoop.log.file={log}.log",
                f"-Dhadoop.home.dir={home}", "-Djava.net.preferIPv4Stack=true", "-cp", classpath,
                main, *args]

    def node_dir(self, node: str) -> Path:
        assert self.tmp is not None
        return self.tmp / "nodes" / node

    def private_argv(self, node: str, java_args: list[str]) -> list[str]:
        """Java with ``java_args`` on ``node``, in the environment the recipe's hadoop-env.sh sets
        (as Hadoop's scripts source it), with the node's own dirs over /var/lib and /var/log."""
        base = self.node_dir(node)
        for sub in ("lib", "log/hadoop"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        script = (f"mount --bind {base}/lib /var/lib && mount --bind {base}/log /var/log && "
                  f". {self.conf_dir}/hadoop-env.sh && {SCRIPT_EXPORTS} && "
                  'exec "$JAVA_HOME/bin/java" $HADOOP_OPTS "$@"')
        return ["sh", "-c", script, "sh", *java_args]

    def spawn(self, node: str, daemon: str) -> None:
        """Start one daemon on ``node``; its output goes to NODE_DIR/DAEMON.out."""
        main, heap = DAEMONS[daemon]
        argv = self.private_argv(node, self.java_argv(main, [], heap, daemon))
        with open(self.node_dir(node) / f"{daemon}.out", "wb") as out:
            self.procs[f"{node}/{daemon}"] = self.hosts[node].popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def start_daemons(self) -> None:
        head = self.head.name
        fmt = self.hosts[head].run(self.private_argv(head, self.java_argv(
            DAEMONS["namenode"][0], ["-format", "-nonInteractive", "-force"], log="format")),
            timeout=self.timeout)
        if fmt.returncode != 0:
            raise RuntimeError(f"hdfs namenode -format failed: {fmt.stderr[-3000:]}")
        for node, role in self.roles.items():
            for daemon in ROLES[role]:
                self.spawn(node, daemon)

    # -- readiness ----------------------------------------------------------------------------
    def check_alive(self) -> None:
        for key, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{key} exited with {proc.returncode}:\n{self.log_tail(key)}")

    def log_tail(self, key: str, chars: int = 3000) -> str:
        node, daemon = key.split("/")
        path = self.node_dir(node) / f"{daemon}.out"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def ready(self) -> bool:
        """The recipe's test: every worker's address live in `dfsadmin -report -live`, RUNNING in `yarn node -list`."""
        self.check_alive()
        report = self.java("org.apache.hadoop.hdfs.tools.DFSAdmin", ["-report", "-live"], check=False)
        if not all(f"Name: {h.addr}:" in report.stdout for h in self.worker_hosts):
            return False
        nodes = self.java("org.apache.hadoop.yarn.client.cli.NodeCLI", ["-list", "-states", "RUNNING"],
                          check=False)
        # as the worker's cm-ready greps it: a line that starts (after padding) with ADDRESS:PORT
        return all(re.search(rf"^ *{re.escape(h.addr)}:", nodes.stdout, re.M) for h in self.worker_hosts)

    def wait_ready(self) -> None:
        try:
            wait_for("every DataNode live and every NodeManager running", self.ready,
                     timeout=self.timeout, interval=1.0)
        except TimeoutError as exc:
            tails = "\n".join(f"--- {k}\n{self.log_tail(k, 1500)}" for k in self.procs)
            raise RuntimeError(f"{exc}\n{tails}") from None

    # -- clients ------------------------------------------------------------------------------
    def java(self, main: str, args: list[str], check: bool = True, timeout: float | None = None,
             heap: str = "256m", extra_cp: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a Hadoop client class on the head (as `hdfs dfs`, `yarn node`, `hadoop jar` would)."""
        argv = self.private_argv(self.head.name, self.java_argv(main, args, heap))
        proc = self.head.run(argv, timeout=timeout or self.timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{main} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return proc

    def hdfs(self, args: list[str], **kw) -> subprocess.CompletedProcess[str]:
        """`hdfs dfs ARGS` on the head."""
        return self.java("org.apache.hadoop.fs.FsShell", args, **kw)

    def http_get(self, url: str) -> str:
        """GET ``url`` from inside the head's namespace (the lab's addresses live only there)."""
        code = ("import sys, urllib.request; "
                "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=30).read().decode())")
        proc = self.head.run(["python3", "-c", code, url], timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"GET {url}: {proc.stderr.strip()[-500:]}")
        return proc.stdout

    def run_on_head(self, argv: list[str], env: dict[str, str] | None = None,
                    timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Any command on the head in the environment of the recipe's hadoop-env.sh (e.g. spark-submit)."""
        script = f'. {self.conf_dir}/hadoop-env.sh && {SCRIPT_EXPORTS} && exec "$@"'
        return self.head.run(["sh", "-c", script, "sh", *argv], env={**os.environ, **(env or {})},
                             timeout=timeout or self.timeout)

    # -- teardown -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Kill the daemons this cluster started (and their containers), then the lab and temp dir."""
        for proc in self.procs.values():
            kill_tree(proc)
        self.procs.clear()
        self.lab.stop()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "HadoopCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
