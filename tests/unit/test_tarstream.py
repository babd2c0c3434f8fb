"""One-pass tar reading (issue 12): bounded decompression, sparse members kept sparse."""

import gzip
import io
import os
import subprocess
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from stowd.engine.tarstream import DecompressedReader, open_tar_stream, write_member


def test_decompressed_reader_holds_bounded_pieces() -> None:
    raw = gzip.compress(bytes(64 << 20), 9)  # 64 MiB of zeros in ~64 KB
    reader = DecompressedReader(io.BytesIO(raw))
    total = 0
    buf = bytearray(10240)
    tracemalloc.start()
    try:
        while n := reader.readinto(buf):
            total += n
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 64 << 20
    assert peak < 4 << 20


def test_corrupt_compression_is_a_read_error() -> None:
    with pytest.raises(tarfile.ReadError, match="bad compressed data"), \
            open_tar_stream(io.BytesIO(b"\x1f\x8b" + b"x" * 100)) as tar:
        list(tar)


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_sparse_member_is_written_with_holes(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "f", "wb") as f:
        f.seek(3 << 20)
        f.write(b"middle")
        f.truncate(1 << 30)
    archive = tmp_path / "a.tar"
    subprocess.run(["tar", f"--format={fmt}", "--sparse", "-cf", str(archive), "-C", str(src),
                    "f"], check=True)
    with open(archive, "rb") as raw, open_tar_stream(raw) as tar:
        for info in tar:
            fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                write_member(tar, info, fd)
            finally:
                os.close(fd)
    st = os.stat(tmp_path / "out")
    assert st.st_size == 1 << 30
    assert st.st_blocks * 512 < 1 << 20
    with open(tmp_path / "out", "rb") as f:
        f.seek(3 << 20)
        assert f.read(6) == b"middle"
