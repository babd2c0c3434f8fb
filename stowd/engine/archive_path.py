"""`docker cp`: stat, archive and extract paths of a container's filesystem, confined to it.

A container's files are untrusted: any symlink in them may point anywhere. Every path is
therefore resolved as if the container's root were `/` (dockerd does the same with
FollowSymlinkInScope and a chroot for extraction), and every file is reached through
`openat2(RESOLVE_IN_ROOT)` from a descriptor of that root, or one path component at a time
with O_NOFOLLOW below a descriptor already inside. A tar entry such as `../../etc/x` or a
symlink to `/` followed by a file through it therefore lands inside the container, never on
the host, even if the container swaps directories and symlinks while we work.

dockerd's rules kept here (moby daemon/archive.go, pkg/archive):
- A path names a resource; its last element is not followed when it is a symlink, unless
  the path ends in `/` or `/.`. The stat header is {name,size,mode,mtime,linkTarget} with a
  Go os.FileMode and linkTarget = the symlink fully resolved in the container.
- The archive of a resource starts at its base name, renamed to the requested base name
  (`/etc/.` gives `./...`, a symlink `/l/` to a directory gives `l/...`).
- Extraction goes into an existing directory (the destination, symlinks followed); missing
  parents are made (0755); an existing entry is replaced unless both are directories;
  `noOverwriteDirNonDir` refuses to replace a directory by a non-directory or the reverse;
  owners come from the archive, or are the container user's with copyUIDGID; directory
  times are set last. Entries whose name, hard-link target or symlink target leaves the
  destination are refused (dockerd: "breakout"), as 400 here.

Everything here blocks: call it from a worker thread.
"""

import contextlib
import ctypes
import errno
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from stowd.engine.errors import InvalidParameter, NotFound, SystemError_
from stowd.engine.runtime.libc import libc
from stowd.engine.tarstream import open_tar_stream, write_member

SYS_OPENAT2 = 437  # the same number on every architecture (new syscall table)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
MAX_LINKS = 255


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def open_in_root(root_fd: int, path: str, flags: int) -> int:
    """openat2(root_fd, path, RESOLVE_IN_ROOT): `..`, absolute paths and symlinks all stay
    below root_fd, as under chroot."""
    rel = path.lstrip("/") or "."
    how = _OpenHow(flags | os.O_CLOEXEC, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    for _ in range(64):
        fd = libc.syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(root_fd),
                           ctypes.c_char_p(os.fsencode(rel)), ctypes.byref(how),
                           ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err in (errno.EAGAIN, errno.EINTR):  # a rename raced the lookup: try again
            continue
        if err == errno.ENOSYS:
            raise SystemError_("this kernel has no openat2 (Linux 5.6 or later is needed)")
        raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, "path kept changing during lookup", path)


