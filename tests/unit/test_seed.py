"""The busybox image stowd seeds itself with, as a layer other engines extract alike."""

import io
import stat
import tarfile

import pytest

from stowd.engine.seed import busybox_binary, busybox_rootfs_tar


def test_applet_links_carry_the_binarys_mode() -> None:
    """Docker's extraction applies a hard link's own header, so a link left at tarfile's
    default 0644 gave `sh` no exec bit in an image saved from stowd and loaded by dockerd."""
    binary = busybox_binary()
    if binary is None:
        pytest.skip("busybox-static is not installed")  # `make test` installs it
    out = io.BytesIO()
    busybox_rootfs_tar(binary, out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        members = {m.name: m for m in tar.getmembers()}
    busybox = members["bin/busybox"]
    assert busybox.mode & stat.S_IXUSR
    links = [m for m in members.values() if m.islnk()]
    assert len(links) > 100 and members["bin/sh"].islnk()
    for link in links:
        assert (link.mode, link.uid, link.gid, link.mtime) == (
            busybox.mode, 0, 0, busybox.mtime), link.name
