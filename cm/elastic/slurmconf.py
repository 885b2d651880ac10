"""slurm.conf as cm reads and rewrites it: settings, nodes, partitions, and cm's own block.

cm never edits a line it did not write: settings it must change are commented out with
``#cm-burst-was# `` in front (so `cm slurm burst disable` restores them exactly), and its
own lines sit between ``# BEGIN cm burst`` and ``# END cm burst`` (``backfill`` likewise).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cm.errors import UsageError

BEGIN, END = "# BEGIN cm burst", "# END cm burst"
WAS = "#cm-burst-was# "


def markers(block: str) -> tuple[str, str, str]:
    """(begin, end, was) of cm's block named ``block`` (burst or backfill)."""
    return f"# BEGIN cm {block}", f"# END cm {block}", f"#cm-{block}-was# "
# Settings whose value is a comma list cm adds to instead of replacing.
LISTS = ("CommunicationParameters", "SlurmctldParameters", "PrivateData")
_KEY = re.compile(r"^\s*([A-Za-z]+)\s*=\s*(.*?)\s*$")


@dataclass
class SlurmConf:
    """The parts of one slurm.conf that cm needs (keys case-insensitive, as Slurm reads them)."""

    path: Path
    lines: list[str]
    settings: dict[str, str] = field(default_factory=dict)   # lower-case key -> value (last wins)
    nodes: list[str] = field(default_factory=list)           # NodeName expressions, DEFAULT excluded
    node_lines: list[str] = field(default_factory=list)
    partitions: list[str] = field(default_factory=list)

    def get(self, key: str, default: str = "") -> str:
        return self.settings.get(key.lower(), default)

    @property
    def cluster(self) -> str:
        return self.get("ClusterName")

    @property
    def has_block(self) -> bool:
        return self.has("burst")

    def has(self, block: str) -> bool:
        return any(line.strip().startswith(markers(block)[0]) for line in self.lines)


def read(path: Path) -> SlurmConf:
    """Parse the local file ``path``; a missing or unreadable file is a usage error naming it."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read slurm.conf {path}: {exc.strerror or exc}") from None
    return parse(path, text)


def parse(path: Path, text: str) -> SlurmConf:
    """The slurm.conf ``text`` read from ``path`` (here or on the controller host)."""
    conf = SlurmConf(Path(path), text.splitlines())
    for line in conf.lines:
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        match = _KEY.match(words[0])
        if not match:
            continue
        key, value = match.group(1), match.group(2)
        if key.lower() == "nodename":
            if value.lower() != "default":
                conf.nodes.append(value)
                conf.node_lines.append(line.strip())
        elif key.lower() == "partitionname":
            conf.partitions.append(value)
        else:
            conf.settings[key.lower()] = line.split("#", 1)[0].strip().split("=", 1)[1].strip()
    if not conf.cluster:
        raise UsageError(f"{path} is not a slurm.conf cm can use: it has no ClusterName")
    return conf


def block_settings(conf: SlurmConf, wanted: dict[str, str]) -> dict[str, str]:
    """``wanted`` with the comma-list settings merged into what the file already had."""
    merged = dict(wanted)
    for key in LISTS:
        if key in wanted and conf.get(key):
            have = [v for v in conf.get(key).split(",") if v]
            merged[key] = ",".join(dict.fromkeys(have + wanted[key].split(",")))
    return merged


def with_block(conf: SlurmConf, settings: dict[str, str], lines: list[str], note: str, block: str = "burst") -> str:
    """The file's text with cm's block (``settings`` then ``lines``) in place of any earlier one;
    settings the file had are commented out so that removing the block restores them."""
    begin, end, was = markers(block)
    body = _without_block(conf.lines, block)
    keys = {k.lower() for k in settings}
    out = []
    for line in body:
        match = _KEY.match(line.split("#", 1)[0]) if not line.lstrip().startswith("#") else None
        if match and match.group(1).lower() in keys:
            out.append(was + line)
        else:
            out.append(line)
    text = [f"{begin} ({note}; `cm slurm burst disable` removes it)",
            *(f"{k}={v}" for k, v in settings.items()), *lines, end]
    return "\n".join(out + text) + "\n"


def without_block(conf: SlurmConf, *blocks: str) -> str:
    """The file as it was before cm wrote its blocks (default: burst's), in one pass over the text."""
    lines = conf.lines
    for block in blocks or ("burst",):
        lines = _without_block(lines, block)
    return "\n".join(lines) + "\n"


def _without_block(lines: list[str], block: str) -> list[str]:
    begin, end, was = markers(block)
    out, inside = [], False
    for line in lines:
        if line.strip().startswith(begin):
            inside = True
        elif line.strip() == end:
            inside = False
        elif not inside:
            out.append(line[len(was):] if line.startswith(was) else line)
    return out


def node_path(conf: SlurmConf, key: str, node: str) -> str:
    """A per-node path setting (SlurmdSpoolDir, SlurmdLogFile, SlurmdPidFile) for ``node``."""
    return conf.get(key).replace("%n", node).replace("%h", node)


def munge_socket(conf: SlurmConf) -> str:
    """The munge socket the daemons use: AuthInfo=socket=PATH, else munge's default."""
    for item in conf.get("AuthInfo").split(","):
        if item.startswith("socket="):
            return item.split("=", 1)[1]
    return "/run/munge/munge.socket.2"
