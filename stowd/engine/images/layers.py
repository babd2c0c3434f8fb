"""Layer extraction: a (compressed) layer tar → an overlay lower directory.

Blocking: run from a worker thread. The tar is streamed through GNU tar, never held in
memory; its sha256 (the layer's diff ID) is computed on the way, and a tar-split record
(see tarsplit.py) is written beside `diff` so that `docker save` can give the exact tar back.
Decompression runs in the calling thread and the rest (diff ID, tar-split, GNU tar's pipe)
in a second one, so that one layer uses two CPUs. gzip is inflated with ISA-L (python-isal),
several times faster than zlib on text and still faster on incompressible data.
GNU tar refuses `..` members and replaces symlinks that could lead outside the directory
with placeholders until the end, so an archive cannot write outside the layer.
"""

import bz2
import contextlib
import fcntl
import gzip
import hashlib
import io
import itertools
import logging
import lzma
import os
import secrets
import shutil
import stat
import subprocess
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import zstandard
from isal import isal_zlib

from stowd.engine.errors import InvalidParameter
from stowd.engine.images.pipe import Stage
from stowd.engine.images.tarsplit import SplitResult, TarSplitter, check_files

log = logging.getLogger("stowd.images")

CHUNK = 1 << 20
# isal's error is not typed as an exception class.
INFLATE_ERRORS: tuple[type[BaseException], ...] = (zlib.error,
                                                   cast(type[BaseException], isal_zlib.error))
BAD_DATA_ERRORS: tuple[type[BaseException], ...] = (*INFLATE_ERRORS, OSError, EOFError,
                                                   lzma.LZMAError)
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
WHITEOUT_PREFIX = ".wh."
# `.wh..wh.*` names are the union filesystem's own bookkeeping (aufs `.wh..wh.plnk`, ...);
# of those only the opaque marker means anything to a layer.
WHITEOUT_META_PREFIX = ".wh..wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
TAR_SPLIT = "tar-split.gz"


@dataclass
class ExtractedLayer:
    diff_id: str
    tar_size: int
    size: int  # bytes of file content in the layer, as Docker's layer size
    path: Path  # the directory holding `diff`, still under a temporary name
    split: SplitResult


def _chunks(source: BinaryIO) -> Iterator[bytes]:
    while chunk := source.read(CHUNK):
        yield chunk


def decompressed(source: BinaryIO, counted: Callable[[int], None] | None = None
                 ) -> Iterator[bytes]:
    """The tar stream on source, decompressed when it is gzip, bzip2 or xz.

    Pieces are at most about CHUNK bytes whatever the compression ratio, so a small
    compressed bomb cannot take memory. counted(n) hears the compressed bytes read so far.
    """
    read = 0
    chunks = _chunks(source)
    head = next(chunks, b"")
    if head[:4] == ZSTD_MAGIC:
        yield from _zstd_decompressed(itertools.chain([head], chunks), counted)
        return
    gzip_stream = head[:2] == b"\x1f\x8b"
    if gzip_stream:
        inflater = isal_zlib.decompressobj(wbits=47)
    elif head[:3] == b"BZh":
        other: bz2.BZ2Decompressor | lzma.LZMADecompressor | None = bz2.BZ2Decompressor()
    elif head[:6] == b"\xfd7zXZ\x00":
        other = lzma.LZMADecompressor()
    else:
        other = None
    for chunk in itertools.chain([head], chunks) if head else ():
        read += len(chunk)
        try:
            if gzip_stream:
                data = inflater.decompress(chunk, CHUNK)
                while data:
                    yield data
                    data = inflater.decompress(inflater.unconsumed_tail, CHUNK) \
                        if inflater.unconsumed_tail else b""
            elif other is not None:
                if other.eof:
                    continue
                data = other.decompress(chunk, max_length=CHUNK)
                while data:
                    yield data
                    data = b"" if other.needs_input or other.eof \
                        else other.decompress(b"", max_length=CHUNK)
            else:
                yield chunk
        except BAD_DATA_ERRORS as exc:
            raise InvalidParameter(f"invalid layer archive: bad compressed data: {exc}") \
                from exc
        if counted:
            counted(read)


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _ChunkReader(io.RawIOBase):
    """A file over an iterator of chunks, counting the bytes handed out."""

    def __init__(self, chunks: Iterator[bytes], counted: Callable[[int], None] | None) -> None:
        self._chunks = chunks
        self._counted = counted
        self._buffer = b""
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if not self._buffer:
            self._buffer = next(self._chunks, b"")
            self._read += len(self._buffer)
            if self._counted and self._buffer:
                self._counted(self._read)
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def _zstd_decompressed(chunks: Iterator[bytes], counted: Callable[[int], None] | None
                       ) -> Iterator[bytes]:
    # zstandard's stream reader yields at most CHUNK bytes per read, whatever the ratio.
    reader = zstandard.ZstdDecompressor().stream_reader(
        cast(IO[bytes], _ChunkReader(chunks, counted)), read_size=CHUNK, read_across_frames=True,
        closefd=False)
    try:
        while data := reader.read(CHUNK):
            yield data
    except zstandard.ZstdError as exc:
        raise InvalidParameter(f"invalid layer archive: bad compressed data: {exc}") from exc


