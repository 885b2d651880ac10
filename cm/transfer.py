"""Reading a file for upload: a byte progress bar on a terminal, and the digests of what was sent."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

CHUNK = 1 << 20
DIGESTS = ("md5", "sha256", "sha512")


@contextmanager
def byte_progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar in bytes on a terminal (stderr), gone when done; silent when piped."""
    if not sys.stderr.isatty():
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


class DigestingReader:
    """A file as an upload body: read in chunks, each one hashed and counted as it goes out."""

    def __init__(self, path: Path, advance: Callable[[int], None]) -> None:
        self.size = path.stat().st_size
        self._file: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._advance = advance
        self.digests = {name: hashlib.new(name) for name in DIGESTS}
        self.sent = 0

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(CHUNK if size is None or size < 0 else size)
        for digest in self.digests.values():
            digest.update(data)
        self.sent += len(data)
        self._advance(len(data))
        return data

    def __len__(self) -> int:
        return self.size  # lets the HTTP client send a Content-Length instead of chunks

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK):
            yield chunk

    def hexdigest(self, name: str) -> str:
        return self.digests[name].hexdigest()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> DigestingReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
