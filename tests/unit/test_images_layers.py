"""Layer extraction: whiteouts in overlay form, digests, and byte-exact tars back (tar-split)."""

import gzip
import hashlib
import io
import lzma
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from stowd.engine.errors import InvalidParameter
from stowd.engine.images import tarsplit
from stowd.engine.images.layers import (
    OPAQUE_XATTR,
    TAR_SPLIT,
    DiffIDMismatch,
    convert_whiteouts,
    decompressed,
    decompressed_as,
    extract_layer,
)
from stowd.engine.images.save import retar_layer
from stowd.engine.images.tarsplit import TarSplitter, assemble, member_path
from tests.unit.test_images_tarballs import (
    directory,
    file,
    hardlink,
    layer_tar,
    opaque,
    sha256,
    symlink,
    whiteout,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod and trusted xattrs need root")


def is_whiteout(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


# whiteout conversion -------------------------------------------------------------------------


@needs_root
def test_convert_whiteouts(tmp_path: Path) -> None:
    root = tmp_path / "diff"
    (root / "data").mkdir(parents=True)
    (root / "data" / ".wh.gone").write_text("")
    (root / "data" / "kept").write_text("12345")
    (root / ".wh.olddir").write_text("")
    (root / "opq").mkdir()
    (root / "opq" / ".wh..wh..opq").write_text("")
    (root / "opq" / "new").write_text("new")
    (root / ".wh..wh.plnk").mkdir()
    (root / ".wh..wh.plnk" / "123").write_text("aufs")
    # A whiteout and an entry of the same name in one layer: the entry stays (OCI spec).
    (root / "both").write_text("mine")
    (root / ".wh.both").write_text("")
    os.link(root / "data" / "kept", root / "data" / "kept-link")

    size = convert_whiteouts(root)

    assert is_whiteout(root / "data" / "gone")
    assert is_whiteout(root / "olddir")
    assert os.getxattr(root / "opq", OPAQUE_XATTR) == b"y"
    assert sorted(os.listdir(root / "opq")) == ["new"]
    assert not (root / ".wh..wh.plnk").exists()
    assert not (root / "plnk").exists() and not (root / ".wh.plnk").exists()
    assert (root / "both").read_text() == "mine"
    assert not any(name.startswith(".wh.") for _, dirs, files in os.walk(root)
                   for name in dirs + files)
    assert size == len("12345") + len("new") + len("mine")  # hard links count once


# extraction -------------------------------------------------------------------------------------

RICH_LAYER = [
    directory("etc"),
    file("etc/hostname", "box\n"),
    file("etc/empty"),
    file("etc/block", b"x" * 512),
    file("etc/block-plus", b"y" * 513),
    file("big", os.urandom(3 * 1024 * 1024 + 7)),
    file("d" * 120 + "/long-name-" + "n" * 150, "long"),
    directory("d" * 120),
    symlink("etc/link", "/etc/hostname"),
    hardlink("etc/hard", "etc/hostname"),
    whiteout("gone"),
    file("data/.wh.weird", "a whiteout with content"),
    opaque("opq"),
    file("opq/new", "n"),
    directory("exec"),
    file("exec/tool", "#!/bin/sh\n", mode=0o4755),
]


def extract(tmp_path: Path, data: bytes, expected: str | None = None):  # type: ignore[no-untyped-def]
    root = tmp_path / "layers"
    root.mkdir(exist_ok=True)
    return extract_layer(io.BytesIO(data), root, expected_diff_id=expected)


@needs_root
@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_extract_then_assemble_gives_the_same_bytes(tmp_path: Path, fmt: int) -> None:
    data = layer_tar(RICH_LAYER, fmt)
    if fmt == tarfile.GNU_FORMAT:
        assert b"././@LongLink" in data  # the long name went into a GNU long-name record
    layer = extract(tmp_path, data)
    assert layer.diff_id == sha256(data)
    assert layer.split.broken is None
    diff = layer.path / "diff"
    assert is_whiteout(diff / "gone")
    assert os.getxattr(diff / "opq", OPAQUE_XATTR) == b"y"
    assert os.readlink(diff / "etc" / "link") == "/etc/hostname"
    assert os.stat(diff / "exec" / "tool").st_mode & 0o7777 == 0o4755
    out = io.BytesIO()
    assert assemble(layer.path / TAR_SPLIT, diff, out) == len(data)  # type: ignore[arg-type]
    assert out.getvalue() == data
    assert tarsplit.tar_size(layer.path / TAR_SPLIT) == len(data)


@needs_root
@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress])
def test_compressed_layers_have_the_digest_of_their_tar(tmp_path: Path, compress) -> None:  # type: ignore[no-untyped-def]
    data = layer_tar([file("a", "1"), file("b", os.urandom(100_000))])
    layer = extract(tmp_path, compress(data))
    assert layer.diff_id == sha256(data)
    out = io.BytesIO()
    assemble(layer.path / TAR_SPLIT, layer.path / "diff", out)  # type: ignore[arg-type]
    assert out.getvalue() == data