def decompressed_as(source: BinaryIO, compression: str | None,
                    counted: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """The tar stream on source, decompressed as its media type says (a registry's layer).

    compression is "gzip", "zstd" or "none"; None guesses from the first bytes (archives
    from docker load and import, which carry no media type)."""
    if compression is None:
        return decompressed(source, counted)
    if compression == "zstd":
        return _zstd_decompressed(_chunks(source), counted)
    if compression == "gzip":
        return _gzip_decompressed(_chunks(source), counted)
    return _counted(_chunks(source), counted)


def _counted(chunks: Iterator[bytes], counted: Callable[[int], None] | None
             ) -> Iterator[bytes]:
    read = 0
    for chunk in chunks:
        read += len(chunk)
        yield chunk
        if counted:
            counted(read)


def _gzip_decompressed(chunks: Iterator[bytes], counted: Callable[[int], None] | None
                       ) -> Iterator[bytes]:
    inflater = isal_zlib.decompressobj(wbits=31)
    read = 0
    try:
        for chunk in chunks:
            read += len(chunk)
            data = inflater.decompress(chunk, CHUNK)
            while data:
                yield data
                data = inflater.decompress(inflater.unconsumed_tail, CHUNK) \
                    if inflater.unconsumed_tail else b""
            # Concatenated gzip members (pigz, some registries' clients) continue the tar.
            while inflater.eof and inflater.unused_data:
                rest = inflater.unused_data
                inflater = isal_zlib.decompressobj(wbits=31)
                data = inflater.decompress(rest, CHUNK)
                while data:
                    yield data
                    data = inflater.decompress(inflater.unconsumed_tail, CHUNK) \
                        if inflater.unconsumed_tail else b""
            if counted:
                counted(read)
    except INFLATE_ERRORS as exc:
        raise InvalidParameter(f"invalid layer archive: bad compressed data: {exc}") from exc
    if read and not inflater.eof:
        raise InvalidParameter("invalid layer archive: unexpected end of gzip data")


def chain_id(parent_chain: str | None, diff_id: str) -> str:
    if parent_chain is None:
        return diff_id
    return "sha256:" + hashlib.sha256(f"{parent_chain} {diff_id}".encode()).hexdigest()


def extract_layer(source: BinaryIO, layers_root: Path,
                  progress: Callable[[int], None] | None = None,
                  expected_diff_id: str | None = None,
                  compression: str | None = None) -> ExtractedLayer:
    """Extract source into a new temporary layer directory under layers_root.

    With expected_diff_id, a tar whose digest differs is refused (InvalidParameter) and
    nothing is left behind."""
    tmp = layers_root / f"tmp-{secrets.token_hex(8)}"
    diff = tmp / "diff"
    diff.mkdir(parents=True)
    hasher = hashlib.sha256()
    total = 0
    # Overlay's own xattrs in a layer tar would be obeyed by the kernel (redirects, opaque
    # dirs): only whiteout conversion below may set them.
    proc = subprocess.Popen(
        ["tar", "-x", "-f", "-", "-C", str(diff), "--numeric-owner", "-p", "--xattrs",
         "--xattrs-include=*", "--xattrs-exclude=trusted.overlay.*",
         "--no-same-permissions" if os.geteuid() else "--same-permissions"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    # A deep pipe lets tar create files while this thread hashes and splits the next chunk.
    with contextlib.suppress(OSError):
        fcntl.fcntl(proc.stdin.fileno(), F_SETPIPE_SZ, CHUNK)
    tar_reading = True

    def feed(data: bytes) -> None:  # the second thread
        nonlocal tar_reading
        hasher.update(data)
        splitter.feed(data)
        if tar_reading:
            try:
                stdin.write(data)
            except BrokenPipeError:
                # tar stops at the end-of-archive blocks; the diff ID still covers every
                # byte that follows them.
                tar_reading = False

    stdin = proc.stdin
    try:
        with gzip.open(tmp / TAR_SPLIT, "wb", compresslevel=1) as split_file:
            splitter = TarSplitter(split_file)  # type: ignore[arg-type]
            stage = Stage(feed, depth=2, name="layer-feed")
            try:
                for data in decompressed_as(source, compression, progress):
                    total += len(data)
                    stage.put(data)
            except BaseException:
                proc.kill()  # a write the stage is blocked in fails, so it can stop
                stage.abort()
                raise
            stage.finish()
            split = splitter.close()
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    except BaseException:
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    err = proc.stderr.read() if proc.stderr else b""
    rc = proc.wait()
    if rc != 0 or total == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        text = err.decode(errors="replace").strip() or "not a tar archive"
        raise InvalidParameter(f"invalid layer archive: {text}")
    diff_id = "sha256:" + hasher.hexdigest()
    if expected_diff_id is not None and diff_id != expected_diff_id:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DiffIDMismatch(expected_diff_id, diff_id)
    try:
        size = convert_whiteouts(diff)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InvalidParameter(f"invalid layer archive: {exc}") from exc
    check_files(split, diff)
    if split.broken:
        log.info("layer %s cannot be reproduced byte for byte by save: %s", diff_id[:19],
                 split.broken)
        (tmp / TAR_SPLIT).unlink()
    return ExtractedLayer(diff_id, total, size, tmp, split)


class DiffIDMismatch(InvalidParameter):
    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"layer digest mismatch: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def convert_whiteouts(root: Path) -> int:
    """Turn tar-style whiteouts into overlayfs ones; return the layer's content size.

    `.wh.name` becomes a 0/0 character device `name`, and `.wh..wh..opq` in a directory the
    directory's opaque xattr. A whiteout hides only what lower layers hold (OCI image spec,
    "Whiteouts"): an entry the same layer adds under that name stays.
    """
    size = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            if not name.startswith(WHITEOUT_PREFIX):
                st = os.lstat(full)
                if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    size += st.st_size
                continue
            _remove(full)
            if name == OPAQUE_MARKER:
                os.setxattr(dirpath, OPAQUE_XATTR, b"y")
            elif not name.startswith(WHITEOUT_META_PREFIX):
                target = os.path.join(dirpath, name[len(WHITEOUT_PREFIX):])
                if not os.path.lexists(target):
                    os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        # Removed entries are not walked into.
        dirnames[:] = [d for d in dirnames if not d.startswith(WHITEOUT_PREFIX)]
    return size
