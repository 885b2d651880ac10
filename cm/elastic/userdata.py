"""The boot script that makes a fresh VM a slurmd of the cluster (cloud-init runs it as user-data;
so does any image whose init runs a ``#!`` user-data): the cluster's munge key and slurm.conf,
the directories the conf names, then munged and ``slurmd -N NODE -b``."""

from __future__ import annotations

import base64
import shlex
from pathlib import Path

from cm.elastic import slurmconf

KEY_IN_GUEST = "/etc/munge/cm-burst.key"
CONF_IN_GUEST = "/etc/slurm/slurm.conf"


def script(conf: slurmconf.SlurmConf, node: str, munge_key: bytes) -> str:
    """The user-data of cloud node ``node``: a POSIX shell script (it holds the munge key: the
    seed it travels in is as secret as the key itself)."""
    socket = slurmconf.munge_socket(conf)
    dirs = {str(Path(socket).parent), "/etc/slurm", "/etc/munge", "/run/cm-burst"}
    for key in ("SlurmdSpoolDir", "SlurmdLogFile", "SlurmdPidFile"):
        value = slurmconf.node_path(conf, key, node)
        if value:
            dirs.add(value if key == "SlurmdSpoolDir" else str(Path(value).parent))
    text = "\n".join(conf.lines) + "\n"
    munged = ["munged", "--force", f"--socket={socket}", f"--key-file={KEY_IN_GUEST}",
              "--pid-file=/run/cm-burst/munged.pid", "--seed-file=/run/cm-burst/munged.seed",
              "--log-file=/run/cm-burst/munged.log"]
    return "\n".join([
        "#!/bin/sh",
        f"# cm slurm burst: make this VM node {node} of Slurm cluster {conf.cluster}",
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "umask 077",
        f"mkdir -p {' '.join(shlex.quote(d) for d in sorted(dirs))}",
        f"echo {base64.b64encode(munge_key).decode()} | base64 -d > {KEY_IN_GUEST}",
        f"chmod 0400 {KEY_IN_GUEST}",
        "umask 022",
        f"cat > {CONF_IN_GUEST} <<'CM_BURST_CONF'",
        text.rstrip("\n"),
        "CM_BURST_CONF",
        f"{shlex.join(munged)} < /dev/null",
        f"i=0; while [ ! -S {shlex.quote(socket)} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done",
        f"SLURM_CONF={CONF_IN_GUEST} setsid slurmd -b -N {shlex.quote(node)} -f {CONF_IN_GUEST} < /dev/null "
        "> /run/cm-burst/slurmd.out 2>&1 &",
        f"echo 'cm-burst: slurmd {node} started'",
        "",
    ])
