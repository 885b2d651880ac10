"""Slurm accounting for ``SlurmCluster(accounting=True)``: a private MariaDB and slurmdbd.

MariaDB (own datadir copied from a template cached under ~/.cache/cm-tests/infra, loopback
port ``cluster.db_port``, unix socket in the cluster's temp dir, a ``slurm`` user with a random
password kept only in the 0600 slurmdbd.conf), then slurmdbd on ``cluster.dbd_port``, then the
cluster, accounts and user associations through ``sacctmgr``.  Called by ``SlurmCluster.start``;
the daemons go into ``cluster.procs`` so ``stop`` kills them.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tests.infra.procs import wait_for

if TYPE_CHECKING:
    from tests.infra.slurm import SlurmCluster

# the real home: tests swap HOME for a temp dir, the cache must outlive them
CACHE = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "cm-tests" / "infra"


def mariadb_template(timeout: float) -> Path:
    """An initialised MariaDB datadir cached under ~/.cache/cm-tests (copying it beats install-db 3x)."""
    version = subprocess.run(["mariadbd", "--version"], capture_output=True, text=True).stdout
    tag = hashlib.sha256(version.encode()).hexdigest()[:12]
    template = CACHE / f"mariadb-datadir-{tag}"
    if not template.is_dir():
        CACHE.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix="mariadb-building-", dir=CACHE))
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={building / 'data'}",
                        "--user=root", "--auth-root-authentication-method=socket", "--skip-test-db"],
                       capture_output=True, check=True, timeout=timeout)
        try:
            (building / "data").rename(template)   # atomic: concurrent builders race harmlessly
        except OSError:
            pass
        shutil.rmtree(building, ignore_errors=True)
    return template


def start_accounting(cluster: "SlurmCluster") -> None:
    """A private MariaDB (own datadir, loopback port) and slurmdbd, then the cluster and accounts."""
    t = cluster.tmp
    datadir, sock = t / "db" / "data", t / "db" / "mysqld.sock"
    shutil.copytree(mariadb_template(cluster.timeout), datadir, symlinks=True)
    cluster.spawn("mariadb", ["mariadbd", "--no-defaults", f"--datadir={datadir}", f"--socket={sock}",
                              "--bind-address=127.0.0.1", f"--port={cluster.db_port}", "--user=root",
                              f"--pid-file={t / 'db' / 'mysqld.pid'}",
                              f"--log-error={t / 'log' / 'mariadb.log'}",
                              "--innodb-buffer-pool-size=16M", "--skip-name-resolve",
                              # a throw-away test database: no fsync (slurmdbd creates ~40 tables)
                              "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
                              "--innodb-flush-method=nosync"], cluster.head)
    password = secrets.token_hex(16)
    sql = (f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}';"
           "GRANT ALL ON *.* TO 'slurm'@'127.0.0.1';")

    def create_user() -> bool:
        cmd = ["mariadb", "--no-defaults", f"--socket={sock}", "-uroot", "-e", sql]
        return cluster.alive() and cluster.run(cmd).returncode == 0
    wait_for("MariaDB", create_user, cluster.timeout, 0.3)
    dbd_conf = t / "etc" / "slurmdbd.conf"
    dbd_conf.write_text("\n".join([
        "AuthType=auth/munge", f"AuthInfo=socket={cluster.munge_socket}", "DbdHost=localhost",
        "DbdAddr=127.0.0.1", f"DbdPort={cluster.dbd_port}", "SlurmUser=root",
        f"LogFile={t / 'log' / 'slurmdbd.log'}", f"PidFile={t / 'run' / 'slurmdbd.pid'}",
        "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
        f"StoragePort={cluster.db_port}", "StorageUser=slurm", f"StoragePass={password}",
        f"StorageLoc=acct_{cluster.cluster_name}",
    ]) + "\n")
    dbd_conf.chmod(0o600)
    cluster.spawn("slurmdbd", ["slurmdbd", "-D"], cluster.head)
    wait_for("slurmdbd", lambda: cluster.alive()
             and cluster.run(["sacctmgr", "-n", "list", "cluster"]).returncode == 0, cluster.timeout, 0.3)
    cluster.sacctmgr("add", "cluster", cluster.cluster_name)
    for account, users in cluster.accounts.items():
        cluster.sacctmgr("add", "account", account, f"cluster={cluster.cluster_name}")
        for user in users:
            cluster.sacctmgr("add", "user", user, f"account={account}", f"cluster={cluster.cluster_name}")
