"""Volumes: Docker's `local` driver, and each container's mounts on the host.

A volume is a row in SQLite (`volumes`) and a directory `<data-root>/volumes/<name>/_data`.
Volumes with driver options (`type`, `device`, `o`, as mount(8) takes them: a tmpfs, a bind
of a host directory, an NFS export) are mounted on `_data` when the first container using them
starts and unmounted when the last one stops, as dockerd's local driver does.

Containers keep their resolved mounts (`mountspec.MountPoint` records) from create on. At
start (`mount_for`, in the worker thread that has just mounted the rootfs) stowd mounts
volumes that need it, creates missing `-v` host directories and copies the image's content
at a volume's path into the volume when it is empty (once, unless NoCopy), preserving owners
and modes, as dockerd does. A volume is in use while any container (running or not) refers to
it; `docker rm -v` removes a container's anonymous volumes, never named ones.

Lock order: the engine's per-container lock, then `_guard` (a threading lock: mount refcounts
change in worker threads). `_lock` (asyncio) serializes creating and removing volumes.
"""

import asyncio
import contextlib
import logging
import os
import re
import secrets
import stat
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stowd.engine import mountspec
from stowd.engine.core.container import Container
from stowd.engine.core.core import Core
from stowd.engine.core.layout import remove_tree, sweep_trash
from stowd.engine.dirsize import dir_size
from stowd.engine.errors import Conflict, EngineError, InvalidParameter, NotFound, SystemError_
from stowd.engine.labels import labels_match
from stowd.engine.mountspec import ANONYMOUS_LABEL, BIND, LOCAL_DRIVER, TMPFS, VOLUME
from stowd.engine.runtime import mounts

log = logging.getLogger("stowd.volumes")

LIST_FILTERS = {"dangling", "driver", "label", "label!", "name"}
PRUNE_FILTERS = {"label", "label!", "all"}


