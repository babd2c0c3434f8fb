"""Tar-split: a layer tar's exact bytes, reproducible without keeping the tar.

`docker save` must hand each layer tar back byte for byte: a loader checks its sha256 against
the diff IDs in the image config, and the image ID is the digest of that config. stowd keeps
layers extracted, so while a layer streams in, `TarSplitter` records everything that is not
file content verbatim (headers, pax and GNU long-name records, padding, the end-of-archive
blocks and whatever follows them) and, for each regular file, only its path and size.
`assemble` streams the same bytes back, reading file content from the extracted layer.
Docker's graph drivers keep the same kind of record, for the same reason.

The record is a gzip stream of entries: `R` + u32 length + raw bytes, or
`F` + u64 size + u16 path length + path (bytes, relative to the layer's diff directory).

A layer the splitter cannot describe faithfully (GNU sparse members, a path written twice,
a file the whiteout conversion removes) is marked `broken`; saving then falls back to
re-tarring the directory, which changes its digest.
"""

import gzip
import os
import posixpath
import stat
import struct
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

BLOCK = 512
_RAW_FLUSH = 1 << 16
_MAX_META = 1 << 20  # pax / long-name records larger than this are not parsed
_READ_CHUNK = 1 << 20

_FILE_TYPES = {tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE}
# Types that carry no data blocks whatever their size field says (as tarfile and GNU tar).
_NO_DATA_TYPES = {tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE, tarfile.CHRTYPE,
                  tarfile.BLKTYPE, tarfile.FIFOTYPE}
_PAX_TYPES = {tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE}


class SplitError(Exception):
    """The record does not match the layer on disk: the layer cannot be reproduced."""


@dataclass
class FileRef:
    path: bytes  # relative to the diff directory, normalized, never absolute or with ..
    size: int


@dataclass
class SplitResult:
    files: list[FileRef] = field(default_factory=list)
    total: int = 0  # bytes of the whole tar stream
    broken: str | None = None  # why the record cannot reproduce the tar, if it cannot


def member_path(name: str) -> bytes:
    """Where GNU tar extracts a member name: leading slashes and `./` dropped, normalized."""
    return os.fsencode(posixpath.normpath("/" + name).lstrip("/"))


def _parse_pax(data: bytes) -> dict[str, str]:
    """Records of the form `<len> <key>=<value>\\n`; malformed input yields what parsed."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            break
        if length <= 0:
            break
        record = data[space + 1:pos + length]
        pos += length
        key, sep, value = record.rstrip(b"\n").partition(b"=")
        if sep:
            out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8",
                                                                       "surrogateescape")
    return out


def _number(field: bytes) -> int | None:
    """A numeric header field: octal text, or GNU's base-256 when the top bit is set."""
    if field[:1] and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return -value if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return None


def parse_header(block: bytes) -> tuple[bytes, str, int] | None:
    """(type, name, size) of a 512-byte ustar/GNU/v7 header; None if it is not one.

    Only what the splitter needs, much faster than tarfile.TarInfo.frombuf (a layer can
    hold a hundred thousand members)."""
    checksum = _number(block[148:156])
    if checksum is None or checksum != sum(block) - sum(block[148:156]) + 8 * 0x20:
        return None
    size = _number(block[124:136])
    if size is None or size < 0:
        return None
    name = block[:100].split(b"\0", 1)[0]
    if block[257:263] == b"ustar\0":  # POSIX ustar: a prefix may hold the leading part
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    kind = block[156:157] or tarfile.REGTYPE
    return kind, name.decode("utf-8", "surrogateescape"), size


