"""`docker diff`: what a container changed, from its overlay upperdir and the layers below.

dockerd 20.10 (overlay2) answers by comparing the container's mounted layer with its mounted
parent (the init layer over the image), and only these facts count:

- a path missing below is Added (1), and everything under an added directory is Added;
- a path below that is gone is Deleted (2), reported once (not its children);
- a path on both sides is Modified (0) when its type, permissions, owner or device differ,
  or, for anything but a directory, its size or mtime (whole seconds match when either side
  has no nanoseconds), or its `security.capability` attribute;
- a directory holding changes is Modified, listed before them, unless it is Added or
  Modified already; `/` is never listed.

Only the upperdir can hold changes, so this walks the upperdir alone and looks paths up in
the lower layers as overlayfs resolves them: a char device 0:0 is a whiteout (the path is
deleted), `trusted.overlay.opaque=y` on a directory hides what lies below it (the lower
children it no longer shows are deleted), a non-directory hides the layers below it. The init
layer is the topmost lower layer, so its files (/etc/hosts, /.dockerenv, /dev, ...) show up
only when the container changed them. Entries come in name order, each directory before its
contents (dockerd's order is random: it walks Go maps).

Blocking: call from a thread.
"""

import os
import stat
from dataclasses import dataclass

MODIFIED = 0
ADDED = 1
DELETED = 2

_OPAQUE = "trusted.overlay.opaque"
_CAPABILITY = "security.capability"


@dataclass(frozen=True)
class Change:
    path: str
    kind: int


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, _OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _capability(path: str) -> bytes | None:
    try:
        return os.getxattr(path, _CAPABILITY, follow_symlinks=False)
    except OSError:
        return None


def _same_time(a_ns: int, b_ns: int) -> bool:
    a_s, a_n = divmod(a_ns, 1_000_000_000)
    b_s, b_n = divmod(b_ns, 1_000_000_000)
    return a_s == b_s and (a_n == b_n or a_n == 0 or b_n == 0)


def stat_differs(old: os.stat_result, new: os.stat_result) -> bool:
    """dockerd's test: mode (with the file type), owner, device; size and mtime unless a dir."""
    if (old.st_mode != new.st_mode or old.st_uid != new.st_uid or old.st_gid != new.st_gid
            or old.st_rdev != new.st_rdev):
        return True
    if stat.S_ISDIR(new.st_mode):
        return False
    return old.st_size != new.st_size or not _same_time(old.st_mtime_ns, new.st_mtime_ns)


class _Lower:
    """The lower layers' merged view, looked up one directory at a time."""

    @staticmethod
    def lookup(stack: list[str], name: str) -> tuple[os.stat_result, str, int] | None:
        """(stat, path, layer index) of the entry overlayfs would show, or None if absent."""
        for i, ldir in enumerate(stack):
            path = f"{ldir}/{name}"
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if _is_whiteout(st):
                return None
            return st, path, i
        return None

    @staticmethod
    def child_stack(stack: list[str], name: str, first: int, first_path: str) -> list[str]:
        """The lower directories that make up the merged directory stack[first]/name."""
        out = [first_path]
        if _is_opaque(first_path):
            return out
        for ldir in stack[first + 1:]:
            path = f"{ldir}/{name}"
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if _is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                break
            out.append(path)
            if _is_opaque(path):
                break
        return out

    @staticmethod
    def names(stack: list[str]) -> set[str]:
        """The names a merged lower directory shows."""
        seen: set[str] = set()
        shown: set[str] = set()
        for ldir in stack:
            try:
                entries = list(os.scandir(ldir))
            except OSError:
                continue
            for entry in entries:
                if entry.name in seen:
                    continue
                seen.add(entry.name)
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not _is_whiteout(st):
                    shown.add(entry.name)
        return shown


def _walk(upper: str, cpath: str, stack: list[str], opaque: bool, out: list[Change]) -> None:
    """Append the changes below the upper directory `upper` (container path `cpath`)."""
    try:
        entries = sorted(os.scandir(upper), key=lambda e: e.name)
    except OSError:
        return
    present: set[str] = set()
    for entry in entries:
        name = entry.name
        path = f"{cpath}/{name}"
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if _is_whiteout(st):
            present.add(name)
            if stack and _Lower.lookup(stack, name) is not None:
                out.append(Change(path, DELETED))
            continue
        present.add(name)
        found = _Lower.lookup(stack, name) if stack else None
        is_dir = stat.S_ISDIR(st.st_mode)
        if found is None:
            out.append(Change(path, ADDED))
            if is_dir:
                _walk(entry.path, path, [], False, out)
            continue
        lst, lpath, index = found
        changed = stat_differs(lst, st)
        if not changed and not is_dir and stat.S_ISREG(st.st_mode):
            changed = _capability(entry.path) != _capability(lpath)
        if not is_dir:
            if changed:
                out.append(Change(path, MODIFIED))
            continue
        mark = len(out)
        out.append(Change(path, MODIFIED))  # kept if changed or if anything below changed
        below = (_Lower.child_stack(stack, name, index, lpath)
                 if stat.S_ISDIR(lst.st_mode) else [])
        _walk(entry.path, path, below, _is_opaque(entry.path), out)
        if not changed and len(out) == mark + 1:
            out.pop()
    if opaque and stack:
        for name in sorted(_Lower.names(stack) - present):
            out.append(Change(f"{cpath}/{name}", DELETED))


def collect_changes(upper: str, lowers: list[str]) -> list[Change]:
    """Changes of the container whose overlay is `upper` over `lowers` (topmost first)."""
    out: list[Change] = []
    if os.path.isdir(upper):
        _walk(upper, "", [d for d in lowers if os.path.isdir(d)], False, out)
    return out
