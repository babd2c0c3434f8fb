"""Files private to root by default (issue 12): what stowd keeps holds every container's
environment, logs and filesystem, so no other local user may read any of it.

As dockerd (`/var/lib/docker` is 0710): the data-root and exec-root are traverse-only for
root's group and closed to others, and below them the database, bundles, logs and layer
store are root's alone. Containers are not affected: runc sets a container up as root, and
its processes then reach their files through their own mounts, never through these paths;
what they see keeps its own modes (a layer's `/`, the bind-mounted /etc files, `_data`).

`make_private` also migrates roots written by an older stowd; it runs at every start
(blocking: a walk over the containers' directories, not their contents).
"""

import contextlib
import os
from pathlib import Path

from stowd.engine.core.layout import ContainerDir, Layout
from stowd.engine.logs import rotated_paths

ROOT_MODE = 0o710  # data-root, exec-root
DIR_MODE = 0o700  # the stores below the data-root, container bundles
CONTAINER_DIR_MODE = 0o710
FILE_MODE = 0o600  # database, logs, bundle configs
DB_FILES = ("stowd.db", "stowd.db-wal", "stowd.db-shm")


def _chmod(path: Path, mode: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        if not path.is_symlink():
            os.chmod(path, mode)


def make_private(data_root: Path, exec_root: Path) -> None:
    """Set the modes above on what exists (new roots and old ones alike)."""
    for root in (data_root, exec_root):
        root.mkdir(parents=True, exist_ok=True)
        _chmod(root, ROOT_MODE)
    for name in DB_FILES:
        _chmod(data_root / name, FILE_MODE)
    for entry in data_root.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            _chmod(entry, DIR_MODE)
    layout = Layout(data_root)
    if layout.containers_root.is_dir():
        for ctr in layout.containers_root.iterdir():
            if not ctr.name.startswith("."):  # trash: being deleted
                private_container_dir(layout.of(ctr.name))


def private_container_dir(d: ContainerDir) -> None:
    """A container's directory, bundle and logs (blocking)."""
    _chmod(d.base, CONTAINER_DIR_MODE)
    _chmod(d.bundle, DIR_MODE)
    _chmod(d.config, FILE_MODE)
    for log in rotated_paths(str(d.log)):
        _chmod(Path(log), FILE_MODE)
