"""COPY and ADD: sources found and hashed, and their new layer written (dockerd's copy.go).

Blocking, and run in a thread of its own (`cpview.run_in_own_thread`): an image's
filesystem (a `COPY --from` source, or the image being built on, for the destination's
parent directories, symlinks and `--chown` names) is seen through a read-only overlay that
this thread mounts in a mount namespace private to it, gone with the thread.

The new layer is staged as a directory (owners and modes as Docker sets them: files keep
their mode, everything new is owned by 0:0 or the `--chown` identity, existing parent
directories keep theirs), then tarred into the layer store like a committed container.
"""

import bz2
import contextlib
import gzip
import hashlib
import lzma
import os
import posixpath
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stowd.engine.archive_path import resolve_in_scope
from stowd.engine.build.ignore import compile_pattern
from stowd.engine.cpview import CLONE_NEWNS, MS_PRIVATE, MS_RDONLY, MS_REC
from stowd.engine.errors import InvalidParameter
from stowd.engine.runtime.libc import check, libc

MS_BIND = 0x1000
_WILDCARDS = "*?["


class CopyError(InvalidParameter):
    pass


@dataclass
class Source:
    path: str  # where the (resolved) source is on this host, through a view
    name: str  # the name it was asked by: a file copied into a directory keeps its base
    is_dir: bool
    archive: bool = False  # ADD: a local tar archive, extracted at the destination


def enter_private_namespace() -> None:
    """Leave stowd's mount namespace (this thread only): mounts made here vanish with it."""
    check(libc.unshare(CLONE_NEWNS), "unshare mount namespace")
    check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make mounts private")


def mount_view(layers: list[str], target: Path) -> str:
    """A read-only view of an image whose layer directories are layers (topmost first)."""
    target.mkdir(parents=True, exist_ok=True)
    if not layers:
        return str(target)  # scratch: an empty directory
    if len(layers) == 1:
        check(libc.mount(layers[0].encode(), str(target).encode(), None, MS_BIND, None),
              "bind layer")
        return str(target)
    data = "lowerdir=" + ":".join(layers)
    if len(data) > 4000:
        base = os.path.commonpath(layers)
        os.chdir(base)
        data = "lowerdir=" + ":".join(os.path.relpath(d, base) for d in layers)
    check(libc.mount(b"overlay", str(target).encode(), b"overlay", MS_RDONLY, data.encode()),
          "mount overlay")
    return str(target)


@contextlib.contextmanager
def _root_fd(root: str) -> Iterator[int]:
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def resolve(root: str, path: str) -> str:
    """The host path that path (inside root) leads to, symlinks followed inside root."""
    with _root_fd(root) as fd:
        inside = resolve_in_scope(fd, path)
    return os.path.join(root, inside.lstrip("/"))


def has_wildcards(path: str) -> bool:
    escaped = False
    for ch in path:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in _WILDCARDS:
            return True
    return False


def _is_archive(path: str) -> bool:
    """Whether a local file is a tar archive, plain or gzip/bzip2/xz-compressed."""
    with open(path, "rb") as f:
        head = f.read(6)
    openers: dict[bytes, Callable[..., Any]] = {b"\x1f\x8b": gzip.open, b"BZ": bz2.open}
    opener = openers.get(head[:2])
    if head == b"\xfd7zXZ\x00":
        opener = lzma.open
    try:
        if opener is not None:
            with opener(path, "rb") as f:
                block = f.read(512)
        else:
            with open(path, "rb") as f:
                block = f.read(512)
    except (OSError, EOFError, lzma.LZMAError):
        return False
    if len(block) < 512:
        return False
    if block[257:262] == b"ustar":
        return True
    # Old V7 tars have no magic: check the header checksum.
    try:
        recorded = int(block[148:156].replace(b"\0", b" ").strip() or b"-1", 8)
    except ValueError:
        return False
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    return bool(recorded == computed)


def find_sources(root: str, requested: list[str], cmd: str, in_context: bool,
                 extract: bool = False) -> list[Source]:
    """The sources COPY/ADD names, resolved inside root (the context or an image view)."""
    out: list[Source] = []
    for src in requested:
        clean = posixpath.normpath("/" + src).lstrip("/")
        if has_wildcards(clean):
            pattern = compile_pattern(clean)
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                rel_dir = os.path.relpath(dirpath, root)
                for name in sorted([*dirnames, *filenames]):
                    rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                    if pattern.match(rel):
                        full = os.path.join(dirpath, name)
                        is_dir = os.path.isdir(full) and not os.path.islink(full)
                        out.append(Source(resolve(root, rel), rel, is_dir,
                                          extract and not is_dir and _is_archive(full)))
                        if is_dir:
                            dirnames.remove(name)
            continue
        full = resolve(root, clean)
        try:
            st = os.stat(full)
        except OSError:
            if in_context:
                raise CopyError(f"{cmd} failed: file not found in build context or excluded "
                                f"by .dockerignore: stat {clean or '.'}: file does not "
                                "exist") from None
            raise CopyError(f"{cmd} failed: stat /{clean}: file does not exist") from None
        is_dir = stat.S_ISDIR(st.st_mode)
        out.append(Source(full, clean, is_dir, extract and not is_dir and _is_archive(full)))
    if not out:
        raise CopyError(f"{cmd} failed: no source files were specified")
    return out


