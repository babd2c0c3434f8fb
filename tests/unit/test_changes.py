"""docker diff from an overlay upperdir over lower layers, on temp dirs (whiteouts need root)."""

import os
import time
from pathlib import Path

import pytest

from stowd.engine.changes import ADDED, DELETED, MODIFIED, collect_changes
from stowd.engine.dirsize import dir_size

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="whiteouts (char 0:0) and trusted.* xattrs need root")

OLD = 1_000_000_000  # the image's files carry an old mtime, as extracted layers do


def _tree(root: Path, spec: dict[str, str | None]) -> None:
    """name → file content, or None for a directory (names ending in / too)."""
    for name, content in spec.items():
        path = root / name.rstrip("/")
        if content is None or name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), (OLD, OLD), follow_symlinks=False)


def _whiteout(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, 0o600 | 0o020000, os.makedev(0, 0))


def _opaque(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.setxattr(path, "trusted.overlay.opaque", b"y")


def _copy_up_dir(lower: Path, upper: Path, rel: str) -> None:
    """What overlayfs does to a lower directory when something below it changes."""
    src, dst = lower / rel, upper / rel
    dst.mkdir(parents=True, exist_ok=True)
    st = os.stat(src)
    os.chmod(dst, st.st_mode & 0o7777)
    os.utime(dst, (time.time(), time.time()))  # its mtime changes: not a change for docker


@pytest.fixture
def layers(tmp_path: Path) -> tuple[Path, Path, Path]:
    image, init, upper = tmp_path / "image", tmp_path / "init", tmp_path / "upper"
    _tree(image, {"bin/ls": "ls", "bin/cat": "cat", "bin/sh": "sh", "etc/passwd": "root",
                  "etc/group": "root", "usr/bin/": None, "usr/lib/libc": "c", "home/": None,
                  "var/": None, "root/": None})
    _tree(init, {".dockerenv": "", "etc/hosts": "", "etc/hostname": "", "dev/": None,
                 "proc/": None, "sys/": None})
    upper.mkdir()
    return image, init, upper


def _diff(upper: Path, *lowers: Path) -> list[tuple[str, int]]:
    return [(c.path, c.kind) for c in collect_changes(str(upper), [str(d) for d in lowers])]


def test_nothing_changed(layers: tuple[Path, Path, Path]) -> None:
    image, init, upper = layers
    assert _diff(upper, init, image) == []


def test_deleted_file_is_a_whiteout(layers: tuple[Path, Path, Path]) -> None:
    image, init, upper = layers
    _copy_up_dir(image, upper, "bin")
    _whiteout(upper / "bin" / "ls")
    assert _diff(upper, init, image) == [("/bin", MODIFIED), ("/bin/ls", DELETED)]


def test_directory_removed_and_made_again_is_opaque(layers: tuple[Path, Path, Path]) -> None:
    image, init, upper = layers
    # rm -rf /usr /home; mkdir /usr; echo hi > /usr/f; mkdir /usr/bin
    _opaque(upper / "usr")
    (upper / "usr" / "f").write_text("hi")
    (upper / "usr" / "bin").mkdir()
    _whiteout(upper / "home")
    assert _diff(upper, init, image) == [
        ("/home", DELETED), ("/usr", MODIFIED), ("/usr/f", ADDED), ("/usr/lib", DELETED)]


def test_adds_renames_symlinks_and_modifications(layers: tuple[Path, Path, Path]) -> None:
    image, init, upper = layers
    (upper / "newfile").write_text("\n")
    (upper / "a" / "b").mkdir(parents=True)
    (upper / "a" / "b" / "c").write_text("\n")
    os.symlink("/etc/passwd", upper / "lnk")
    _copy_up_dir(image, upper, "bin")
    (upper / "bin" / "cat2").write_text("cat")  # mv /bin/cat /bin/cat2
    _whiteout(upper / "bin" / "cat")
    _copy_up_dir(image, upper, "etc")
    (upper / "etc" / "passwd").write_text("root\nx\n")  # content and mtime differ
    (upper / "etc" / "group").write_text("root")
    os.utime(upper / "etc" / "group", (OLD, OLD))  # copied up, same size and mtime
    _copy_up_dir(image, upper, "root")  # touch /root: a directory's mtime is no change
    _copy_up_dir(image, upper, "var")
    os.chmod(upper / "var", 0o700)  # chmod is
    assert _diff(upper, init, image) == [
        ("/a", ADDED), ("/a/b", ADDED), ("/a/b/c", ADDED),
        ("/bin", MODIFIED), ("/bin/cat", DELETED), ("/bin/cat2", ADDED),
        ("/etc", MODIFIED), ("/etc/passwd", MODIFIED),
        ("/lnk", ADDED), ("/newfile", ADDED), ("/var", MODIFIED)]


def test_init_layer_files_count_as_there(layers: tuple[Path, Path, Path]) -> None:
    image, init, upper = layers
    _copy_up_dir(init, upper, "etc")
    (upper / "etc" / "hosts").write_text("127.0.0.1 x\n")
    assert _diff(upper, init, image) == [("/etc", MODIFIED), ("/etc/hosts", MODIFIED)]
    # without the init layer as a lower layer, /etc/hosts would look added
    assert ("/etc/hosts", ADDED) in _diff(upper, image)


def test_whiteouts_and_opaque_dirs_in_lower_layers(tmp_path: Path) -> None:
    base, top, upper = tmp_path / "base", tmp_path / "top", tmp_path / "upper"
    _tree(base, {"etc/old": "x", "opt/a": "a", "opt/b": "b", "srv/x/": None})
    _tree(top, {"etc/": None})
    _whiteout(top / "etc" / "old")  # the image deleted /etc/old
    _opaque(top / "opt")  # and replaced /opt
    (top / "opt" / "c").write_text("c")
    upper.mkdir()
    (upper / "etc").mkdir()
    (upper / "etc" / "old").write_text("new")
    (upper / "opt").mkdir()
    (upper / "opt" / "a").write_text("a")
    os.utime(upper / "etc", (OLD, OLD))
    os.utime(upper / "opt", (OLD, OLD))
    # /etc/old and /opt/a are not in the image any more: they are added, not modified
    assert _diff(upper, top, base) == [("/etc", MODIFIED), ("/etc/old", ADDED),
                                       ("/opt", MODIFIED), ("/opt/a", ADDED)]
    # deleting what the image does not show is no change
    (upper / "srv").mkdir()
    _whiteout(upper / "srv" / "nothing")
    assert ("/srv/nothing", DELETED) not in _diff(upper, top, base)


def test_file_replaced_by_directory(layers: tuple[Path, Path, Path]) -> None:
    image, init, upper = layers
    _copy_up_dir(image, upper, "etc")
    (upper / "etc" / "passwd").mkdir()
    (upper / "etc" / "passwd" / "x").write_text("")
    assert _diff(upper, init, image) == [
        ("/etc", MODIFIED), ("/etc/passwd", MODIFIED), ("/etc/passwd/x", ADDED)]


def test_ten_thousand_changed_files_all_found(layers: tuple[Path, Path, Path]) -> None:
    # Its speed is measured in bench/inspect_fs.py, never asserted here.
    image, init, upper = layers
    for d in range(100):
        sub = upper / "data" / f"d{d:03}"
        sub.mkdir(parents=True)
        for f in range(100):
            (sub / f"f{f:03}").write_text("x")
    found = _diff(upper, init, image)
    assert len(found) == 1 + 100 + 10_000


def test_dir_size_counts_hard_links_once(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" * 1000)
    os.link(tmp_path / "d" / "f", tmp_path / "g")
    os.symlink("d/f", tmp_path / "s")  # a symlink counts its own size (3)
    (tmp_path / "empty").write_bytes(b"")
    assert dir_size(tmp_path) == 1003