@dataclass
class Volume:
    name: str
    driver: str
    created_at: str  # RFC 3339, seconds, as dockerd shows it
    labels: dict[str, str] | None = None
    options: dict[str, str] | None = None

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in (self.labels or {})

    @property
    def needs_mount(self) -> bool:
        opts = self.options or {}
        return bool(opts.get("type") or opts.get("device"))

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Volume":
        return cls(**record)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _truthy(value: str, key: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise InvalidParameter(f"invalid filter '{key}={value}'")


def _name_match(pattern: str, name: str) -> bool:
    """Docker's filter Match: equal, or a regular expression found in the name."""
    if pattern == name:
        return True
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return False


def select(volumes: list[Volume], filters: dict[str, list[str]],
           in_use: set[str]) -> list[Volume]:
    """`GET /volumes` filters: dangling, driver (exact), label, label!, name (pattern)."""
    dangling = None
    if filters.get("dangling"):
        dangling = _truthy(filters["dangling"][-1], "dangling")
    out = []
    for v in volumes:
        if "driver" in filters and v.driver not in filters["driver"]:
            continue
        if "name" in filters and not any(_name_match(p, v.name) for p in filters["name"]):
            continue
        if not labels_match(v.labels or {}, filters.get("label", []),
                             filters.get("label!", [])):
            continue
        if dangling is not None and (v.name not in in_use) != dangling:
            continue
        out.append(v)
    return out


def prune_all(filters: dict[str, list[str]], version: tuple[int, int]) -> bool:
    """Whether prune considers named volumes too: always before API 1.42, else `all=true`."""
    values = filters.get("all", [])
    if values and version < (1, 42):
        raise InvalidParameter("invalid filter 'all'")
    if len(values) > 1:
        raise InvalidParameter(f"invalid filter 'all={values}': only one value is expected")
    if version < (1, 42):
        return True
    return bool(values) and _truthy(values[0], "all")


def resolve_in_root(root: Path, path: str) -> Path | None:
    """`path` inside the tree at `root`, symlinks followed as if `root` were `/`; None when
    it does not exist."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 40:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def copy_up(rootfs: Path, destination: str, volume_dir: Path) -> bool:
    """Blocking: copy the image's directory at `destination` into an empty volume (with
    owners, modes, times, links and xattrs: `cp -a`), then give the volume's top directory
    the source's owner and mode. False when there was nothing to do."""
    source = resolve_in_root(rootfs, destination)
    if source is None or not source.is_dir():
        return False
    with os.scandir(volume_dir) as it:
        if next(it, None) is not None:
            return False
    with os.scandir(source) as it:
        has_content = next(it, None) is not None
    if has_content:
        proc = subprocess.run(["cp", "-a", "--", f"{source}/.", f"{volume_dir}/"],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemError_(f"copying the image's {destination} into the volume failed: "
                               f"{proc.stderr.strip()}")
    st = os.stat(source)
    os.chown(volume_dir, st.st_uid, st.st_gid)
    os.chmod(volume_dir, stat.S_IMODE(st.st_mode))
    return True


class VolumeManager:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.root = core.settings.data_root / "volumes"
        self._volumes: dict[str, Volume] = {}
        self._lock = asyncio.Lock()
        self._guard = threading.Lock()
        self._mounted: dict[str, set[str]] = {}  # volume needing a mount → containers using it
        self._active: dict[str, list[str]] = {}  # container → volumes mounted for its run
        self._copying: dict[str, threading.Lock] = {}  # one copy-up at a time per volume
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    # start-up ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Load the volumes; note what running containers hold (before their recovery)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await asyncio.to_thread(self._open_blocking)

    def _open_blocking(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o701)
        sweep_trash(self.root)
        for record in self.core.db.opened.all_volumes():
            vol = Volume.from_record(record)
            self._volumes[vol.name] = vol
        for c in self.core.handles.containers():
            if c.state.live:
                held = [m.name for m in mountspec.mounts_of(c.mounts) if m.type == VOLUME]
                self._active[c.id] = held
                for name in held:
                    held_vol = self._volumes.get(name)
                    if held_vol is not None and held_vol.needs_mount:
                        self._mounted.setdefault(name, set()).add(c.id)
        for vol in self._volumes.values():  # mounted by a run that is over
            path = str(self.mountpoint(vol.name))
            if vol.needs_mount and vol.name not in self._mounted and mounts.is_mounted(path):
                with contextlib.suppress(OSError):
                    mounts.unmount(path)

    # lookup -----------------------------------------------------------------------------

    def mountpoint(self, name: str) -> Path:
        return self.root / name / "_data"

    def get(self, name: str) -> Volume:
        vol = self._volumes.get(name)
        if vol is None:
            raise NotFound(f"get {name}: no such volume")
        return vol

    def all(self) -> list[Volume]:
        return sorted(self._volumes.values(), key=lambda v: v.name)

    def users(self, name: str) -> list[Container]:
        """Containers (in any state) that refer to the volume."""
        return [c for c in self.core.handles.containers()
                if any(m.get("type") == VOLUME and m.get("name") == name for m in c.mounts)]

    def in_use(self) -> set[str]:
        return {m["name"] for c in self.core.handles.containers() for m in c.mounts
                if m.get("type") == VOLUME and m.get("name")}

    def find(self, filters: dict[str, list[str]]) -> list[Volume]:
        return select(self.all(), filters, self.in_use())

    # create, remove, prune ----------------------------------------------------------------

    async def create(self, name: str | None, driver: str | None,
                     options: dict[str, str] | None, labels: dict[str, str] | None) -> Volume:
        """`docker volume create`: an existing name answers with that volume."""
        labels = dict(labels or {})
        if not name:
            name = secrets.token_hex(32)
            labels[ANONYMOUS_LABEL] = ""
        driver = mountspec.check_driver(name, driver)
        mountspec.validate_volume_name(name)
        if name in self._volumes:
            return self._volumes[name]
        options = mountspec.validate_volume_options(name, options)
        return await self._ensure(name, driver, options, labels)

    async def _ensure(self, name: str, driver: str, options: dict[str, str],
                      labels: dict[str, str]) -> Volume:
        async with self._lock:
            existing = self._volumes.get(name)
            if existing is not None:
                return existing
            vol = Volume(name=name, driver=driver, created_at=_now(), labels=labels or None,
                         options=options or None)
            await asyncio.to_thread(self._create_blocking, vol)
            self._volumes[name] = vol
        self._emit("create", name, {"driver": driver})
        return vol

    async def remove(self, name: str, force: bool = False) -> None:
        """`docker volume rm`: 409 while a container refers to it (force or not); force only
        makes a missing volume a success."""
        vol = self._volumes.get(name)
        if vol is None:
            if force:
                return
            raise NotFound(f"get {name}: no such volume")
        users = self.users(name)
        if users:
            ids = " ".join(c.id for c in users)
            raise Conflict(f"remove {name}: volume is in use - [{ids}]")
        async with self._lock:
            if name not in self._volumes:
                return
            await asyncio.to_thread(self._remove_blocking, name)
            del self._volumes[name]
        self._emit("destroy", name, {"driver": vol.driver})

    def _create_blocking(self, vol: Volume) -> None:
        self.mountpoint(vol.name).mkdir(mode=0o755, parents=True, exist_ok=True)
        self.core.db.call(self.core.db.opened.put_volume, vol.name, time.time(),
                          vol.to_record())

    def _remove_blocking(self, name: str) -> None:
        """The directory goes first: a volume that cannot be unmounted stays listed."""
        self._remove_dirs(name)
        self.core.db.call(self.core.db.opened.delete_volume, name)

    def _remove_dirs(self, name: str) -> None:
        data = str(self.mountpoint(name))
        with self._guard:
            self._mounted.pop(name, None)
            self._copying.pop(name, None)
            if mounts.is_mounted(data):
                mounts.unmount(data)
        if mounts.is_mounted(data):  # never delete through a mount (a bind of host files)
            raise SystemError_(f"remove {name}: {data} is still mounted")
        remove_tree(self.root / name)  # a volume can be large: deleted in the background

    async def prune(self, filters: dict[str, list[str]],
                    version: tuple[int, int]) -> tuple[list[str], int]:
        """Remove unused local volumes without mount options; since API 1.42 only anonymous
        ones unless `all=true`."""
        every = prune_all(filters, version)
        in_use = self.in_use()
        deleted: list[str] = []
        reclaimed = 0
        for vol in self.all():
            if (vol.name in in_use or vol.driver != LOCAL_DRIVER or vol.options
                    or not (every or vol.anonymous)
                    or not labels_match(vol.labels or {}, filters.get("label", []),
                                         filters.get("label!", []))):
                continue
            size = await asyncio.to_thread(dir_size, self.mountpoint(vol.name))
            try:
                await self.remove(vol.name)
            except EngineError as exc:
                log.warning("prune: cannot remove volume %s: %s", vol.name, exc.message)
                continue
            deleted.append(vol.name)
            reclaimed += size
        self._emit("prune", "", {"reclaimed": str(reclaimed)})
        return deleted, reclaimed

    # containers -------------------------------------------------------------------------

    async def prepare(self, config: dict[str, Any],
                      host_config: dict[str, Any]) -> list[dict[str, Any]]:
        """A new container's mounts (see mountspec.plan_mounts), its volumes created, named
        ones when missing and anonymous ones always. Raises before creating anything when
        the request is invalid."""
        inherited: list[mountspec.MountPoint] = []
        volumes_from = host_config.get("VolumesFrom") or []
        if not isinstance(volumes_from, list):
            raise InvalidParameter("VolumesFrom must be a list of strings")
        for entry in volumes_from:
            ref, mode = mountspec.parse_volumes_from(entry)
            other = self.core.handles.get(ref)
            inherited += mountspec.inherit(mountspec.mounts_of(other.mounts), mode)
        plan = mountspec.plan_mounts(config.get("Volumes"), host_config.get("Binds"),
                                     host_config.get("Mounts"), host_config.get("Tmpfs"),
                                     inherited)
        must_exist = [m.source for m in plan if m.type == BIND and not m.create_source]
        missing = await asyncio.to_thread(lambda: [p for p in must_exist
                                                   if not os.path.exists(p)])
        if missing:
            raise InvalidParameter('invalid mount config for type "bind": bind source path '
                                   f"does not exist: {missing[0]}")
        default_driver = host_config.get("VolumeDriver") or LOCAL_DRIVER  # --volume-driver
        for m in plan:
            if m.type == VOLUME and m.name not in self._volumes:
                given = m.driver if m.driver != LOCAL_DRIVER else default_driver
                mountspec.check_driver(m.name, given)
                mountspec.validate_volume_options(m.name, m.volume_options)
        for m in plan:
            if m.type != VOLUME:
                continue
            labels = dict(m.volume_labels)
            if not m.name:
                m.name = secrets.token_hex(32)
                labels[ANONYMOUS_LABEL] = ""
            vol = await self._ensure(m.name, LOCAL_DRIVER, m.volume_options, labels)
            m.driver = vol.driver
            m.source = str(self.mountpoint(m.name))
        return [m.to_record() for m in plan]

    async def container_removed(self, c: Container, remove_anonymous: bool) -> None:
        """After a container is gone: `rm -v` (and AutoRemove) removes its anonymous volumes
        that no other container uses."""
        if not (remove_anonymous or c.host_config.get("AutoRemove")):
            return
        for m in mountspec.mounts_of(c.mounts):
            if m.type == VOLUME and m.anonymous and m.name in self._volumes:
                try:
                    await self.remove(m.name)
                except EngineError as exc:
                    log.info("keeping volume %s: %s", m.name, exc.message)

    def mount_for(self, c: Container, rootfs: Path) -> None:
        """Blocking, at start with the rootfs mounted: mount volumes that need it, create
        missing `-v` host directories, copy image content into empty volumes."""
        plan = mountspec.mounts_of(c.mounts)
        held: list[str] = []
        try:
            for m in plan:
                if m.type == BIND:
                    if not os.path.exists(m.source):
                        if not m.create_source:
                            raise InvalidParameter(
                                'invalid mount config for type "bind": bind source path does '
                                f"not exist: {m.source}")
                        os.makedirs(m.source, 0o755, exist_ok=True)
                    continue
                if m.type != VOLUME:
                    continue
                vol = self.get(m.name)
                self._mount_volume(vol, c.id)
                held.append(m.name)
                data = self.mountpoint(m.name)
                if m.subpath and not (data / m.subpath).exists():
                    raise InvalidParameter(f"cannot access path {data / m.subpath}: no such "
                                           "file or directory")
                if m.copy_data:
                    with self._guard:
                        copying = self._copying.setdefault(m.name, threading.Lock())
                    with copying:  # two first starts at once: one copies, one finds content
                        copy_up(rootfs, m.destination, data)
                    m.copy_data = False
        except BaseException:
            with self._guard:
                self._active[c.id] = held
            self.unmount_for(c, quiet=True)
            raise
        with self._guard:
            self._active[c.id] = held
        c.mounts = [m.to_record() for m in plan]
        for m in plan:
            if m.type == VOLUME:
                self._emit("mount", m.name, {
                    "container": c.id, "destination": m.destination, "driver": m.driver,
                    "propagation": m.propagation, "read/write": str(m.rw).lower()})

    def _mount_volume(self, vol: Volume, cid: str) -> None:
        if not vol.needs_mount:
            return
        data = str(self.mountpoint(vol.name))
        with self._guard:
            users = self._mounted.setdefault(vol.name, set())
            if not users and not mounts.is_mounted(data):
                opts = vol.options or {}
                cmd = ["mount", "-t", opts.get("type") or "none"]
                if opts.get("o"):
                    cmd += ["-o", opts["o"]]
                cmd += [opts.get("device") or "none", data]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    if not users:
                        del self._mounted[vol.name]
                    raise SystemError_(f"error while mounting volume '{data}': failed to mount "
                                       f"local volume: {proc.stderr.strip()}")
            users.add(cid)

    def unmount_for(self, c: Container, quiet: bool = False) -> None:
        """Blocking, when a run ends (or a start fails): release what mount_for took."""
        with self._guard:
            held = self._active.pop(c.id, None)
            if held is None:
                return
            for name in dict.fromkeys(held):
                users = self._mounted.get(name)
                if users is None or c.id not in users:
                    continue
                users.discard(c.id)
                if not users:
                    del self._mounted[name]
                    try:
                        mounts.unmount(str(self.mountpoint(name)))
                    except OSError as exc:
                        log.warning("unmounting volume %s failed: %s", name, exc)
        if not quiet:
            for name in held:
                vol = self._volumes.get(name)
                self._emit("unmount", name, {"container": c.id,
                                             "driver": vol.driver if vol else LOCAL_DRIVER})

    def spec_mounts(self, c: Container) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(binds, tmpfs) for the OCI spec: volumes and binds as bind mounts, tmpfs mounts
        with dockerd's default flags."""
        binds: list[dict[str, Any]] = []
        tmpfs: list[dict[str, Any]] = []
        plan = mountspec.mounts_of(c.mounts)
        if not plan:  # a record from before volumes: its host binds
            for spec in c.host_config.get("Binds") or []:
                parts = spec.split(":")
                if len(parts) > 1 and parts[0].startswith("/"):
                    opts = parts[2].split(",") if len(parts) > 2 else []
                    binds.append({"source": parts[0], "destination": parts[1],
                                  "readonly": "ro" in opts})
        for m in plan:
            if m.type == TMPFS:
                tmpfs.append({"destination": m.destination,
                              "options": mountspec.tmpfs_mount_options(m.tmpfs_options)})
                continue
            source = m.source
            if m.type == VOLUME:
                source = str(self.mountpoint(m.name) / m.subpath if m.subpath
                             else self.mountpoint(m.name))
            binds.append({"source": source, "destination": m.destination, "readonly": not m.rw,
                          "propagation": m.propagation or mountspec.DEFAULT_PROPAGATION})
        with contextlib.suppress(InvalidParameter):
            for m in mountspec.parse_tmpfs(c.host_config.get("Tmpfs")):
                tmpfs.append({"destination": m.destination,
                              "options": mountspec.tmpfs_mount_options(m.tmpfs_options)})
        return binds, tmpfs

    # events -----------------------------------------------------------------------------

    def _emit(self, action: str, name: str, attrs: dict[str, str]) -> None:
        """Publish a volume event from the loop or from a worker thread."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            self.core.events.publish("volume", action, name, attrs)
        else:
            loop.call_soon_threadsafe(self.core.events.publish, "volume", action, name, attrs)