def _walk(top: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """(relative path, full path, lstat) of everything under top, in lexical order."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, top)
        for name in sorted([*dirnames, *filenames]):
            full = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            yield rel, full, os.lstat(full)


def _hash_entry(h: "hashlib._Hash", rel: str, full: str, st: os.stat_result) -> None:
    # Modification times stay out, as dockerd's tarsum: touching a file keeps the cache.
    h.update(f"{rel}\0{st.st_mode:o}\0".encode())
    if stat.S_ISLNK(st.st_mode):
        h.update(os.readlink(full).encode())
    elif stat.S_ISREG(st.st_mode):
        with open(full, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    h.update(b"\0")


def checksum(sources: list[Source]) -> str:
    """`file:<hex>`, `dir:<hex>` or `multi:<hex>`, as the classic builder names sources."""
    h = hashlib.sha256()
    for src in sources:
        h.update(f"{src.name}\0{int(src.archive)}\0".encode())
        if src.is_dir:
            for rel, full, st in _walk(src.path):
                _hash_entry(h, rel, full, st)
        else:
            _hash_entry(h, posixpath.basename(src.name), src.path, os.stat(src.path))
    kind = "multi" if len(sources) > 1 else ("dir" if sources[0].is_dir else "file")
    return f"{kind}:{h.hexdigest()}"


def _lookup_id(view: str, file: str, name: str) -> int | None:
    try:
        with open(resolve(view, file), encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) > 2 and fields[0] == name:
                    return int(fields[2])
    except (OSError, ValueError):
        return None
    return None


def parse_chown(spec: str, view: str) -> tuple[int, int]:
    """`--chown=user[:group]`: numbers, or names from the image's /etc/passwd and group.
    A lone name is looked up as the group too (dockerd 20.10's parseChownFlag: not the
    user's primary group, as BuildKit does)."""
    if not spec:
        return 0, 0
    parts = spec.split(":")
    if len(parts) > 2:
        raise CopyError("unable to convert uid/gid chown string to host mapping: invalid "
                        f"chown string format: {spec}")
    user, group = parts[0], parts[-1]
    return (_chown_id(view, user, "/etc/passwd", "uid", "user"),
            _chown_id(view, group, "/etc/group", "gid", "group"))


def _chown_id(view: str, value: str, db: str, id_kind: str, noun: str) -> int:
    """A number as given, or a name looked up in the image's passwd/group file."""
    if value.isdigit():
        return int(value)
    found = _lookup_id(view, db, value)
    if found is None:
        raise CopyError("unable to convert uid/gid chown string to host mapping: can't "
                        f"find {id_kind} for {noun} {value}: no such {noun}: {value}")
    return found


class Stager:
    """Builds the new layer's directory: what COPY/ADD write, and the parents they need."""

    def __init__(self, staging: Path, view: str, owner: tuple[int, int]) -> None:
        self.staging = staging
        self.view = view
        self.uid, self.gid = owner

    def in_view(self, inside: str) -> os.stat_result | None:
        """What the image has at inside (a resolved path), followed if a link."""
        try:
            return os.stat(os.path.join(self.view, inside.lstrip("/")))
        except OSError:
            return None

    def ensure_dir(self, inside: str, mode: int = 0o755) -> str:
        """The staging path of directory `inside` (resolved), with its parents: those the
        image has keep their owner, mode and time; new ones are owned by the identity."""
        parts = [p for p in inside.split("/") if p]
        current = str(self.staging)
        path = ""
        for i, part in enumerate(parts):
            path += "/" + part
            current = os.path.join(current, part)
            if os.path.isdir(current):
                continue
            existing = self.in_view(path)
            if existing is not None and stat.S_ISDIR(existing.st_mode):
                os.mkdir(current)
                os.chown(current, existing.st_uid, existing.st_gid)
                os.chmod(current, stat.S_IMODE(existing.st_mode))
                os.utime(current, ns=(existing.st_atime_ns, existing.st_mtime_ns))
            else:
                os.mkdir(current)
                os.chown(current, self.uid, self.gid)
                os.chmod(current, mode if i == len(parts) - 1 else 0o755)
        return current

    def _chown(self, path: str) -> None:
        os.lchown(path, self.uid, self.gid)

    def copy_file(self, src: str, dest: str) -> None:
        parent, base = posixpath.split(dest)
        target = os.path.join(self.ensure_dir(parent), base)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        elif os.path.lexists(target):
            os.unlink(target)
        shutil.copy2(src, target, follow_symlinks=True)
        self._chown(target)

    def copy_tree(self, src: str, dest: str) -> None:
        """The contents of directory src into directory dest."""
        existed = self.in_view(dest) is not None
        root = self.ensure_dir(dest, stat.S_IMODE(os.stat(src).st_mode))
        if not existed:
            self._chown(root)
        for rel, full, st in _walk(src):
            target = os.path.join(root, rel)
            if stat.S_ISDIR(st.st_mode):
                if not os.path.isdir(target):
                    os.mkdir(target)
                os.chmod(target, stat.S_IMODE(st.st_mode))
            elif stat.S_ISLNK(st.st_mode):
                if os.path.lexists(target):
                    os.unlink(target)
                os.symlink(os.readlink(full), target)
            elif stat.S_ISREG(st.st_mode):
                if os.path.lexists(target):
                    os.unlink(target)
                shutil.copy2(full, target, follow_symlinks=False)
            else:
                continue  # sockets, devices and pipes do not travel in a build context
            self._chown(target)
        # Directory times last: writing into them moved them.
        for rel, _, st in _walk(src):
            if stat.S_ISDIR(st.st_mode):
                os.utime(os.path.join(root, rel), ns=(st.st_atime_ns, st.st_mtime_ns))

    def extract(self, archive: str, dest: str) -> None:
        root = self.ensure_dir(dest)
        proc = subprocess.run(["tar", "-x", "-f", archive, "-C", root, "--numeric-owner",
                               "-p"], capture_output=True, check=False)
        if proc.returncode != 0:
            raise CopyError(f"failed to extract {posixpath.basename(archive)}: "
                            f"{proc.stderr.decode(errors='replace').strip()}")

    def is_dir(self, inside: str) -> bool:
        staged = os.path.join(str(self.staging), inside.lstrip("/"))
        if os.path.isdir(staged):
            return True
        st = self.in_view(inside)
        return st is not None and stat.S_ISDIR(st.st_mode)


def make_workdir(stager: Stager, path: str) -> bool:
    """WORKDIR's directory, as dockerd's SetupWorkingDirectory makes it at container create:
    symlinks followed inside the image, the missing directories made 0755 and owned by
    root (not by USER). False when the image has it already (nothing to write)."""
    with _root_fd(stager.view) as fd:
        resolved = resolve_in_scope(fd, path)
    prefix = ""
    for part in [p for p in resolved.split("/") if p]:
        prefix += "/" + part
        found = stager.in_view(prefix)
        if found is None:
            stager.ensure_dir(resolved)
            return True
        if not stat.S_ISDIR(found.st_mode):
            raise CopyError(f"Cannot mkdir: {prefix if prefix != resolved else path} is not "
                            "a directory")
    return False


def destination(workdir: str, requested: str) -> tuple[str, bool]:
    """dockerd's normalizeDest: (absolute destination, whether it names a directory)."""
    as_dir = requested.endswith("/") or requested in (".", "") or requested.endswith("/.")
    dest = requested
    if not dest.startswith("/"):
        dest = posixpath.join("/", workdir or "/", dest)
    return posixpath.normpath(dest), as_dir


def stage(stager: Stager, sources: list[Source], workdir: str, requested_dest: str,
          cmd: str) -> None:
    """Write sources into the staging directory as COPY/ADD place them."""
    dest, as_dir = destination(workdir, requested_dest)
    if len(sources) > 1 and not as_dir:
        raise CopyError(f"When using {cmd} with more than one source file, the destination "
                        "must be a directory and end with a /")
    with _root_fd(stager.view) as fd:
        resolved = resolve_in_scope(fd, dest) if dest != "/" else "/"
    for src in sources:
        if src.is_dir:
            stager.copy_tree(src.path, resolved)
        elif src.archive:
            stager.extract(src.path, resolved)
        elif as_dir or stager.is_dir(resolved):
            stager.copy_file(src.path, posixpath.join(resolved, posixpath.basename(src.name)))
        else:
            stager.copy_file(src.path, resolved)
