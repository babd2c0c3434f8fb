"""The one place that knows where a container's files live under the data root."""

import os
import secrets
import shutil
import threading
from pathlib import Path

from stowd.engine.runtime import mounts


class ContainerDir:
    """The paths of one container's directory (`<data-root>/containers/<id>`)."""

    __slots__ = ("base",)

    def __init__(self, base: Path) -> None:
        self.base = base

    @property
    def rootfs(self) -> Path:
        return self.base / "rootfs"

    @property
    def upper(self) -> Path:
        return self.base / "upper"

    @property
    def work(self) -> Path:
        return self.base / "work"

    @property
    def init(self) -> Path:
        """The init layer: the mount points and /etc files every container has."""
        return self.base / "init"

    @property
    def bundle(self) -> Path:
        return self.base / "bundle"

    @property
    def config(self) -> Path:
        """The OCI spec runc reads (`bundle/config.json`)."""
        return self.base / "bundle" / "config.json"

    @property
    def ctl(self) -> Path:
        """conmon's control FIFO (resize, reopen the log)."""
        return self.base / "bundle" / "ctl"

    @property
    def shm(self) -> Path:
        """The /dev/shm of a container with IpcMode shareable (mounted on the host)."""
        return self.base / "shm"

    @property
    def log(self) -> Path:
        """conmon's k8s-file log; rotated ones are `ctr.log.1`, … (logs.rotated_paths)."""
        return self.base / "ctr.log"

    def etc_file(self, name: str) -> Path:
        """hosts, hostname or resolv.conf, bind-mounted over /etc/<name>."""
        return self.base / name

    SUBDIRS = ("upper", "work", "rootfs", "init", "bundle")
    ETC_FILES = ("hosts", "hostname", "resolv.conf")


class Layout:
    def __init__(self, data_root: Path) -> None:
        self.containers_root = data_root / "containers"

    def of(self, cid: str) -> ContainerDir:
        return ContainerDir(self.containers_root / cid)

    def sweep_trash(self) -> None:
        """Blocking: finish deleting what a crash left renamed away."""
        sweep_trash(self.containers_root)

    def unknown(self, known: set[str]) -> list[str]:
        """Blocking: container directories with no record and no rootfs mounted (a crash
        inside create)."""
        out = []
        for base in self.containers_root.iterdir():
            if (not base.name.startswith(".") and base.name not in known
                    and not mounts.is_mounted(str(self.of(base.name).rootfs))):
                out.append(base.name)
        return out

    def discard(self, cid: str) -> None:
        """Blocking: take the container's directory away (see remove_tree)."""
        remove_tree(self.of(cid).base)


def remove_tree(path: Path) -> None:
    """Blocking: rename now (atomic: the name is free at once), delete the tree in the
    background (rmtree takes milliseconds, or much longer for a volume, and nobody waits
    for it). What a crash leaves is swept by sweep_trash at the next start."""
    trash = path.parent / f".trash-{path.name}-{secrets.token_hex(4)}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    threading.Thread(target=shutil.rmtree, args=(trash, True), daemon=True).start()


def sweep_trash(root: Path) -> None:
    """Blocking: delete what remove_tree renamed away under root and a crash left."""
    for trash in root.glob(".trash-*"):
        shutil.rmtree(trash, ignore_errors=True)
