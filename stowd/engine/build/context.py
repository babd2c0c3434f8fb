"""The build context: the request body (a tar, perhaps compressed) extracted to disk.

The body is streamed through GNU tar, never held in memory; the Dockerfile is read from
the extracted tree (a path inside it, as the CLI also sends for `-f` outside the context,
where it adds the file under a random name) and `.dockerignore` applied as dockerd does
(it also takes away the Dockerfile and `.dockerignore` themselves when they match).
"""

import contextlib
import fcntl
import os
import posixpath
import subprocess
from pathlib import Path
from typing import BinaryIO

from stowd.engine.archive_path import resolve_in_scope
from stowd.engine.build.ignore import BadPattern, apply_ignore, read_ignore_file
from stowd.engine.errors import InvalidParameter
from stowd.engine.images.layers import CHUNK, F_SETPIPE_SZ, decompressed

DEFAULT_DOCKERFILE = "Dockerfile"


def receive(source: BinaryIO, root: Path) -> None:
    """Extract the context tar on source into root. Blocking."""
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        ["tar", "-x", "-f", "-", "-C", str(root), "--no-same-owner", "--no-same-permissions"
         if os.geteuid() else "--same-permissions", "--delay-directory-restore"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    with contextlib.suppress(OSError):
        fcntl.fcntl(proc.stdin.fileno(), F_SETPIPE_SZ, CHUNK)
    total = 0
    try:
        try:
            for data in decompressed(source):
                total += len(data)
                proc.stdin.write(data)
            # The CLI's tar for `-f` outside the context ends without padding nor the
            # end-of-archive blocks (Go's reader takes that; GNU tar does not): add them.
            proc.stdin.write(b"\0" * (-total % 512) + b"\0" * 1024)
        except BrokenPipeError:
            pass  # tar stopped at the end of the archive (or failed: reported below)
        except InvalidParameter as exc:
            raise InvalidParameter(str(exc).replace("layer archive", "build context")) \
                from None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    err = proc.stderr.read() if proc.stderr else b""
    if proc.wait() != 0 and total:
        text = err.decode(errors="replace").strip()
        raise InvalidParameter(f"failed to read the build context: {text}")


def _read_inside(root: Path, name: str) -> str | None:
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        inside = resolve_in_scope(fd, name)
    finally:
        os.close(fd)
    path = root / inside.lstrip("/")
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def prepare(root: Path, dockerfile: str) -> str:
    """The Dockerfile's text; the context under root is left as the build sees it."""
    name = posixpath.normpath("/" + (dockerfile or DEFAULT_DOCKERFILE)).lstrip("/")
    text = _read_inside(root, name)
    if text is None and not dockerfile:
        # As dockerd: the default name falls back to its lower-case spelling.
        text = _read_inside(root, DEFAULT_DOCKERFILE.lower())
        if text is not None:
            name = DEFAULT_DOCKERFILE.lower()
    if text is None:
        raise InvalidParameter(f"Cannot locate specified Dockerfile: {name}")
    ignore = _read_inside(root, ".dockerignore")
    if ignore is not None:
        try:
            apply_ignore(root, read_ignore_file(ignore))
        except BadPattern as exc:
            raise InvalidParameter(f"failed to parse .dockerignore: {exc}") from None
    return text
