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
``PREFIX/hadoop/etc/hadoop`` (``--param prefix`` is the test's temp dir; ``PREFIX/hadoop/share``
is the cached jars ``tests.infra.hadoop_jars`` fetched for the recipe's ``hadoop_version``, as
the recipe's install.sh would unpack a release).  The head runs NameNode (formatted first) and
ResourceManager; each worker a DataNode and NodeManager, started as Hadoop's scripts do: the
recipe's hadoop-env.sh sourced (JAVA_HOME, HADOOP_HOME, HADOOP_OPTS with the ``--add-opens``
Java 17 needs), then ``java $HADOOP_OPTS -cp CONF:... MAIN``.  Each daemon sees its own private dir bind-mounted over /var/lib
and /var/log (its own mount namespace), so the recipe's paths (/var/lib/hadoop/name, .../data)
are used as rendered.  Default ports are fine: every node has its own network namespace.

Ready as the recipe defines it: ``hdfs dfsadmin -report -live`` lists every worker's address and
``yarn node -list -states RUNNING`` every worker's name.  Stop kills exactly the pids it started
(process groups and descendants, e.g. YARN containers), then the Lab removes the namespaces and
the temp dir; a start first reaps what a killed run with the same prefix left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.infra.hadoop_jars import hadoop_home, lib_dir, webapps_dir
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
LOG4J = """log4j.rootLogger=INFO,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{HH:mm:ss,SSS} %p %c{2}: %m%n
"""

# What a release's etc/hadoop holds besides the files the recipe writes over (the recipe copies its
# files into the release's conf dir): the CapacityScheduler's one default queue.
RELEASE_CONF = {"capacity-scheduler.xml": """<?xml version="1.0"?>
<configuration>
  <property><name>yarn.scheduler.capacity.maximum-am-resource-percent</name><value>0.5</value></property>
  <property><name>yarn.scheduler.capacity.root.queues</name><value>default</value></property>
  <property><name>yarn.scheduler.capacity.root.default.capacity</name><value>100</value></property>
  <property><name>yarn.scheduler.capacity.root.default.maximum-capacity</name><value>100</value></property>
  <property><name>yarn.scheduler.capacity.root.default.state</name><value>RUNNING</value></property>
</configuration>
""", "log4j.properties": LOG4J}


def recipe_cluster(workers: int, name: str = "c1", prefix: Path | None = None):
    """The shipped Hadoop recipe and a cluster record of it, planned as ``cm hadoop -n WORKERS
    [--param prefix=PREFIX]``."""
    from cm import recipes
    from cm.clusters import plan

    recipe = recipes.load(recipes.shipped_dir() / "hadoop.yaml")
    cluster = plan.offline(recipe, workers, name)
    if prefix:
        cluster["params"] = recipe.params({"prefix": str(prefix)})
    return recipe, cluster


class HadoopCluster:
    """A Hadoop cluster of real daemons (see the module docstring)."""

    def __init__(self, prefix: str, workers: int = 2, name: str = "c1",
                 timeout: float = HADOOP_TIMEOUT) -> None:
        self.prefix, self.workers, self.name, self.timeout = prefix, workers, name, timeout
        self.lab = Lab(prefix)
        self.procs: dict[str, subprocess.Popen] = {}
        self.hosts: dict[str, Host] = {}
        self.roles: dict[str, str] = {}
        self.files: dict[str, str] = {}
        self.outputs: dict[str, str] = {}
        self.tmp: Path | None = None
        self.home: Path | None = None
        self.timings: dict[str, float] = {}

    # -- setup ------------------------------------------------------------------------------
    def start(self) -> "HadoopCluster":
        """Fetch the jars, render the recipe for the lab's nodes, start the daemons, wait until ready."""
        reap_stale(self.prefix, "hadoop")
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-hadoop-"))
        recipe, cluster = recipe_cluster(self.workers, self.name, self.tmp / "opt")
        try:
            t0 = time.monotonic()
            self.home = hadoop_home(str(cluster["params"]["hadoop_version"]))
            self.timings["fetch"] = time.monotonic() - t0
            self.install()
            t0 = time.monotonic()
            self.lab.start()
            self.place_nodes(recipe, cluster)
            self.start_daemons()
            self.wait_ready()
            self.timings["ready"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
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
        for fname, text in {**RELEASE_CONF, **self.files}.items():
            if fname != "install.sh":
                (conf / fname).write_text(text)

    def install(self) -> None:
        """PREFIX/hadoop as the recipe's install.sh leaves it: the release's share/ (the cached jars)
        and an etc/hadoop that the recipe's files are copied into."""
        (self.install_dir / "etc" / "hadoop").mkdir(parents=True)
        (self.install_dir / "share").symlink_to(self.home / "share")

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
        """The recipe's test: every worker live in `dfsadmin -report -live`, RUNNING in `yarn node -list`."""
        self.check_alive()
        report = self.java("org.apache.hadoop.hdfs.tools.DFSAdmin", ["-report", "-live"], check=False)
        if not all(f"Name: {h.addr}:" in report.stdout for h in self.worker_hosts):
            return False
        nodes = self.java("org.apache.hadoop.yarn.client.cli.NodeCLI", ["-list", "-states", "RUNNING"],
                          check=False)
        return all(h.name in nodes.stdout for h in self.worker_hosts)

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
