"""Hostile archives (issue 12, findings 3 and 5): bombs and sparse files.

A small compressed archive that inflates to a lot, or a sparse file described by a few
kilobytes, must cost what its honest equivalent costs: one streaming pass, time linear in
the decompressed size, memory bounded by a constant, and holes that stay holes.
"""

import gzip
import io
import os
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import docker

from tests.daemon import Daemon

ZEROS = 256 << 20


def _vm_hwm_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM")


def _reset_hwm(pid: int) -> None:
    """Start the peak-memory count afresh (writing 5 to clear_refs resets VmHWM)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def gzip_bomb(member: str = "zeros", size: int = ZEROS) -> bytes:
    """A gzip'd tar of one file of `size` zero bytes: ~1/1000 of its size."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz, \
            tarfile.open(fileobj=gz, mode="w|") as tar:
        info = tarfile.TarInfo(member)
        info.size = size
        tar.addfile(info, _Zeros(size))
    return out.getvalue()


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def _measure(daemon: Daemon, send: Callable[[], object]) -> tuple[float, int]:
    assert daemon.proc is not None
    _reset_hwm(daemon.proc.pid)
    base = _vm_hwm_mib(daemon.proc.pid)
    t0 = time.monotonic()
    send()
    return time.monotonic() - t0, _vm_hwm_mib(daemon.proc.pid) - base


def test_gzip_bomb_to_load_and_cp_costs_bounded_memory(own_daemon: Daemon) -> None:
    """Finding 3: a 250 KB bomb (256 MiB of zeros) to load cost 27 s and 730 MB."""
    bomb = gzip_bomb()
    api = own_daemon.client().api
    client = own_daemon.client()
    ctr = client.containers.create("busybox", ["true"])

    def load() -> None:
        res = api.post(api.base_url + "/images/load", data=bomb,
                       headers={"Content-Type": "application/x-tar"})
        # Not an image archive: refused once read (no manifest.json), never a 500.
        assert res.status_code in (200, 400), res.text
        assert "manifest.json" in res.text

    def cp() -> None:
        ctr.put_archive("/tmp", bomb)

    load_s, load_mib = _measure(own_daemon, load)
    cp_s, cp_mib = _measure(own_daemon, cp)
    on_disk = os.stat(own_daemon.data_root / "containers" / ctr.id / "upper" / "tmp" / "zeros")
    print(f"{len(bomb) // 1024} KB gzip bomb ({ZEROS >> 20} MiB of zeros): load {load_s:.1f} s "
          f"+{load_mib} MiB peak, docker cp {cp_s:.1f} s +{cp_mib} MiB peak")
    assert on_disk.st_size == ZEROS
    assert load_mib < 64
    assert cp_mib < 64
    ctr.remove()


def test_sparse_file_stays_sparse_through_cp(own_daemon: Daemon, tmp_path: Path) -> None:
    """Finding 5: a 10 KB sparse tar given to `docker cp` wrote 10 GiB to disk."""
    src = tmp_path / "src"
    src.mkdir()
    sparse = src / "sparse"
    with open(sparse, "wb") as f:
        f.seek(1 << 20)
        f.write(b"data in the middle")
        f.truncate(10 << 30)
    archive = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "-cf", str(archive), "-C", str(src), "sparse"],
                   check=True)
    client = own_daemon.client()
    ctr = client.containers.create("busybox", ["true"])
    cli_env = dict(os.environ, DOCKER_HOST=own_daemon.url)
    with open(archive, "rb") as f:
        subprocess.run(["docker", "cp", "-", f"{ctr.id}:/tmp"], stdin=f, env=cli_env,
                       check=True, timeout=300)
    st = os.stat(own_daemon.data_root / "containers" / ctr.id / "upper" / "tmp" / "sparse")
    print(f"{archive.stat().st_size // 1024} KB sparse tar via docker cp: apparent "
          f"{st.st_size >> 30} GiB, allocated {st.st_blocks * 512 // 1024} KiB")
    assert st.st_size == 10 << 30
    assert st.st_blocks * 512 < 1 << 20
    with open(own_daemon.data_root / "containers" / ctr.id / "upper" / "tmp" / "sparse",
              "rb") as f:
        f.seek(1 << 20)
        assert f.read(18) == b"data in the middle"
    ctr.remove()


def test_import_bomb_keeps_memory_bounded(own_daemon: Daemon) -> None:
    """Import goes through the same streaming decompression (bounded pieces)."""
    bomb = gzip_bomb()
    client: docker.DockerClient = own_daemon.client()

    def imp() -> None:
        client.api.import_image_from_data(bomb, repository="bomb", tag="latest")

    imp_s, imp_mib = _measure(own_daemon, imp)
    print(f"gzip bomb to import: {imp_s:.1f} s +{imp_mib} MiB peak")
    assert imp_mib < 64
    client.images.remove("bomb:latest")
