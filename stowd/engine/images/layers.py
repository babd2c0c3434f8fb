"""Layer extraction: a (compressed) layer tar → an overlay lower directory.

Blocking: run from a worker thread. The tar is streamed through GNU tar, never held in
memory; its sha256 (the layer's diff ID) is computed on the way. GNU tar refuses `..`
members and replaces symlinks that could lead outside the directory with placeholders
until the end, so an archive cannot write outside the layer.
"""

import bz2
import hashlib
import lzma
import os
import secrets
import shutil
import stat
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from stowd.engine.errors import InvalidParameter

CHUNK = 1 << 20
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


class _Decompressor(Protocol):
    def decompress(self, data: bytes) -> bytes: ...


@dataclass
class ExtractedLayer:
    diff_id: str
    tar_size: int
    size: int  # bytes of file content in the layer, as Docker's layer size
    path: Path  # the directory holding `diff`, still under a temporary name


def _decompressor_for(head: bytes) -> _Decompressor | None:
    if head[:2] == b"\x1f\x8b":
        return zlib.decompressobj(wbits=47)
    if head[:3] == b"BZh":
        return bz2.BZ2Decompressor()
    if head[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMADecompressor()
    if head[:4] == b"\x28\xb5\x2f\xfd":
        raise InvalidParameter("zstd-compressed layers are not supported yet")
    return None


def chain_id(parent_chain: str | None, diff_id: str) -> str:
    if parent_chain is None:
        return diff_id
    return "sha256:" + hashlib.sha256(f"{parent_chain} {diff_id}".encode()).hexdigest()


def extract_layer(source: BinaryIO, layers_root: Path,
                  progress: Callable[[int], None] | None = None) -> ExtractedLayer:
    """Extract source into a new temporary layer directory under layers_root."""
    tmp = layers_root / f"tmp-{secrets.token_hex(8)}"
    diff = tmp / "diff"
    diff.mkdir(parents=True)
    hasher = hashlib.sha256()
    total = 0
    read = 0
    proc = subprocess.Popen(
        ["tar", "-x", "-f", "-", "-C", str(diff), "--numeric-owner", "-p", "--xattrs",
         "--xattrs-include=*", "--no-same-permissions" if os.geteuid() else "--same-permissions"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    try:
        head = source.read(CHUNK)
        read += len(head)
        decompressor = _decompressor_for(head)
        chunk = head
        while chunk:
            data = decompressor.decompress(chunk) if decompressor else chunk
            if data:
                hasher.update(data)
                total += len(data)
                proc.stdin.write(data)
            if progress:
                progress(read)
            chunk = source.read(CHUNK)
            read += len(chunk)
        proc.stdin.close()
    except BrokenPipeError:
        pass
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
    size = convert_whiteouts(diff)
    return ExtractedLayer("sha256:" + hasher.hexdigest(), total, size, tmp)


def convert_whiteouts(root: Path) -> int:
    """Turn tar-style whiteouts into overlayfs ones; return the layer's content size."""
    size = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            full = os.path.join(dirpath, name)
            if name == OPAQUE_MARKER:
                os.unlink(full)
                os.setxattr(dirpath, "trusted.overlay.opaque", b"y")
            elif name.startswith(WHITEOUT_PREFIX):
                os.unlink(full)
                target = os.path.join(dirpath, name[len(WHITEOUT_PREFIX):])
                if os.path.lexists(target):
                    if os.path.isdir(target) and not os.path.islink(target):
                        shutil.rmtree(target)
                    else:
                        os.unlink(target)
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            else:
                st = os.lstat(full)
                if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    size += st.st_size
    return size
