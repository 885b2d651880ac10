"""The root tree of an image: made by debootstrap or from a local SIF, %files copied, %post run in a chroot;
and the Singularity metadata (/.singularity.d) every image carries."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from cm.errors import ProviderError, UsageError
from cm.images import sif
from cm.images.definition import Definition

# Mount points and files Apptainer binds into a container; an image without them still runs,
# but only where the runtime can fake them (underlay), so every image gets them.
MOUNT_DIRS = ("proc", "sys", "dev", "tmp", "var/tmp", "home", "root", "etc", "mnt", "opt", "srv")
MOUNT_FILES = ("etc/hosts", "etc/resolv.conf", "etc/passwd", "etc/group")

RUN_ACTION = """#!/bin/sh
for script in /.singularity.d/env/*.sh; do [ -f "$script" ] && . "$script"; done
if [ -x /.singularity.d/runscript ]; then exec /.singularity.d/runscript "$@"; fi
echo "no runscript in this image" >&2; exit 1
"""
EXEC_ACTION = """#!/bin/sh
for script in /.singularity.d/env/*.sh; do [ -f "$script" ] && . "$script"; done
exec "$@"
"""
SHELL_ACTION = """#!/bin/sh
for script in /.singularity.d/env/*.sh; do [ -f "$script" ] && . "$script"; done
exec /bin/sh "$@"
"""


def metadata(definition: Definition | None) -> dict[str, tuple[int, str]]:
    """The files of /.singularity.d: {path in the image: (mode, content)}."""
    files = {".singularity.d/actions/run": (0o755, RUN_ACTION), ".singularity.d/actions/exec": (0o755, EXEC_ACTION),
             ".singularity.d/actions/shell": (0o755, SHELL_ACTION),
             ".singularity.d/env/01-base.sh": (0o644, "#!/bin/sh\n")}
    if definition is not None:
        if definition.runscript:
            files[".singularity.d/runscript"] = (0o755, "#!/bin/sh\n" + "\n".join(definition.runscript) + "\n")
        if definition.environment:
            files[".singularity.d/env/90-environment.sh"] = (0o644, "#!/bin/sh\n" + "\n".join(definition.environment)
                                                              + "\n")
        files[".singularity.d/Singularity"] = (0o644, definition.text)
    return files


def pseudo_lines(root: Path, files: dict[str, tuple[int, str]], labels: str, staging: Path) -> list[str]:
    """mksquashfs pseudo definitions adding ``files`` (and labels, mount points) where ``root`` lacks them."""
    staging.mkdir(parents=True, exist_ok=True)
    files = {**files, ".singularity.d/labels.json": (0o644, labels)}
    lines: list[str] = []
    made: set[str] = set()

    def directory(path: str) -> None:
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub and sub not in made and not (root / sub).exists():
                lines.append(f"{_quote(sub)} d 755 0 0")
            made.add(sub)

    for path in MOUNT_DIRS:
        directory(path)
    for path in MOUNT_FILES:
        if not (root / path).exists():
            directory(str(Path(path).parent))
            lines.append(f"{_quote(path)} f 644 0 0 true")
    for number, (path, (mode, content)) in enumerate(sorted(files.items())):
        if (root / path).exists() and not path.endswith("labels.json"):
            continue  # the tree brings its own (an unpacked image, a user's directory)
        directory(str(Path(path).parent))
        source = staging / f"file-{number}"
        source.write_text(content)
        lines.append(f"{_quote(path)} f {mode:o} 0 0 cat {shlex.quote(str(source))}")
    for link, target in (("singularity", ".singularity.d/runscript"),
                         ("environment", ".singularity.d/env/90-environment.sh")):
        if not (root / link).exists() and not (root / link).is_symlink() and target in files:
            lines.append(f"{link} s 777 0 0 {target}")
    return lines


def _quote(path: str) -> str:
    return '"' + path.replace('"', '\\"') + '"' if " " in path else path


def debootstrap(definition: Definition, root: Path, cache: Path | None) -> None:
    """A minimal Debian root from the definition's OSVersion, MirrorURL and Include."""
    cmd = [sif.tool("debootstrap"), "--variant=minbase"]
    include = ",".join(definition.get("include").replace(",", " ").split())
    if include:
        cmd.append(f"--include={include}")
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
        cmd.append(f"--cache-dir={cache}")
    cmd += [definition.get("osversion"), str(root), definition.get("mirrorurl") or "http://deb.debian.org/debian"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        raise ProviderError(f"debootstrap failed: {lines[-1] if lines else done.returncode}")


def from_local_image(definition: Definition, root: Path) -> None:
    """The root of the SIF named by From:, unpacked (its old metadata replaced by this build's)."""
    source = Path(definition.get("from")).expanduser()
    if not source.is_absolute():
        source = definition.path.resolve().parent / source
    if not source.is_file():
        raise UsageError(f"{definition.path}: From: {definition.get('from')} is not a file")
    sif.unpack(source, root)
    for name in ("runscript", "Singularity", "env/90-environment.sh", "labels.json"):
        (root / ".singularity.d" / name).unlink(missing_ok=True)


def copy_files(definition: Definition, root: Path) -> None:
    """The %files section: host paths copied to paths in the image."""
    for src, dest in definition.files:
        if not src.exists():
            raise UsageError(f"{definition.path}: %files source {src} does not exist")
        target = root / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(src, target)


def run_post(definition: Definition, root: Path) -> None:
    """%post in a chroot, in private mount and PID namespaces (proc and /dev mounted there only)."""
    if not definition.post:
        return
    script = "set -e\n" + "\n".join(definition.post) + "\n"
    (root / "tmp").mkdir(exist_ok=True)
    for sub in ("proc", "dev"):
        (root / sub).mkdir(exist_ok=True)
    shell = "/bin/bash" if (root / "bin/bash").exists() else "/bin/sh"
    inner = (f"mount --make-rprivate / && mount -t proc proc {shlex.quote(str(root / 'proc'))} && "
             f"mount --rbind /dev {shlex.quote(str(root / 'dev'))} && "
             f"exec chroot {shlex.quote(str(root))} {shell} -c {shlex.quote(script)}")
    cmd = [sif.tool("unshare"), "--mount", "--pid", "--fork"]
    if os.geteuid() != 0:
        cmd.append("--map-root-user")
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive", "SINGULARITY_ROOTFS": "/"}
    done = subprocess.run([*cmd, "/bin/sh", "-c", inner], capture_output=True, text=True, env=env)
    if done.returncode:
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        raise ProviderError(f"%post failed (exit {done.returncode}): {lines[-1] if lines else 'no output'}")