@needs_root
def test_a_digest_other_than_expected_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    data = layer_tar([file("a", "1")])
    with pytest.raises(DiffIDMismatch) as info:
        extract(tmp_path, data, expected="sha256:" + "0" * 64)
    assert info.value.actual == sha256(data)
    assert list((tmp_path / "layers").iterdir()) == []


@needs_root
def test_the_digest_covers_bytes_after_the_end_of_archive(tmp_path: Path) -> None:
    data = layer_tar([file("a", "1")]) + b"\0" * 4096 + b"trailing junk"
    layer = extract(tmp_path, data)
    assert layer.diff_id == sha256(data)
    out = io.BytesIO()
    assemble(layer.path / TAR_SPLIT, layer.path / "diff", out)  # type: ignore[arg-type]
    assert out.getvalue() == data


@needs_root
def test_overlay_xattrs_in_a_layer_are_not_obeyed(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("sneaky")
        info.type = tarfile.DIRTYPE
        info.pax_headers = {"SCHILY.xattr.trusted.overlay.opaque": "y",
                            "SCHILY.xattr.user.kept": "v"}
        tar.addfile(info)
    layer = extract(tmp_path, buf.getvalue())
    names = os.listxattr(layer.path / "diff" / "sneaky")
    assert "trusted.overlay.opaque" not in names
    assert "user.kept" in names


@needs_root
@pytest.mark.parametrize("data", [b"not a tar at all" * 64, gzip.compress(b"x" * 1000)])
def test_garbage_is_an_invalid_layer(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(InvalidParameter, match="invalid layer archive"):
        extract(tmp_path, data)
    assert list((tmp_path / "layers").iterdir()) == []


@needs_root
def test_a_path_written_twice_cannot_be_reproduced(tmp_path: Path) -> None:
    data = layer_tar([file("a", "first"), file("a", "second")])
    layer = extract(tmp_path, data)
    assert layer.split.broken is not None
    assert not (layer.path / TAR_SPLIT).exists()
    assert (layer.path / "diff" / "a").read_text() == "second"


@needs_root
def test_retar_turns_overlay_whiteouts_back_into_tar_entries(tmp_path: Path) -> None:
    layer = extract(tmp_path, layer_tar(RICH_LAYER))
    out = io.BytesIO()
    retar_layer(layer.path / "diff", out)  # type: ignore[arg-type]
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        names = set(tar.getnames())
        tool = tar.getmember("exec/tool")
    assert {".wh.gone", "opq/.wh..wh..opq", "opq/new", "etc/hostname"} <= names
    assert "gone" not in names
    assert tool.mode & 0o7777 == 0o4755
    again = extract(tmp_path, out.getvalue())
    assert is_whiteout(again.path / "diff" / "gone")
    assert os.getxattr(again.path / "diff" / "opq", OPAQUE_XATTR) == b"y"


# the splitter on its own ------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 511, 512, 513, 100_000])
def test_splitter_records_the_same_whatever_the_chunking(tmp_path: Path, chunk: int) -> None:
    data = layer_tar([file("a", b"x" * 1000), file("b"), directory("c"), file("c/d", "dd")])
    record = tmp_path / "r.gz"
    with gzip.open(record, "wb") as out:
        splitter = TarSplitter(out)  # type: ignore[arg-type]
        for i in range(0, len(data), chunk):
            splitter.feed(data[i:i + chunk])
        result = splitter.close()
    assert result.broken is None
    assert [(f.path, f.size) for f in result.files] == [(b"a", 1000), (b"c/d", 2)]
    assert result.total == len(data)
    assert tarsplit.tar_size(record) == len(data)


def test_splitter_gives_up_on_sparse_members(tmp_path: Path) -> None:
    header = tarfile.TarInfo("sparse")
    header.type = tarfile.GNUTYPE_SPARSE
    block = header.tobuf(tarfile.GNU_FORMAT)
    with gzip.open(tmp_path / "r.gz", "wb") as out:
        splitter = TarSplitter(out)  # type: ignore[arg-type]
        splitter.feed(block + bytes(1024))
        assert splitter.close().broken == "GNU sparse member"


def test_assemble_never_follows_a_symlink_out_of_the_layer(tmp_path: Path) -> None:
    data = layer_tar([file("etc/passwd", "x" * 10)])
    record = tmp_path / "r.gz"
    with gzip.open(record, "wb") as out:
        splitter = TarSplitter(out)  # type: ignore[arg-type]
        splitter.feed(data)
        splitter.close()
    diff = tmp_path / "diff"
    diff.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("y" * 10)
    (diff / "etc").symlink_to(outside)
    with pytest.raises(tarsplit.SplitError, match="missing from the layer"):
        assemble(record, diff, io.BytesIO())  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "path"), [("a/b", b"a/b"), ("./a", b"a"), ("/x/../y", b"y")])
