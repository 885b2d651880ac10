"""The local image store (``$CM_HOME/images/NAME.sif`` with a small NAME.json beside it) and builds into it."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from cm.errors import Conflict, NotFound, UsageError
from cm.images import rootfs, sif

_NAME = re.compile(r"[A-Za-z0-9][\w.+-]*")


def images_dir(home: Path) -> Path:
    path = home / "images"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def check_name(name: str) -> str:
    name = name.removesuffix(".sif")
    if not _NAME.fullmatch(name):
        raise UsageError(f"bad image name '{name}': use letters, digits, '.', '-', '_' and '+'")
    return name


def image_path(home: Path, name: str) -> Path:
    """The SIF of a stored image; NotFound lists what there is."""
    path = images_dir(home) / f"{check_name(name)}.sif"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in images_dir(home).glob("*.sif"))) or "none"
        raise NotFound(f"no image '{name}' (images: {known}; build one with `cm singularity build`)")
    return path


def _meta_path(sif_path: Path) -> Path:
    return sif_path.with_suffix(".json")


def describe(sif_path: Path) -> dict[str, Any]:
    """The image's stored facts, its checksum computed once per change of the file."""
    try:
        meta = json.loads(_meta_path(sif_path).read_text())
    except (OSError, ValueError):
        meta = {"name": sif_path.stem}
    stat = sif_path.stat()
    key = [stat.st_size, stat.st_mtime_ns]
    if meta.get("key") != key:
        meta.update(key=key, size=stat.st_size, sha256=sha256(sif_path),
                    created=meta.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(stat.st_mtime)))
        _write_meta(sif_path, meta)
    return meta


def _write_meta(sif_path: Path, meta: dict[str, Any]) -> None:
    tmp = _meta_path(sif_path).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, _meta_path(sif_path))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_images(home: Path) -> list[dict[str, Any]]:
    return [describe(p) for p in sorted(images_dir(home).glob("*.sif"))]


def delete(home: Path, name: str) -> None:
    path = image_path(home, name)
    path.unlink()
    _meta_path(path).unlink(missing_ok=True)


def build(home: Path, name: str, *, from_dir: Path | None = None, def_file: Path | None = None,
          force: bool = False, cache: Path | None = None) -> dict[str, Any]:
    """Build NAME.sif from a root directory or a definition file; nothing is left behind on failure."""
    from cm.images.definition import parse

    name = check_name(name)
    out = images_dir(home) / f"{name}.sif"
    if out.exists() and not force:
        raise Conflict(f"image '{name}' exists; delete it first or build with --force")
    if from_dir is not None and not from_dir.is_dir():
        raise UsageError(f"--from {from_dir}: not a directory")
    definition = parse(def_file) if def_file is not None else None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f".build-{name}-", dir=images_dir(home)) as tmp:
        work = Path(tmp)
        if definition is not None:
            root = work / "root"
            if definition.bootstrap == "debootstrap":
                rootfs.debootstrap(definition, root, cache)
            else:
                root.mkdir()
                rootfs.from_local_image(definition, root)
            rootfs.copy_files(definition, root)
            rootfs.run_post(definition, root)
        else:
            root = from_dir  # type: ignore[assignment]
        labels = _labels(definition)
        pseudo = rootfs.pseudo_lines(root, rootfs.metadata(definition), json.dumps(labels, indent=2, sort_keys=True),
                                     work / "meta")
        squash = work / "root.squashfs"
        sif.squashfs(root, squash, pseudo)
        sif.assemble(out, squash, definition.text if definition else "", labels)
    meta = {"name": name, "source": str(def_file or from_dir), "bootstrap": definition.bootstrap if definition
            else "directory", "labels": labels, "build_seconds": round(time.monotonic() - started, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    _write_meta(out, meta)
    return meta


def _labels(definition: Any) -> dict[str, str]:
    labels = {"org.label-schema.schema-version": "1.0",
              "org.label-schema.build-date": time.strftime("%A_%d_%B_%Y_%H:%M:%S_%Z"),
              "org.label-schema.build-arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                                                       platform.machine()),
              "org.label-schema.usage.singularity.deffile.bootstrap": definition.bootstrap if definition else ""}
    if definition is not None:
        labels.update(definition.labels)
        for key in ("osversion", "mirrorurl", "from"):
            if definition.get(key):
                labels[f"org.label-schema.usage.singularity.deffile.{key}"] = definition.get(key)
    return labels


def inspect(home: Path, name: str) -> dict[str, Any]:
    """What the SIF itself says: its objects, labels, definition and runscript."""
    path = image_path(home, name)
    meta = describe(path)
    objects = sif.objects(path)
    labels_obj, def_obj = sif.find(path, "JSON.Labels"), sif.find(path, "Def.FILE")
    labels = json.loads(sif.dump(path, int(labels_obj["id"]))) if labels_obj else {}
    definition = sif.dump(path, int(def_obj["id"])).decode(errors="replace") if def_obj else ""
    return {"name": meta["name"], "path": str(path), "size": meta["size"], "sha256": meta["sha256"],
            "created": meta.get("created", ""), "bootstrap": meta.get("bootstrap", ""), "labels": labels,
            "objects": [f"{o['id']} {o['type']} {o['start']}-{o['end']}" for o in objects],
            "definition": definition}