@contextlib.contextmanager
def _opened(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _dir_in_root(root_fd: int, path: str) -> int:
    return open_in_root(root_fd, path, os.O_PATH | os.O_DIRECTORY)


# --- paths ---------------------------------------------------------------------------------

def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def resolve_in_scope(root_fd: int, path: str) -> str:
    """The container path `path` leads to with every symlink followed inside the root (the
    last element need not exist: the rest is joined lexically)."""
    pending = _split(path)
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        try:
            dfd = _dir_in_root(root_fd, "/".join(resolved))
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)
            continue
        with _opened(dfd):
            try:
                st = os.stat(part, dir_fd=dfd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                resolved.append(part)
                continue
            if not stat.S_ISLNK(st.st_mode):
                resolved.append(part)
                continue
            links += 1
            if links > MAX_LINKS:
                raise InvalidParameter(f"too many levels of symbolic links: {path}")
            target = os.readlink(part, dir_fd=dfd)
        if target.startswith("/"):
            resolved = []
        pending = _split(target) + pending
    return "/" + "/".join(resolved)


def preserve_trailing(cleaned: str, original: str) -> str:
    """Go's archive.PreserveTrailingDotOrSeparator."""
    if original.endswith("/.") and not cleaned.endswith("/."):
        return cleaned.rstrip("/") + "/."
    if original.endswith("/") and not cleaned.endswith("/"):
        return cleaned + "/"
    return cleaned


def go_base(path: str) -> str:
    """Go's filepath.Base."""
    if not path:
        return "."
    stripped = path.rstrip("/")
    if not stripped:
        return "/"
    return stripped.rsplit("/", 1)[-1]


def absolute(path: str) -> str:
    """The request's path as an absolute container path, trailing `/` or `/.` kept."""
    return preserve_trailing(posixpath.normpath("/" + path).replace("//", "/"), path)


# --- stat ----------------------------------------------------------------------------------

_GO_MODE_DIR = 1 << 31
_GO_MODE_SYMLINK = 1 << 27
_GO_MODE_DEVICE = 1 << 26
_GO_MODE_PIPE = 1 << 25
_GO_MODE_SOCKET = 1 << 24
_GO_MODE_SETUID = 1 << 23
_GO_MODE_SETGID = 1 << 22
_GO_MODE_CHARDEV = 1 << 21
_GO_MODE_STICKY = 1 << 20


def go_file_mode(mode: int) -> int:
    """A unix st_mode as Go's os.FileMode, which the CLI decodes."""
    out = mode & 0o777
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFDIR:
        out |= _GO_MODE_DIR
    elif kind == stat.S_IFLNK:
        out |= _GO_MODE_SYMLINK
    elif kind == stat.S_IFBLK:
        out |= _GO_MODE_DEVICE
    elif kind == stat.S_IFCHR:
        out |= _GO_MODE_DEVICE | _GO_MODE_CHARDEV
    elif kind == stat.S_IFIFO:
        out |= _GO_MODE_PIPE
    elif kind == stat.S_IFSOCK:
        out |= _GO_MODE_SOCKET
    if mode & stat.S_ISUID:
        out |= _GO_MODE_SETUID
    if mode & stat.S_ISGID:
        out |= _GO_MODE_SETGID
    if mode & stat.S_ISVTX:
        out |= _GO_MODE_STICKY
    return out


def go_time(ns: int) -> str:
    """Go's RFC 3339 with nanoseconds (trailing zeros trimmed), in UTC."""
    secs, nanos = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f".{nanos:09d}".rstrip("0") if nanos else ""
    return f"{base}{frac}Z"


@dataclass
class PathStat:
    name: str
    size: int
    mode: int  # Go os.FileMode
    mtime: str
    link_target: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "mode": self.mode, "mtime": self.mtime,
                "linkTarget": self.link_target}


@dataclass
class Resolved:
    """A requested path, where it resolves, and what is there."""
    abs_path: str  # as requested, made absolute
    resolved: str  # container path: directory part resolved, base kept
    st: os.stat_result


def _not_found(path: str, container: str) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {container}")


def resolve_resource(root_fd: int, path: str, container: str) -> Resolved:
    """dockerd's ResolvePath + lstat: directory part resolved in scope, base kept."""
    if not path:
        raise InvalidParameter("bad parameter: path cannot be empty")
    abs_path = absolute(path)
    head, _, base = abs_path.rpartition("/")
    resolved_dir = resolve_in_scope(root_fd, head or "/")
    try:
        dfd = _dir_in_root(root_fd, resolved_dir)
    except FileNotFoundError as exc:
        raise _not_found(path, container) from exc
    except NotADirectoryError as exc:
        raise InvalidParameter(f"lstat {resolved_dir}/{base}: not a directory") from exc
    with _opened(dfd):
        try:
            st = os.stat(base or ".", dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError as exc:
            raise _not_found(path, container) from exc
        except NotADirectoryError as exc:
            raise InvalidParameter(f"lstat {path}: not a directory") from exc
    resolved = posixpath.join(resolved_dir, base) if base not in ("", ".") else resolved_dir
    return Resolved(abs_path, resolved, st)


def path_stat(root_fd: int, res: Resolved) -> PathStat:
    link = ""
    if stat.S_ISLNK(res.st.st_mode):
        link = resolve_in_scope(root_fd, res.abs_path)
    return PathStat(go_base(res.abs_path), res.st.st_size, go_file_mode(res.st.st_mode),
                    go_time(res.st.st_mtime_ns), link)


# --- archive (GET) -------------------------------------------------------------------------

def _tarinfo(name: str, st: os.stat_result) -> tarfile.TarInfo | None:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)
    kind = stat.S_IFMT(st.st_mode)
    if kind == stat.S_IFREG:
        info.type = tarfile.REGTYPE
        info.size = st.st_size
    elif kind == stat.S_IFDIR:
        info.type = tarfile.DIRTYPE
    elif kind == stat.S_IFLNK:
        info.type = tarfile.SYMTYPE
    elif kind in (stat.S_IFCHR, stat.S_IFBLK):
        info.type = tarfile.CHRTYPE if kind == stat.S_IFCHR else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif kind == stat.S_IFIFO:
        info.type = tarfile.FIFOTYPE
    else:
        return None  # sockets: tar cannot carry them (dockerd skips them too)
    return info


