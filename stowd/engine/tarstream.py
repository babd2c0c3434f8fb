"""Reading a client's tar in one streaming pass: compressed or not, bombs and sparse files.

Every archive a client sends (`docker load`, `docker import`, `docker cp`, a build context)
goes through `open_tar_stream`: the compression is undone by `decompressed`, which never
produces more than CHUNK bytes at a time, and tarfile reads the plain stream with its
default 10 KiB record buffer. Memory is bounded by a constant (about CHUNK for the
decompressor's output plus tarfile's record buffer: under 4 MiB whatever the ratio), and
time is linear in the decompressed size.

tarfile's own `r|*` mode is not used: its gzip reader inflates each buffer without a bound
and re-slices what it holds on every read, so a 250 KB bomb of 256 MiB of zeros held the
whole 256 MiB and copied it again for each member read (quadratic, 27 s and 730 MB).

Blocking: run from a worker thread.
"""

import io
import os
import tarfile
from collections.abc import Iterator
from typing import IO, Any, cast

from stowd.engine.errors import InvalidParameter
from stowd.engine.images.layers import CHUNK, decompressed


class DecompressedReader(io.RawIOBase):
    """A file over `decompressed(source)`: plain tar bytes, at most CHUNK held at a time."""

    def __init__(self, source: IO[bytes]) -> None:
        self._pieces: Iterator[bytes] = decompressed(source)  # type: ignore[arg-type]
        self._piece = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._piece:
            try:
                piece = next(self._pieces, None)
            except InvalidParameter as exc:  # said of layers; here it is the archive's fault
                raise tarfile.ReadError(f"bad compressed data: {exc.__cause__ or exc}") from exc
            if piece is None:
                return 0
            self._piece = memoryview(piece)
        n = min(len(b), len(self._piece))
        b[:n] = self._piece[:n]
        self._piece = self._piece[n:]  # a view: no copy of what is left
        return n


def open_tar_stream(source: IO[bytes]) -> tarfile.TarFile:
    """A tar read forward only from source, gzip, bzip2, xz or plain; tarfile.ReadError for
    corrupt compressed data or a non-tar."""
    reader = io.BufferedReader(DecompressedReader(source), CHUNK)
    return tarfile.open(fileobj=reader, mode="r|")


def write_member(tar: tarfile.TarFile, info: tarfile.TarInfo, fd: int) -> None:
    """Write a regular member's content to fd (a new, empty file), holes kept as holes.

    A GNU or pax sparse member stores only its data regions; each is written at its offset
    and the file is extended to its full size, so a 10 GiB file described in 10 KB costs
    10 KB of disk, as GNU tar's --sparse extraction does."""
    if info.sparse is None:
        src = tar.extractfile(info)
        if src is not None:
            while chunk := src.read(CHUNK):
                _write_all(fd, chunk)
        return
    fileobj = tar.fileobj
    assert fileobj is not None
    fileobj.seek(info.offset_data)
    # typeshed types TarInfo.sparse loosely: it is the (offset, size) list of the data.
    for offset, size in cast(list[tuple[int, int]], info.sparse):
        left = size
        while left:
            chunk = fileobj.read(min(left, CHUNK))
            if not chunk:
                raise tarfile.ReadError(f"unexpected end of data in {info.name}")
            _pwrite_all(fd, chunk, offset + size - left)
            left -= len(chunk)
    os.ftruncate(fd, info.size)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