class TarSplitter:
    """Sans-IO: feed it a tar stream in any chunking; it writes the record to `out`."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._raw = bytearray()
        self._header = bytearray()
        self._state = "header"  # header | meta | file | raw | pad | trailer | off
        self._remaining = 0  # bytes left of the current payload
        self._pad = 0  # padding bytes after the current payload
        self._meta = bytearray()
        self._meta_type = b""
        self._long_name: str | None = None
        self._pax: dict[str, str] = {}
        self._file_paths: set[bytes] = set()
        self.result = SplitResult()

    # writing the record ------------------------------------------------------------------

    def _keep(self, data: bytes | memoryview) -> None:
        self._raw += data
        if len(self._raw) >= _RAW_FLUSH:
            self._flush_raw()

    def _flush_raw(self) -> None:
        if self._raw:
            self._out.write(b"R" + struct.pack(">I", len(self._raw)))
            self._out.write(self._raw)
            self._raw = bytearray()

    def _file(self, path: bytes, size: int) -> None:
        self._flush_raw()
        self._out.write(b"F" + struct.pack(">QH", size, len(path)) + path)
        self.result.files.append(FileRef(path, size))

    def _give_up(self, reason: str) -> None:
        if self.result.broken is None:
            self.result.broken = reason
        self._state = "off"

    # parsing -----------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self.result.total += len(data)
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            state = self._state
            if state == "off":
                return
            if state == "trailer":
                self._keep(view[pos:])
                return
            if state == "header":
                take = min(BLOCK - len(self._header), len(view) - pos)
                self._header += view[pos:pos + take]
                pos += take
                if len(self._header) == BLOCK:
                    block = bytes(self._header)
                    self._header = bytearray()
                    self._keep(block)
                    self._on_header(block)
                continue
            take = min(self._remaining, len(view) - pos)
            chunk = view[pos:pos + take]
            pos += take
            self._remaining -= take
            if state == "file":
                pass  # file content: read back from the layer on save
            elif state == "meta":
                self._keep(chunk)
                if len(self._meta) + len(chunk) <= _MAX_META:
                    self._meta += chunk
            else:  # raw payload or padding
                self._keep(chunk)
            if self._remaining == 0:
                self._end_payload()

    def _end_payload(self) -> None:
        if self._state == "meta":
            self._on_meta(bytes(self._meta))
            self._meta = bytearray()
        if self._state in ("meta", "file", "raw") and self._pad:
            self._state, self._remaining, self._pad = "pad", self._pad, 0
        else:
            self._state = "header"

    def _start_payload(self, kind: str, size: int) -> None:
        self._pad = -size % BLOCK
        if size:
            self._state, self._remaining = kind, size
        elif self._pad:
            self._state, self._remaining, self._pad = "pad", self._pad, 0
        else:
            self._state = "header"

    def _on_header(self, block: bytes) -> None:
        if block == bytes(BLOCK):
            # End of archive: the rest (a second zero block, record padding) is kept as is.
            self._state = "trailer"
            return
        header = parse_header(block)
        if header is None:
            self._give_up("unreadable tar header")
            return
        kind, header_name, header_size = header
        if kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK) or kind in _PAX_TYPES \
                or kind == tarfile.XGLTYPE:
            self._meta_type = kind
            self._start_payload("meta", header_size)
            return
        if kind == tarfile.GNUTYPE_SPARSE:
            self._give_up("GNU sparse member")
            return
        name = self._pax.get("path") or self._long_name or header_name
        try:
            size = int(self._pax["size"]) if "size" in self._pax else header_size
        except ValueError:
            self._give_up("bad pax size")
            return
        self._long_name, self._pax = None, {}
        path = member_path(name)
        if path in self._file_paths:
            self._give_up(f"{os.fsdecode(path)!r} is written twice")
            return
        if kind in _FILE_TYPES:
            # Whiteout entries are deleted on extraction: keep their (rare) content here.
            if size and not any(p.startswith(b".wh.") for p in path.split(b"/")):
                self._file(path, size)
                self._file_paths.add(path)
                self._start_payload("file", size)
            else:
                self._start_payload("raw", size)
        elif kind in _NO_DATA_TYPES:
            self._state = "header"
        else:
            self._start_payload("raw", size)

    def _on_meta(self, data: bytes) -> None:
        if len(data) > _MAX_META:
            self._give_up("oversized pax header")
        elif self._meta_type == tarfile.GNUTYPE_LONGNAME:
            self._long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif self._meta_type in _PAX_TYPES:
            self._pax = _parse_pax(data)

    def close(self) -> SplitResult:
        if self._state not in ("off",):
            if self._header:
                self._keep(bytes(self._header))
            self._flush_raw()
        return self.result


# checking and reading back ---------------------------------------------------------------

def check_files(result: SplitResult, diff: Path) -> None:
    """Mark the result broken unless every recorded file is on disk with its size."""
    if result.broken:
        return
    root = os.fsencode(diff)
    for ref in result.files:
        try:
            st = os.lstat(os.path.join(root, ref.path))
        except OSError:
            result.broken = f"{os.fsdecode(ref.path)!r} is not in the layer"
            return
        if not stat.S_ISREG(st.st_mode) or st.st_size != ref.size:
            result.broken = f"{os.fsdecode(ref.path)!r} changed on extraction"
            return


def _entries(record: Path) -> Iterator[tuple[bytes, bytes, int]]:
    """(b"R", raw bytes, 0) and (b"F", path, size) entries, in order."""
    try:
        yield from _read_entries(record)
    except (OSError, EOFError, struct.error) as exc:
        raise SplitError(f"unreadable tar-split record: {exc}") from exc


def _read_entries(record: Path) -> Iterator[tuple[bytes, bytes, int]]:
    with gzip.open(record, "rb") as f:
        while True:
            kind = f.read(1)
            if not kind:
                return
            if kind == b"R":
                (length,) = struct.unpack(">I", f.read(4))
                data = f.read(length)
                if len(data) != length:
                    raise SplitError("truncated tar-split record")
                yield kind, data, 0
            elif kind == b"F":
                size, plen = struct.unpack(">QH", f.read(10))
                yield kind, f.read(plen), size
            else:
                raise SplitError("corrupt tar-split record")


def tar_size(record: Path) -> int:
    """The size of the tar the record reproduces."""
    return sum(len(value) if kind == b"R" else size for kind, value, size in _entries(record))


def open_beneath(root: Path, rel: bytes) -> int:
    """Open root/rel for reading without following any symlink on the way."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        parts = [p for p in rel.split(b"/") if p]
        if not parts or any(p == b".." for p in parts):
            raise SplitError(f"bad path in tar-split record: {rel!r}")
        for part in parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)


def assemble(record: Path, diff: Path, out: BinaryIO) -> int:
    """Write the original layer tar to out; returns its size. Blocking."""
    written = 0
    for kind, value, size in _entries(record):
        if kind == b"R":
            out.write(value)
            written += len(value)
            continue
        path = value
        try:
            fd = open_beneath(diff, path)
        except OSError as exc:
            raise SplitError(f"{os.fsdecode(path)!r} is missing from the layer: {exc}") from exc
        try:
            left = size
            while left:
                chunk = os.read(fd, min(left, _READ_CHUNK))
                if not chunk:
                    raise SplitError(f"{os.fsdecode(path)!r} is shorter than recorded")
                out.write(chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
        written += size
    return written
