"""The image verbs of the kvm provider: list, add (disk files and kernel images), delete, and what a
kernel image boots with.  A mixin of :class:`cm_plugins.kvm.provider.KvmProvider`."""

from __future__ import annotations

from pathlib import Path

import libvirt

from cm.errors import Conflict, NotFound, ProviderError
from cm.provider import Image
from cm_plugins.kvm import images

DEFAULT_CMDLINE = "console=ttyS0 panic=-1"
DISK_CMDLINE = "root=/dev/vda rw console=ttyS0"  # a kernel image with a root disk but no command line


class ImageVerbs:
    """Images in the cloud's storage pool (uses the provider's hv, _pool, _notice, _setting, _delete_volume)."""

    def _image(self, pool: libvirt.virStoragePool, name: str) -> Image:
        image = images.named(pool, name)
        found: dict[str, Image] = {}
        if image is None:  # an id (a volume's path), or no such image: look through them all
            found = images.in_pool(pool)
            image = next((i for i in found.values() if i.id == name), None)
        if image is None:
            known = ", ".join(sorted(found)) or "none yet"
            raise NotFound(f"unknown image '{name}' on cloud '{self.name}' (images: {known}); "
                           f"add it with `cm image add {name} PATH` (a qcow2 or raw disk image file)")
        if image.status != "active":
            raise ProviderError(f"image '{name}' lacks its kernel or initrd volume; delete and add it again")
        return image

    def list_images(self) -> list[Image]:
        with self.hv.use("list images") as conn:
            pool = self._pool(conn)
            if not self.hv.is_test:
                try:
                    pool.refresh(0)  # see files copied into the pool's directory by hand
                except libvirt.libvirtError:
                    pass  # busy (an upload is running): list what libvirt knows
            return sorted(images.in_pool(pool).values(), key=lambda i: i.name)

    def _no_data_notice(self) -> None:
        self._notice(f"cm: cloud '{self.name}': libvirt's test hypervisor stores no disk data; "
                     "images and seeds are recorded as volumes of their size, without contents")

    def _store_file(self, conn: libvirt.virConnect, pool: libvirt.virStoragePool, volume: str, path: Path,
                    fmt: str, capacity: int) -> libvirt.virStorageVol:
        """A new volume holding the file (the test hypervisor keeps no data: only its size)."""
        if self.hv.is_test:
            vol = pool.createXML(images.volume_xml(volume, capacity, fmt), 0)
            self._no_data_notice()
            return vol
        size = path.stat().st_size
        # Created raw and filled byte for byte; libvirt then reads the real format from the header.
        vol = pool.createXML(images.volume_xml(volume, size, "raw", sparse=True), 0)
        try:
            images.upload(conn, vol, path)
        except BaseException:
            self._delete_volume(vol)
            raise
        return vol

    def add_image(self, name: str, path: str) -> Image:
        """Add a disk image file, or a kernel+initrd pair (kernel=K,initrd=I or a directory)."""
        images.check_image_name(name)
        source = images.parse_source(path)
        with self.hv.use("add images", write=True) as conn:
            pool = self._pool(conn)
            taken = images.in_pool(pool)
            if name in taken:
                raise Conflict(f"image '{name}' already exists on cloud '{self.name}'; "
                               f"delete it first (cm image delete {name})")
            if isinstance(source, images.DiskFile):
                self._store_file(conn, pool, name, source.path, source.format, source.virtual_size)
            else:
                self._store_kernel_image(conn, pool, name, source)
            if not self.hv.is_test:
                pool.refresh(0)
            return images.in_pool(pool)[name]

    def _store_kernel_image(self, conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str,
                            source: images.KernelPair) -> None:
        """The volumes of a kernel image (kernel, initrd, maybe disk and command line): all or none."""
        made: list[libvirt.virStorageVol] = []
        try:
            for suffix, path in ((images.KERNEL_SUFFIX, source.kernel), (images.INITRD_SUFFIX, source.initrd)):
                made.append(self._store_file(conn, pool, name + suffix, path, "raw", path.stat().st_size))
            if source.disk is not None:
                made.append(self._store_file(conn, pool, name + images.DISK_SUFFIX, source.disk.path,
                                             source.disk.format, source.disk.virtual_size))
            if source.cmdline:
                data = source.cmdline.encode()
                made.append(pool.createXML(images.volume_xml(name + images.CMDLINE_SUFFIX, len(data), "raw"), 0))
                if not self.hv.is_test:
                    images.upload_bytes(conn, made[-1], data)
        except BaseException:
            for vol in made:
                self._delete_volume(vol)
            raise

    def _cmdline(self, conn: libvirt.virConnect, image: Image) -> str:
        """The kernel command line: the image's own, else the cloud's ``cmdline`` (or the usual one)."""
        path = image.extra.get("cmdline")
        if path and not self.hv.is_test:   # the test hypervisor keeps no volume data
            vol = conn.storageVolLookupByPath(path)
            text = images.download_bytes(conn, vol, min(vol.info()[1], images.MAX_CMDLINE))
            if text.strip():
                return text.decode("utf-8", "replace").strip()
        return str(self._setting("cmdline", DISK_CMDLINE if image.extra.get("disk") else DEFAULT_CMDLINE))

    def delete_image(self, name: str) -> None:
        with self.hv.use("delete images", write=True) as conn:
            pool = self._pool(conn)
            image = images.in_pool(pool).get(name)
            if image is None:
                raise NotFound(f"unknown image '{name}' on cloud '{self.name}' (see `cm image list --refresh`)")
            users = images.users_of(conn, pool, image)
            if users:
                raise Conflict(f"image '{name}' is in use by {', '.join(sorted(users))}; delete those VMs first")
            for volume in image.extra["volumes"]:
                pool.storageVolLookupByName(volume).delete(0)

