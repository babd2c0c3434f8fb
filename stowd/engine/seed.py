"""A busybox image made from the host's busybox-static, for offline first runs."""

import asyncio
import io
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from typing import BinaryIO

from stowd.engine.images.service import ImageService

log = logging.getLogger("stowd.seed")

SOURCE_LABEL = "org.stowd.image.source"
SOURCE_VALUE = "host busybox-static"


def busybox_binary() -> str | None:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(candidate):
            return candidate
    return shutil.which("busybox")


def busybox_rootfs_tar(binary: str, out: io.BufferedIOBase) -> None:
    """A minimal root filesystem: /bin/busybox, a link per applet, /etc/passwd and group."""
    applets = subprocess.run([binary, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for d in ("bin", "etc", "tmp", "root", "home", "var", "usr", "usr/bin"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        busybox = tar.gettarinfo(binary, arcname="bin/busybox")
        with open(binary, "rb") as f:
            tar.addfile(busybox, f)
        for applet in applets:
            if applet == "busybox":
                continue
            # A hard link's header carries its file's mode, owner and time, as GNU tar
            # writes it: Docker's extraction applies the link's own header, so a link left
            # at tarfile's 0644 made `sh` not executable in an image saved to dockerd.
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.LNKTYPE
            info.linkname = "bin/busybox"
            info.mode, info.mtime = busybox.mode, busybox.mtime
            info.uid, info.gid, info.uname, info.gname = 0, 0, "root", "root"
            tar.addfile(info)
        files = {
            "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:"
                          "/bin/false\n",
            "etc/group": "root:x:0:\nnogroup:x:65534:\n",
        }
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


def _rootfs_tar_file(binary: str) -> BinaryIO:
    tmp = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the caller
    busybox_rootfs_tar(binary, tmp)
    tmp.seek(0)
    return tmp


async def seed_busybox_image(images: ImageService) -> None:
    if await asyncio.to_thread(images.find, "busybox:latest") is not None:
        return
    binary = await asyncio.to_thread(busybox_binary)
    if binary is None:
        log.warning("no busybox image and no busybox binary: apt-get install busybox-static")
        return
    tmp = await asyncio.to_thread(_rootfs_tar_file, binary)
    try:
        image = await images.import_image(
            tmp, "busybox", "latest",
            [f'LABEL {SOURCE_LABEL}="{SOURCE_VALUE}"', 'CMD ["sh"]'],
            f"busybox from the host's {binary}")
    finally:
        await asyncio.to_thread(tmp.close)
    log.info("imported busybox:latest (%s) from %s", image.id[:19], binary)
