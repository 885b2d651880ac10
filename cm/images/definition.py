"""Singularity definition files, read with spython's parser.

spython (the maintained Python parser of Singularity recipes) reads the
sections: %post, %files, %environment, %labels, %runscript.  Its parser accepts
only ``Bootstrap: docker`` headers and turns a multi-line runscript into
Docker-style install lines, so cm's subclass accepts every bootstrap agent
(the header keywords are read here, before the first section) and keeps the
runscript as written.  Supported agents: debootstrap (OSVersion, MirrorURL,
Include) and localimage (From: a SIF file).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cm.errors import ConfigError, UsageError

AGENTS = ("debootstrap", "localimage")
_HEADER = re.compile(r"^\s*([A-Za-z][\w-]*)\s*:\s*(.*?)\s*$")


class Definition:
    """What a definition file asks for."""

    def __init__(self, path: Path, text: str, header: dict[str, str], sections: dict[str, Any]) -> None:
        self.path, self.text, self.header = path, text, header
        self.bootstrap = header.get("bootstrap", "").lower()
        self.post: list[str] = sections["post"]
        self.environment: list[str] = sections["environment"]
        self.runscript: list[str] = sections["runscript"]
        self.labels: dict[str, str] = sections["labels"]
        self.files: list[tuple[Path, str]] = sections["files"]

    def get(self, key: str, default: str = "") -> str:
        return self.header.get(key.lower(), default)


def read_header(text: str) -> dict[str, str]:
    """``Key: value`` lines before the first %section, keys lower-cased (as Singularity treats them)."""
    header: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip().startswith("%"):
            break
        if line.strip().startswith("#") or not line.strip():
            continue
        match = _HEADER.match(line)
        if match:
            header[match.group(1).lower()] = match.group(2)
    return header


def _parser_class() -> type:
    try:
        from spython.main.parse.parsers import SingularityParser
    except ImportError as exc:
        raise ConfigError("reading definition files needs spython: pip install 'cm[singularity]'") from exc

    class DefinitionParser(SingularityParser):
        """spython's parser, for every bootstrap agent and with the runscript kept whole."""

        def _check_bootstrap(self, line: str) -> None:
            pass  # the agent is read (and checked) from the header by cm

        def _run(self, lines: list[str]) -> None:
            self.recipe[self.active_layer].cmd = [x for x in lines if x not in ("", None)]

    return DefinitionParser


def parse(path: Path) -> Definition:
    """Read a definition file; UsageError names what is wrong with it."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read the definition file {path}: {exc.strerror}") from exc
    header = read_header(text)
    agent = header.get("bootstrap", "").lower()
    if not agent:
        raise UsageError(f"{path}: no 'Bootstrap:' line (cm builds from: {', '.join(AGENTS)})")
    if agent not in AGENTS:
        raise UsageError(f"{path}: bootstrap agent '{agent}' is not supported (cm builds from: {', '.join(AGENTS)})")
    if agent == "debootstrap" and not header.get("osversion"):
        raise UsageError(f"{path}: 'Bootstrap: debootstrap' needs an 'OSVersion:' line (bookworm, ...)")
    if agent == "localimage" and not header.get("from"):
        raise UsageError(f"{path}: 'Bootstrap: localimage' needs a 'From:' line naming a SIF file")
    try:
        recipe = _parser_class()(str(path)).recipe
    except Exception as exc:  # spython raises plain exceptions for malformed recipes
        raise UsageError(f"{path}: not a valid definition file: {exc}") from exc
    layer = next(iter(recipe.values())) if isinstance(recipe, dict) else recipe
    sections = {"post": list(layer.install), "environment": [f"export {e}" for e in layer.environ],
                "runscript": _runscript(layer.cmd), "labels": _labels(layer.labels),
                "files": _files(layer.files, path.resolve().parent)}
    return Definition(path, text, header, sections)


def _runscript(cmd: Any) -> list[str]:
    if not cmd:
        return []
    return list(cmd) if isinstance(cmd, list) else [str(cmd)]


def _labels(lines: list[str]) -> dict[str, str]:
    labels = {}
    for line in lines:
        key, _, value = line.strip().partition(" ")
        if key:
            labels[key] = value.strip()
    return labels


def _files(lines: list[Any], base: Path) -> list[tuple[Path, str]]:
    """%files lines ``SRC [DEST]`` with SRC relative to the definition file."""
    pairs = []
    for line in lines:
        words = line.split() if isinstance(line, str) else list(line)
        if not words:
            continue
        src = Path(words[0]).expanduser()
        src = src if src.is_absolute() else base / src
        pairs.append((src, words[1] if len(words) > 1 else words[0]))
    return pairs
