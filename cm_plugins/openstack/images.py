"""Adding an image to an OpenStack cloud: Glance create, then the file streamed up with a progress
bar, its disk format detected and its checksums checked against what Glance stored."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from openstack import exceptions as os_exc

from cm import diskformat
from cm.errors import Conflict, ProviderError, UsageError
from cm.provider import Image
from cm.transfer import DigestingReader, byte_progress
from cm_plugins.openstack import convert
from cm_plugins.openstack.session import translated

# Formats a Glance image may be uploaded as; qed is QEMU's own and Glance has no name for it.
GLANCE_FORMATS = ("qcow2", "raw", "vmdk", "vhd", "vhdx", "vdi", "iso")


def image_file(path: str) -> tuple[Path, str]:
    """The file ``path`` names and its Glance disk format; UsageError for what cannot be uploaded."""
    found = Path(path).expanduser()
    if not found.is_file():
        raise UsageError(f"no such file: {path}" if not found.exists() else f"{path} is not a file")
    if found.stat().st_size == 0:
        raise UsageError(f"{path} is empty")
    fmt, what = diskformat.detect(found)
    if fmt not in GLANCE_FORMATS:
        raise UsageError(f"{path} is {what}, which Glance does not take; convert it: "
                         f"qemu-img convert -O qcow2 {path} NAME.qcow2")
    return found, fmt


def _verify(stored: Any, sent: DigestingReader, cloud: str, name: str) -> None:
    """Glance's checksums of what it stored must be those of the file; without any, say nothing was checked."""
    checks = []
    algo = (getattr(stored, "hash_algo", None) or "").lower()
    if algo in sent.digests and getattr(stored, "hash_value", None):
        checks.append((algo, stored.hash_value, sent.hexdigest(algo)))
    if getattr(stored, "checksum", None):
        checks.append(("md5", stored.checksum, sent.hexdigest("md5")))
    if int(stored.size or 0) != sent.sent:
        checks.append(("size", str(stored.size), str(sent.sent)))
    for what, theirs, ours in checks:
        if theirs != ours:
            raise ProviderError(f"cloud '{cloud}': image '{name}' arrived damaged (its {what} is {theirs}, the "
                                f"file's is {ours}); it was deleted, try `cm image add` again")
    if not checks:
        raise ProviderError(f"cloud '{cloud}': Glance reports no checksum for image '{name}', so the upload "
                            "cannot be verified; it was deleted")


class ImagesMixin:
    """The OpenStack provider's image upload (`cm image add NAME FILE`)."""

    name: str
    _images: list[Image] | None

    if TYPE_CHECKING:  # the provider's own, which this mixin uses
        def service(self, name: str) -> Any: ...
        def list_images(self) -> list[Image]: ...

    @translated("add the image")
    def add_image(self, name: str, path: str) -> Image:
        file, fmt = image_file(path)
        if not name.strip():
            raise UsageError("an image needs a name")
        if any(image.name == name for image in self.list_images()):
            raise Conflict(f"image '{name}' already exists on cloud '{self.name}'; delete it first "
                           f"(cm image delete {name}) or pick another name")
        glance = self.service("image")
        image = glance.create_image(name=name, disk_format=fmt, container_format="bare", visibility="private")
        try:
            stored = self._upload(glance, image.id, file, name)
        except BaseException:
            try:
                glance.delete_image(image.id, ignore_missing=True)
            except Exception:  # noqa: BLE001, S110 - the first error is what the user needs
                pass
            raise
        finally:
            self._images = None
        return convert.to_image(stored)

    def _upload(self, glance: Any, image_id: str, file: Path, name: str) -> Any:
        with byte_progress(f"uploading {name}", file.stat().st_size) as advance, \
                DigestingReader(file, advance) as reader:
            response = glance.put(f"/images/{image_id}/file", data=reader,
                                  headers={"Content-Type": "application/octet-stream"})
            os_exc.raise_from_response(response)
        stored = glance.get_image(image_id)
        _verify(stored, reader, self.name, name)
        if stored.status != "active":
            raise ProviderError(f"cloud '{self.name}': image '{name}' is {stored.status} after its upload, not "
                                "active; it was deleted")
        return stored
