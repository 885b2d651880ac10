"""SIF files: a squashfs root in the primary system partition, the definition and labels as descriptors.

Built with squashfs-tools and siftool (Debian packages), in the layout Singularity
and Apptainer read: data type 1 the definition file, 3 the labels (JSON), 4 the
root file system (partition type 2 = primary system, fs 1 = squashfs, arch 2 = amd64).
The image's own files (/.singularity.d: runscript, environment, labels, the
definition) go into the squashfs as mksquashfs pseudo files, so the root tree
given to a build is never copied or changed.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from cm.errors import ConfigError, ProviderError, UsageError

DEFFILE, LABELS, PARTITION = 1, 3, 4
PRIMARY_SYSTEM, SQUASHFS = 2, 1
ARCH = {"x86_64": 2, "aarch64": 4, "ppc64le": 6, "s390x": 7, "i686": 1, "i386": 1}  # siftool's arch codes


def tool(name: str) -> str:
    """The path of a build tool, or a one-line ConfigError naming its Debian package."""
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if not found:
        package = {"mksquashfs": "squashfs-tools", "unsquashfs": "squashfs-tools"}.get(name, name)
        raise ConfigError(f"{name} is not installed (Debian package {package}; scripts/install-system-packages.sh)")
    return found


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True)
    if done.returncode:
        lines = [line for line in done.stderr.decode(errors="replace").splitlines() if line.strip()]
        raise ProviderError(f"{what} failed: {lines[-1] if lines else f'exit status {done.returncode}'}")
    return done


def squashfs(root: Path, out: Path, pseudo: list[str]) -> None:
    """mksquashfs ROOT OUT -all-root -noappend, plus the pseudo-file lines."""
    cmd = [tool("mksquashfs"), str(root), str(out), "-all-root", "-noappend", "-quiet", "-no-progress"]
    if pseudo:
        listing = out.with_suffix(".pseudo")
        listing.write_text("\n".join(pseudo) + "\n")
        cmd += ["-pf", str(listing)]
    _run(cmd, "mksquashfs")


def assemble(out: Path, squash: Path, definition: str, labels: dict[str, str]) -> None:
    """A new SIF at ``out`` from the squashfs, the definition text and the labels (atomically)."""
    siftool = tool("siftool")
    arch = ARCH.get(platform.machine(), 2)
    with tempfile.TemporaryDirectory(prefix="cm-sif-", dir=out.parent) as tmp:
        work = Path(tmp)
        (work / "Singularity").write_text(definition or "")
        (work / "labels.json").write_text(json.dumps(labels, indent=2, sort_keys=True))
        sif = work / out.name
        _run([siftool, "new", str(sif)], "siftool new")
        if definition:
            _run([siftool, "add", str(sif), str(work / "Singularity"), "--datatype", str(DEFFILE)], "siftool add")
        _run([siftool, "add", str(sif), str(work / "labels.json"), "--datatype", str(LABELS)], "siftool add")
        _run([siftool, "add", str(sif), str(squash), "--datatype", str(PARTITION), "--parttype", str(PRIMARY_SYSTEM),
              "--partfs", str(SQUASHFS), "--partarch", str(arch), "--groupid", "1"], "siftool add")
        sif.replace(out)


def objects(sif: Path) -> list[dict[str, object]]:
    """The data objects of a SIF (``siftool list``): id, group, start, end, type."""
    out = _run([tool("siftool"), "list", str(sif)], f"reading {sif.name}").stdout.decode()
    found = []
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 5 and cells[0].isdigit():
            start, _, end = cells[3].partition("-")
            found.append({"id": int(cells[0]), "group": cells[1], "start": int(start), "end": int(end),
                          "type": cells[4]})
    if not found:
        raise UsageError(f"{sif} is not a SIF image (siftool lists no data objects)")
    return found


def dump(sif: Path, object_id: int) -> bytes:
    return _run([tool("siftool"), "dump", str(object_id), str(sif)], f"reading {sif.name}").stdout


def find(sif: Path, kind: str) -> dict[str, object] | None:
    """The first object whose type starts with ``kind`` (Def.FILE, JSON.Labels, FS)."""
    return next((o for o in objects(sif) if str(o["type"]).startswith(kind)), None)


def system_partition(sif: Path) -> dict[str, object]:
    part = next((o for o in objects(sif) if str(o["type"]).startswith("FS") and "*System" in str(o["type"])), None)
    if not part:
        raise UsageError(f"{sif} has no primary system partition")
    return part


def unpack(sif: Path, dest: Path) -> None:
    """Extract the root file system of a SIF into ``dest`` (unsquashfs at the partition's offset)."""
    part = system_partition(sif)
    if "Squashfs" not in str(part["type"]):
        raise UsageError(f"{sif}: its root file system is not squashfs ({part['type']})")
    _run([tool("unsquashfs"), "-no-progress", "-quiet", "-f", "-o", str(part["start"]), "-d", str(dest), str(sif)],
         f"unpacking {sif.name}")