def _capability(name: str, dir_fd: int) -> str | None:
    try:
        value = os.getxattr(f"/proc/self/fd/{dir_fd}/{name}", "security.capability",
                            follow_symlinks=False)
    except OSError:
        return None
    return value.decode("utf-8", "surrogateescape")


class _TarWriter:
    def __init__(self, out: IO[bytes]) -> None:
        self.tar = tarfile.open(fileobj=out, mode="w|",  # noqa: SIM115 - closed by close()
                                format=tarfile.PAX_FORMAT, encoding="utf-8")
        self.links: dict[tuple[int, int], str] = {}

    def add(self, name: str, dir_fd: int, base: str, st: os.stat_result) -> None:
        """Add the entry `base` of the directory dir_fd."""
        info = _tarinfo(name, st)
        if info is None:
            return
        if info.type == tarfile.SYMTYPE:
            info.linkname = os.readlink(base, dir_fd=dir_fd)
            self.tar.addfile(info)
            return
        if info.type == tarfile.REGTYPE and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self.links.get(key)
            if first is not None:
                info.type = tarfile.LNKTYPE
                info.linkname = first
                info.size = 0
                self.tar.addfile(info)
                return
            self.links[key] = name
        if info.type == tarfile.REGTYPE:
            cap = _capability(base, dir_fd)
            if cap is not None:
                info.pax_headers = {"SCHILY.xattr.security.capability": cap}
            fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            with os.fdopen(fd, "rb") as f:
                self.tar.addfile(info, f)
            return
        self.tar.addfile(info)

    def walk(self, name: str, dfd: int) -> None:
        """Add the contents of the open directory dfd (already added as `name`)."""
        with os.scandir(dfd) as it:
            names = sorted(e.name for e in it)
        for child in names:
            try:
                st = os.stat(child, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            child_name = f"{name.rstrip('/')}/{child}" if name != "/" else f"/{child}"
            self.add(child_name, dfd, child, st)
            if stat.S_ISDIR(st.st_mode):
                try:
                    sub = os.open(child, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                  | os.O_CLOEXEC, dir_fd=dfd)
                except OSError:
                    continue
                with _opened(sub):
                    self.walk(child_name, sub)

    def close(self) -> None:
        self.tar.close()


def write_archive(root_fd: int, res: Resolved, out: IO[bytes]) -> None:
    """The tar of a resolved resource, entries named from the requested base name."""
    name = go_base(res.abs_path)
    writer = _TarWriter(out)
    parent, _, base = res.resolved.rpartition("/")
    with _opened(_dir_in_root(root_fd, parent or "/")) as pfd:
        if res.resolved == "/" or not base:
            # the root itself: a directory entry, then its contents
            with _opened(open_in_root(root_fd, "/", os.O_RDONLY | os.O_DIRECTORY)) as rfd:
                writer.add(name, rfd, ".", os.stat(".", dir_fd=rfd))
                writer.walk(name, rfd)
        else:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            writer.add(name, pfd, base, st)
            if stat.S_ISDIR(st.st_mode):
                sub = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                              | os.O_CLOEXEC, dir_fd=pfd)
                with _opened(sub):
                    writer.walk(name, sub)
    writer.close()