def test_member_path(name: str, path: bytes) -> None:
    assert member_path(name) == path


def test_decompression_output_stays_bounded() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 KiB
    pieces = list(decompressed(io.BytesIO(bomb)))
    assert sum(len(p) for p in pieces) == 64 << 20
    assert max(len(p) for p in pieces) <= 1 << 20
    assert hashlib.sha256(b"".join(pieces)).digest() == hashlib.sha256(b"\0" * (64 << 20)).digest()


def test_zstd_layers_decompress_bounded() -> None:
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (64 << 20))
    pieces = list(decompressed(io.BytesIO(bomb)))
    assert sum(len(p) for p in pieces) == 64 << 20
    assert max(len(p) for p in pieces) <= 1 << 20


def test_bad_zstd_data_is_refused_clearly() -> None:
    with pytest.raises(InvalidParameter, match="bad compressed data"):
        list(decompressed(io.BytesIO(b"\x28\xb5\x2f\xfd\x04\x00" + b"\xff" * 10)))


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_decompressed_as_media_type_says(compression: str) -> None:
    data = os.urandom(3 << 20)
    blob = {"gzip": lambda d: gzip.compress(d) + gzip.compress(b"tail"),
            "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
            "none": lambda d: d}[compression](data)
    seen: list[int] = []
    out = b"".join(decompressed_as(io.BytesIO(blob), compression, seen.append))
    expected = data + b"tail" if compression == "gzip" else data
    assert out == expected
    assert seen[-1] == len(blob)


def test_gzip_media_type_is_not_guessed() -> None:
    # A plain tar under a gzip media type is refused, never taken as it is.
    with pytest.raises(InvalidParameter, match="bad compressed data"):
        list(decompressed_as(io.BytesIO(b"x" * 1024), "gzip"))


def test_bad_gzip_data_is_refused_clearly() -> None:
    bad = gzip.compress(os.urandom(1 << 16))
    bad = bad[:100] + bytes(b ^ 0xFF for b in bad[100:200]) + bad[200:]
    with pytest.raises(InvalidParameter, match="bad compressed data"):
        list(decompressed(io.BytesIO(bad)))
    with pytest.raises(InvalidParameter, match="bad compressed data"):
        list(decompressed_as(io.BytesIO(bad), "gzip"))
    with pytest.raises(InvalidParameter, match="unexpected end of gzip data"):
        list(decompressed_as(io.BytesIO(gzip.compress(b"x" * 100000)[:-20]), "gzip"))


class _Breaks(io.RawIOBase):
    """A layer source that fails half-way, as a pull whose client went away."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self._reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        self._reads += 1
        if self._reads > 3:
            raise ConnectionError("gone")
        return self._data.readinto(b)


def test_a_source_failing_half_way_leaves_nothing_and_no_thread(tmp_path: Path) -> None:
    import threading
    tar = layer_tar([file(f"f{i}", os.urandom(1 << 20)) for i in range(8)])
    before = threading.active_count()
    with pytest.raises(ConnectionError):
        extract_layer(_Breaks(gzip.compress(tar, compresslevel=1)), tmp_path,  # type: ignore[arg-type]
                      compression="gzip")
    assert list(tmp_path.iterdir()) == []
    assert threading.active_count() == before
