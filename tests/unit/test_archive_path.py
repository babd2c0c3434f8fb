"""docker cp's path rules and confinement, on a temp dir standing for a container's root."""

import base64
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stowd.engine import archive_path as ap
from stowd.engine.errors import InvalidParameter, NotFound
from stowd.engine.top import parse_ps_output


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A container root with an escape hatch or two, and a host file it must never reach."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host secret")
    r = tmp_path / "root"
    for d in ("etc", "tmp", "bin", "data/sub"):
        (r / d).mkdir(parents=True)
    (r / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (r / "data" / "sub" / "f").write_text("f")
    os.link(r / "data" / "sub" / "f", r / "data" / "hard")
    os.symlink("/etc/passwd", r / "lnk")
    os.symlink("/", r / "rootlink")
    os.symlink("../../../../../..", r / "up")
    os.symlink(str(host), r / "hostdir")  # absolute: means <root>/tmp/.../host inside
    os.symlink("/etc", r / "etclink")
    fd = os.open(r, os.O_PATH | os.O_DIRECTORY)
    yield r, fd
    os.close(fd)


def _tar(*members: tuple[str, str, str]) -> io.BytesIO:
    """(kind, name, data or link target) → an uncompressed tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_000_000_000
            if kind == "file":
                info.size = len(data)
                info.mode = 0o640
                t.addfile(info, io.BytesIO(data.encode()))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o750
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, data
            t.addfile(info)
    buf.seek(0)
    return buf


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return [m.name for m in t]


def test_resolve_in_scope_never_leaves_the_root(root: tuple[Path, int]) -> None:
    _, fd = root
    assert ap.resolve_in_scope(fd, "/lnk") == "/etc/passwd"
    assert ap.resolve_in_scope(fd, "/rootlink/etc") == "/etc"
    assert ap.resolve_in_scope(fd, "/up/etc/passwd") == "/etc/passwd"
    assert ap.resolve_in_scope(fd, "/../../../etc") == "/etc"
    assert ap.resolve_in_scope(fd, "/etclink/missing/x") == "/etc/missing/x"
    assert ap.resolve_in_scope(fd, "/hostdir/secret").startswith("/tmp/")  # inside the root


def test_symlink_loops_are_refused(root: tuple[Path, int]) -> None:
    r, fd = root
    os.symlink("loop2", r / "loop1")
    os.symlink("loop1", r / "loop2")
    with pytest.raises(InvalidParameter):
        ap.resolve_in_scope(fd, "/loop1")


def test_open_in_root_follows_absolute_links_inside(root: tuple[Path, int]) -> None:
    _, fd = root
    with pytest.raises(FileNotFoundError):
        ap.open_in_root(fd, "/hostdir/secret", os.O_RDONLY)  # not the host's file
    f = ap.open_in_root(fd, "/up/etc/passwd", os.O_RDONLY)
    assert os.read(f, 4) == b"root"
    os.close(f)


def test_stat_of_paths_as_dockerd(root: tuple[Path, int]) -> None:
    _, fd = root
    st = ap.path_stat(fd, ap.resolve_resource(fd, "/lnk", "c"))
    assert (st.name, st.link_target, st.size) == ("lnk", "/etc/passwd", len("/etc/passwd"))
    assert st.mode == 1 << 27 | 0o777
    st = ap.path_stat(fd, ap.resolve_resource(fd, "/etc/", "c"))
    assert st.name == "etc" and st.mode & (1 << 31)
    assert ap.path_stat(fd, ap.resolve_resource(fd, "/etc/.", "c")).name == "."
    assert ap.path_stat(fd, ap.resolve_resource(fd, "/", "c")).name == "/"
    with pytest.raises(NotFound, match="Could not find the file /nope in container c"):
        ap.resolve_resource(fd, "/nope", "c")
    with pytest.raises(InvalidParameter, match="not a directory"):
        ap.resolve_resource(fd, "/lnk/", "c")
    # the stat header is base64 JSON
    header = base64.b64encode(json.dumps(st.to_json()).encode())
    assert set(json.loads(base64.b64decode(header))) == {"name", "size", "mode", "mtime",
                                                           "linkTarget"}


def test_go_modes_and_times() -> None:
    assert ap.go_file_mode(stat.S_IFDIR | 0o755) == 2147484141
    assert ap.go_file_mode(stat.S_IFLNK | 0o777) == 134218239
    assert ap.go_file_mode(stat.S_IFREG | 0o4755) == (1 << 23) | 0o755
    assert ap.go_file_mode(stat.S_IFCHR | 0o600) == (1 << 26) | (1 << 21) | 0o600
    assert ap.go_time(0) == "1970-01-01T00:00:00Z"
    assert ap.go_time(1_795_834_035_920_695_302) == "2026-11-28T02:47:15.920695302Z"
    assert ap.go_time(1_795_834_035_500_000_000) == "2026-11-28T02:47:15.5Z"


def _archive(fd: int, path: str) -> bytes:
    out = io.BytesIO()
    ap.write_archive(fd, ap.resolve_resource(fd, path, "c"), out)
    return out.getvalue()


def test_archive_names_follow_the_requested_base(root: tuple[Path, int]) -> None:
    _, fd = root
    assert _names(_archive(fd, "/data")) == ["data", "data/hard", "data/sub", "data/sub/f"]
    assert _names(_archive(fd, "/data/.")) == [".", "./hard", "./sub", "./sub/f"]
    assert _names(_archive(fd, "/etclink/")) == ["etclink", "etclink/passwd"]
    assert _names(_archive(fd, "/lnk")) == ["lnk"]
    with tarfile.open(fileobj=io.BytesIO(_archive(fd, "/data"))) as t:
        kinds = {m.name: m for m in t}
    assert kinds["data/sub/f"].islnk() or kinds["data/hard"].islnk()  # one inode, once
    with pytest.raises(NotFound):  # the host's directory is not the container's
        _archive(fd, "/hostdir/")


def _extract(fd: int, dest: str, tar: io.BytesIO, **opts: object) -> None:
    ap.extract(fd, dest, tar, ap.ExtractOptions(**opts))  # type: ignore[arg-type]


def test_dotdot_entries_are_confined_or_refused(root: tuple[Path, int], tmp_path: Path) -> None:
    r, fd = root
    _extract(fd, "/", _tar(("file", "../../etc/x", "x")))
    assert (r / "etc" / "x").read_text() == "x"  # confined, as a chroot would
    assert not (tmp_path / "etc").exists()
    with pytest.raises(InvalidParameter, match="outside"):
        _extract(fd, "/tmp", _tar(("file", "../../etc/y", "y")))
    assert not (r / "etc" / "y").exists()


def test_symlink_then_file_through_it_stays_inside(root: tuple[Path, int],
                                                   tmp_path: Path) -> None:
    r, fd = root
    host = tmp_path / "host"
    _extract(fd, "/", _tar(("symlink", "esc", str(host)), ("file", "esc/pwned", "p"),
                           ("symlink", "esc2", "/"), ("file", "esc2/tmp/two", "2")))
    assert not (host / "pwned").exists()
    assert (r / str(host).lstrip("/") / "pwned").read_text() == "p"
    assert (r / "tmp" / "two").read_text() == "2"
    # a symlink already in the container, pointing at the host's path, is followed inside too
    _extract(fd, "/hostdir", _tar(("file", "secret", "overwritten?")))
    assert (host / "secret").read_text() == "host secret"
    with pytest.raises(InvalidParameter, match="outside"):
        _extract(fd, "/tmp", _tar(("symlink", "out", "../../etc")))


def test_hard_links_stay_inside(root: tuple[Path, int], tmp_path: Path) -> None:
    r, fd = root
    _extract(fd, "/", _tar(("hardlink", "hl", "../../../etc/passwd")))
    assert os.stat(r / "hl").st_ino == os.stat(r / "etc" / "passwd").st_ino
    with pytest.raises(InvalidParameter, match="outside"):
        _extract(fd, "/tmp", _tar(("hardlink", "h2", "../etc/passwd")))


def test_no_overwrite_dir_non_dir(root: tuple[Path, int]) -> None:
    r, fd = root
    with pytest.raises(InvalidParameter, match="cannot overwrite directory"):
        _extract(fd, "/", _tar(("file", "data", "x")), no_overwrite_dir_non_dir=True)
    with pytest.raises(InvalidParameter, match="cannot overwrite non-directory"):
        _extract(fd, "/", _tar(("dir", "lnk", "")), no_overwrite_dir_non_dir=True)
    assert (r / "data").is_dir()
    _extract(fd, "/", _tar(("file", "data", "x")))  # without the flag: replaced
    assert (r / "data").read_text() == "x"


def test_owner_mode_and_times(root: tuple[Path, int]) -> None:
    r, fd = root
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("owned")
        info.size, info.uid, info.gid, info.mode, info.mtime = 1, 1234, 4321, 0o640, 1000
        t.addfile(info, io.BytesIO(b"o"))
        d = tarfile.TarInfo("newdir")
        d.type, d.mode, d.mtime, d.uid, d.gid = tarfile.DIRTYPE, 0o711, 2000, 7, 8
        t.addfile(d)
        f = tarfile.TarInfo("newdir/f")
        t.addfile(f, io.BytesIO(b""))
    buf.seek(0)
    _extract(fd, "/tmp", buf)
    st = os.stat(r / "tmp" / "owned")
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (1234, 4321)
    assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o640, 1000)
    dst = os.stat(r / "tmp" / "newdir")
    assert (stat.S_IMODE(dst.st_mode), dst.st_mtime) == (0o711, 2000)  # set after its files
    buf.seek(0)
    if os.geteuid() == 0:
        _extract(fd, "/tmp", buf, owner=(5, 6))  # copyUIDGID
        assert os.stat(r / "tmp" / "owned").st_uid == 5


def test_not_a_tar_is_a_clear_error(root: tuple[Path, int]) -> None:
    _, fd = root
    with pytest.raises(InvalidParameter, match="Error processing tar file"):
        _extract(fd, "/", io.BytesIO(b"this is not a tar archive" * 40))


def test_top_parses_ps_as_dockerd() -> None:
    out = ("UID   PID  PPID  C STIME TTY  TIME     CMD\n"
           "root  10   1     0 10:00 ?    00:00:00 sh -c while :;  do :; done\n"
           "root  11   10    0 10:00 ?    00:00:00 sleep 5\n"
           "root  99   1     0 10:00 ?    00:00:00 other\n")
    titles, rows = parse_ps_output(out, {10, 11})
    assert titles == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert rows == [["root", "10", "1", "0", "10:00", "?", "00:00:00", "sh -c while :; do :; done"],
                    ["root", "11", "10", "0", "10:00", "?", "00:00:00", "sleep 5"]]
    threads = "PID LWP CMD\n10 - a\n- 12 t\n99 - b\n- 13 u\n"
    assert parse_ps_output(threads, {10})[1] == [["10", "-", "a"], ["-", "12", "t"]]
