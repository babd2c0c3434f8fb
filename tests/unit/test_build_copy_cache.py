import gzip
import io
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from stowd.engine.build import cache
from stowd.engine.build.builder import _port_specs, go_quote_list
from stowd.engine.build.copy import (
    CopyError,
    _is_archive,
    checksum,
    destination,
    find_sources,
    has_wildcards,
    parse_chown,
)
from stowd.engine.images.store import Image


@pytest.mark.parametrize(("workdir", "requested", "expected"), [
    ("/", "/a", ("/a", False)),
    ("/app", "b", ("/app/b", False)),
    ("/app", "b/", ("/app/b", True)),
    ("/app", ".", ("/app", True)),
    ("/app", "./", ("/app", True)),
    ("/app", "../x", ("/x", False)),
    ("", "rel", ("/rel", False)),
])
def test_destination(workdir: str, requested: str, expected: tuple[str, bool]) -> None:
    assert destination(workdir, requested) == expected


def test_has_wildcards() -> None:
    assert has_wildcards("*.txt") and has_wildcards("a?c") and has_wildcards("[ab]")
    assert not has_wildcards("plain/path") and not has_wildcards(r"a\*b")


def _ctx(tmp_path: Path) -> Path:
    (tmp_path / "src/lib").mkdir(parents=True)
    (tmp_path / "src/a.py").write_text("a")
    (tmp_path / "src/lib/b.py").write_text("b")
    (tmp_path / "top.txt").write_text("t")
    return tmp_path


def test_find_sources(tmp_path: Path) -> None:
    root = str(_ctx(tmp_path))
    found = find_sources(root, ["src/*.py", "top.txt", "src"], "COPY", True)
    assert [(s.name, s.is_dir) for s in found] == [("src/a.py", False), ("top.txt", False),
                                                   ("src", True)]
    with pytest.raises(CopyError, match=re.escape(
            "COPY failed: file not found in build context or excluded by .dockerignore: "
            "stat nope: file does not exist")):
        find_sources(root, ["nope"], "COPY", True)
    with pytest.raises(CopyError, match="no source files were specified"):
        find_sources(root, ["*.md"], "COPY", True)


def test_checksum_ignores_times_not_content_or_mode(tmp_path: Path) -> None:
    root = str(_ctx(tmp_path))
    first = checksum(find_sources(root, ["src"], "COPY", True))
    assert first.startswith("dir:")
    import os
    os.utime(tmp_path / "src/a.py", (1, 1))
    assert checksum(find_sources(root, ["src"], "COPY", True)) == first
    os.chmod(tmp_path / "src/a.py", 0o700)
    assert checksum(find_sources(root, ["src"], "COPY", True)) != first
    assert checksum(find_sources(root, ["top.txt"], "COPY", True)).startswith("file:")
    assert checksum(find_sources(root, ["top.txt", "src"], "COPY", True)).startswith("multi:")


def test_is_archive(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("x")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    (tmp_path / "plain.tar").write_bytes(buf.getvalue())
    (tmp_path / "gz.tgz").write_bytes(gzip.compress(buf.getvalue()))
    (tmp_path / "text.txt").write_text("not an archive" * 100)
    (tmp_path / "fake.gz").write_bytes(gzip.compress(b"not a tar" * 100))
    assert _is_archive(str(tmp_path / "plain.tar"))
    assert _is_archive(str(tmp_path / "gz.tgz"))
    assert not _is_archive(str(tmp_path / "text.txt"))
    assert not _is_archive(str(tmp_path / "fake.gz"))


def test_parse_chown(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nstaff:x:50:\n")
    view = str(tmp_path)
    assert parse_chown("", view) == (0, 0)
    assert parse_chown("7", view) == (7, 7)
    assert parse_chown("7:8", view) == (7, 8)
    assert parse_chown("app:staff", view) == (1000, 50)
    assert parse_chown("root", view) == (0, 0)
    # A lone name is the group's name too, as in dockerd 20.10 (app's group is 1001, but
    # there is no group called app).
    with pytest.raises(CopyError, match="can't find gid for group app: no such group: app"):
        parse_chown("app", view)
    with pytest.raises(CopyError, match="invalid chown string format: 1:2:3"):
        parse_chown("1:2:3", view)
    with pytest.raises(CopyError, match="no such user: ghost"):
        parse_chown("ghost", view)
    with pytest.raises(CopyError, match="no such group: nogroup"):
        parse_chown("app:nogroup", view)


def test_port_specs_and_quoting() -> None:
    assert _port_specs("80") == ["80/tcp"]
    assert _port_specs("53/UDP") == ["53/udp"]
    assert _port_specs("8000-8002") == ["8000/tcp", "8001/tcp", "8002/tcp"]
    assert go_quote_list(["sh", "-c", 'echo "x"']) == '["sh" "-c" "echo \\"x\\""]'


def _image(image_id: str, history: list[dict[str, Any]], diffs: list[str]) -> Image:
    config = {"history": history, "rootfs": {"type": "layers", "diff_ids": diffs}}
    return Image(id=image_id, config=config, layers=[f"chain-{d}" for d in diffs], size=0,
                 created="")


def test_cache_key_and_sources() -> None:
    a = {"Cmd": ["/bin/sh", "-c", "x"], "Env": ["A=1"], "Labels": {}}
    assert cache.cache_key(a) == cache.cache_key({**a, "Labels": None, "Hostname": "h"})
    assert cache.cache_key(a) != cache.cache_key({**a, "Env": ["A=2"]})
    base = _image("sha256:base", [{"created_by": "import"}], ["d1"])
    source = _image("sha256:src", [{"created_by": "import"}, {"created_by": "RUN one"},
                                   {"created_by": "ENV", "empty_layer": True}], ["d1", "d2"])
    assert cache.find_in_sources(None, [source], base, "RUN one") == (source, 2, 2)  # type: ignore[arg-type]
    assert cache.find_in_sources(None, [source], base, "RUN other") is None  # type: ignore[arg-type]
    step = _image("sha256:step", source.config["history"][:2], ["d1", "d2"])
    assert cache.find_in_sources(None, [source], step, "ENV") == (source, 3, 2)  # type: ignore[arg-type]
