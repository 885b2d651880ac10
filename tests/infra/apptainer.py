"""A real Apptainer for the tests, built once from its Go module source and cached.

The Go module proxy serves Apptainer's source (some versions only; the checksum
database is not reachable, so GOSUMDB is off for this one download). mconfig and
make then build it with the Debian packages scripts/install-system-packages.sh
installs (gcc, pkg-config, libseccomp-dev, squashfs-tools). The result lives in
~/.cache/cm-tests/apptainer/<version>/ where later runs find it.

    python tests/infra/apptainer.py            # build (or find) it, print the binary
    python tests/infra/apptainer.py --background   # start the build and return at once
"""
from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

VERSION = "1.4.3"
CACHE = Path(os.environ.get("CM_TESTS_CACHE") or Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "cm-tests") / "apptainer"


def prefix(version: str = VERSION) -> Path:
    """Where this version is installed."""
    return CACHE / version


def binary(version: str = VERSION) -> Path | None:
    """The installed apptainer binary, or None when it is not built (yet)."""
    path = prefix(version) / "bin" / "apptainer"
    return path if path.is_file() and (prefix(version) / ".complete").exists() else None


def failure(version: str = VERSION) -> str | None:
    """Where the last build broke, one line, or None."""
    path = prefix(version) / ".failed"
    return path.read_text().strip() if path.exists() else None


def _run(cmd: list[str], log, cwd: Path | None = None, env: dict | None = None) -> None:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    done = subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} exited {done.returncode}")


def _go_env() -> dict:
    env = dict(os.environ)
    env.update(GOFLAGS="-mod=mod", GOSUMDB="off", GOTOOLCHAIN="local")
    env["PATH"] = "/usr/local/go/bin:" + env.get("PATH", "")
    return env


def _download(version: str, log) -> Path:
    env = _go_env()
    out = subprocess.run(["go", "mod", "download", "-json", f"github.com/apptainer/apptainer@v{version}"],
                         capture_output=True, text=True, env=env, cwd=CACHE)
    log.write(out.stdout + out.stderr)
    info = json.loads(out.stdout or "{}")
    if info.get("Error") or not info.get("Dir"):
        raise RuntimeError(f"go mod download: {info.get('Error') or out.stderr.strip()}")
    return Path(info["Dir"])


def _restore_modes(tree: Path) -> None:
    """Module zips drop file modes: make the tree writable and its scripts executable again."""
    for path in tree.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
            continue
        with open(path, "rb") as handle:
            script = handle.read(2) == b"#!"
        path.chmod(0o755 if script else 0o644)


def configure(version: str = VERSION) -> None:
    """Site settings of the test install.  This machine's root lacks CAP_SYS_RESOURCE in its
    bounding set, and Apptainer's default for root ("full": every capability) makes the starter
    fail with "Requesting capability set ... while permitted capability set is ..."; "file" gives
    root the capabilities of the capability file (none), which works here and on real systems."""
    conf = prefix(version) / "etc" / "apptainer" / "apptainer.conf"
    text = conf.read_text()
    wanted = "root default capabilities = file"
    if wanted not in text:
        conf.write_text(text.replace("root default capabilities = full", wanted))


def build(version: str = VERSION) -> Path:
    """Build and install Apptainer VERSION under the cache (once; concurrent callers wait)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if found := binary(version):
            configure(version)
            return found
        dest = prefix(version)
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        src = CACHE / f"src-{version}"
        with open(dest / "build.log", "w") as log:
            try:
                module = _download(version, log)
                shutil.rmtree(src, ignore_errors=True)
                shutil.copytree(module, src)
                _restore_modes(src)
                (src / "VERSION").write_text(version + "\n")
                env = _go_env()
                _run(["./mconfig", "-b", "builddir", f"--prefix={dest}", "--without-suid",
                      "--without-libsubid"], log, cwd=src, env=env)
                _run(["make", "-C", "builddir", "-j2"], log, cwd=src, env=env)
                _run(["make", "-C", "builddir", "install"], log, cwd=src, env=env)
            except Exception as exc:  # record where it broke for the report and the tests
                (dest / ".failed").write_text(f"{exc} (log: {dest / 'build.log'})\n")
                raise
        configure(version)
        (dest / ".complete").write_text(version + "\n")
        shutil.rmtree(src, ignore_errors=True)
        return dest / "bin" / "apptainer"


def build_in_background(version: str = VERSION) -> None:
    """Start the build in a detached process unless it is built or already failed."""
    if binary(version) or failure(version):
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.Popen([sys.executable, __file__, version], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    wanted = args[0] if args else VERSION
    if "--background" in sys.argv:
        build_in_background(wanted)
        sys.exit(0)
    try:
        print(build(wanted))
    except Exception as exc:
        print(f"apptainer build failed: {exc}", file=sys.stderr)
        sys.exit(1)