# --- extract (PUT) -------------------------------------------------------------------------

@dataclass
class ExtractOptions:
    no_overwrite_dir_non_dir: bool = False
    owner: tuple[int, int] | None = None  # copyUIDGID: every entry gets this owner


def _breakout(name: str, dest: str) -> InvalidParameter:
    return InvalidParameter(
        f"Error processing tar file: {name!r} is outside of {dest!r}: the archive may not "
        "write outside the extraction directory")


def _inside(path: str, dest: str) -> bool:
    return path == dest or dest == "/" or path.startswith(dest.rstrip("/") + "/")


def ensure_dir(root_fd: int, cpath: str) -> int:
    """An O_PATH descriptor of directory cpath, making missing parts (0755) in the root
    (through symlinks, resolved inside the root, as mkdir -p under chroot would)."""
    try:
        return _dir_in_root(root_fd, cpath)
    except FileNotFoundError:
        pass
    fd = _dir_in_root(root_fd, "/")
    try:
        for part in _split(resolve_in_scope(root_fd, cpath)):
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            child = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove(pfd: int, base: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(base, dir_fd=pfd)  # fd-based: never follows a symlink
    else:
        os.unlink(base, dir_fd=pfd)


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _apply_meta(fd: int, info: tarfile.TarInfo, owner: tuple[int, int]) -> None:
    """Owner, xattrs and mode on an entry opened with O_PATH (never a symlink)."""
    path = _fd_path(fd)
    os.chown(path, owner[0], owner[1])
    for key, value in (info.pax_headers or {}).items():
        attr = key.removeprefix("SCHILY.xattr.")
        if attr != key and (attr.startswith("user.") or attr == "security.capability"):
            with contextlib.suppress(OSError):
                os.setxattr(path, attr, value.encode("utf-8", "surrogateescape"))
    os.chmod(path, info.mode & 0o7777)


def extract(root_fd: int, dest: str, source: IO[bytes], opts: ExtractOptions,
            on_file: Callable[[], None] | None = None) -> None:
    """Unpack the tar `source` into container directory dest (already resolved)."""
    dirs: list[tuple[str, int]] = []
    try:
        tar = open_tar_stream(source)
    except tarfile.ReadError as exc:
        raise InvalidParameter(f"Error processing tar file: {exc}") from exc
    with tar:
        try:
            for info in tar:
                try:
                    _extract_one(root_fd, dest, tar, info, opts, dirs)
                except NotADirectoryError as exc:
                    raise InvalidParameter(
                        f"Error processing tar file: cannot extract {info.name!r}: a parent "
                        "is not a directory") from exc
                if on_file:
                    on_file()
        except (tarfile.TarError, EOFError) as exc:
            raise InvalidParameter(f"Error processing tar file: {exc}") from exc
    for cpath, mtime in reversed(dirs):
        with contextlib.suppress(OSError), \
                _opened(open_in_root(root_fd, cpath, os.O_PATH | os.O_DIRECTORY)) as fd:
            os.utime(_fd_path(fd), (mtime, mtime))


def _extract_one(root_fd: int, dest: str, tar: tarfile.TarFile, info: tarfile.TarInfo,
                 opts: ExtractOptions, dirs: list[tuple[str, int]]) -> None:
    if info.type in (tarfile.XGLTYPE, tarfile.XHDTYPE):
        return
    name = posixpath.normpath(info.name) if info.name else "."
    cpath = posixpath.normpath(posixpath.join(dest, name.lstrip("/")))
    if not _inside(cpath, dest):
        raise _breakout(info.name, dest)
    if info.issym():
        target = posixpath.normpath(posixpath.join(posixpath.dirname(cpath), info.linkname))
        if not info.linkname.startswith("/") and not _inside(target, dest):
            raise _breakout(info.linkname, dest)
    link_target = None
    if info.islnk():
        link_target = posixpath.normpath(posixpath.join(dest, info.linkname.lstrip("/")))
        if not _inside(link_target, dest):
            raise _breakout(info.linkname, dest)
    owner = opts.owner or (info.uid, info.gid)
    parent, _, base = cpath.rpartition("/")
    if not base:  # the destination itself ("." in the archive)
        if info.isdir():
            with _opened(_dir_in_root(root_fd, cpath)) as fd:
                _apply_meta(fd, info, owner)
            dirs.append((cpath, int(info.mtime)))
        return
    with _opened(ensure_dir(root_fd, parent or "/")) as pfd:
        try:
            existing: os.stat_result | None = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None:
            is_dir = stat.S_ISDIR(existing.st_mode)
            if opts.no_overwrite_dir_non_dir and is_dir and not info.isdir():
                raise InvalidParameter(
                    f"cannot overwrite directory {cpath!r} with non-directory {info.name!r}")
            if opts.no_overwrite_dir_non_dir and not is_dir and info.isdir():
                raise InvalidParameter(
                    f"cannot overwrite non-directory {cpath!r} with directory {info.name!r}")
            if not (is_dir and info.isdir()):
                try:
                    _remove(pfd, base, existing)
                except OSError as exc:
                    raise SystemError_(f"cannot replace {cpath}: {exc.strerror}") from exc
        _create(root_fd, pfd, base, cpath, tar, info, owner, link_target, dirs)


def _create(root_fd: int, pfd: int, base: str, cpath: str, tar: tarfile.TarFile,
            info: tarfile.TarInfo, owner: tuple[int, int], link_target: str | None,
            dirs: list[tuple[str, int]]) -> None:
    nofollow = os.O_NOFOLLOW | os.O_CLOEXEC
    if info.isdir():
        with contextlib.suppress(FileExistsError):
            os.mkdir(base, 0o700, dir_fd=pfd)
        with _opened(os.open(base, os.O_PATH | os.O_DIRECTORY | nofollow, dir_fd=pfd)) as fd:
            _apply_meta(fd, info, owner)
        dirs.append((cpath, int(info.mtime)))
        return
    if info.isreg():
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow, 0o600, dir_fd=pfd)
        try:
            write_member(tar, info, fd)  # streamed; a sparse member's holes stay holes
            _apply_meta(fd, info, owner)
            os.utime(fd, (info.mtime, info.mtime))
        finally:
            os.close(fd)
        return
    if info.issym():
        os.symlink(info.linkname, base, dir_fd=pfd)
        os.chown(base, owner[0], owner[1], dir_fd=pfd, follow_symlinks=False)
        with contextlib.suppress(OSError):
            os.utime(base, (info.mtime, info.mtime), dir_fd=pfd, follow_symlinks=False)
        return
    if info.islnk():
        assert link_target is not None
        tparent, _, tbase = link_target.rpartition("/")
        try:
            with _opened(_dir_in_root(root_fd, tparent or "/")) as tfd:
                os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError as exc:
            raise InvalidParameter(
                f"Error processing tar file: hard link target {info.linkname!r} of "
                f"{info.name!r} does not exist") from exc
        return
    if info.ischr() or info.isblk() or info.isfifo():
        kind = (stat.S_IFCHR if info.ischr() else stat.S_IFBLK if info.isblk()
                else stat.S_IFIFO)
        device = os.makedev(info.devmajor, info.devminor) if not info.isfifo() else 0
        os.mknod(base, kind | 0o600, device, dir_fd=pfd)
        with _opened(os.open(base, os.O_PATH | nofollow, dir_fd=pfd)) as fd:
            _apply_meta(fd, info, owner)
            os.utime(_fd_path(fd), (info.mtime, info.mtime))
        return
    raise InvalidParameter(f"Error processing tar file: unhandled tar header type "
                           f"{info.type!r} for {info.name!r}")
