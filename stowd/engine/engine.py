"""The wiring: builds the core and the engine's parts, opens them, recovers the containers
found on disk, and closes. Nothing imports this module back; the API sees the parts
through the Protocols of api/backend.py."""

import asyncio
import logging
from pathlib import Path

from stowd.config import Settings
from stowd.engine import hostinfo
from stowd.engine.build.host import Builder
from stowd.engine.containers import logrotate, monitor, restarting
from stowd.engine.containers.context import Ctx
from stowd.engine.containers.service import ContainerService
from stowd.engine.core.container import Container
from stowd.engine.core.core import Core
from stowd.engine.core.events import EventBus
from stowd.engine.distribution.service import Distribution
from stowd.engine.distribution.transport import RegistrySettings
from stowd.engine.healthmon import HealthMonitor
from stowd.engine.images.service import ImageService
from stowd.engine.images.store import ImageStore
from stowd.engine.network.manager import NetworkManager
from stowd.engine.private import make_private
from stowd.engine.runtime.oci import OciRuntime
from stowd.engine.store import Store
from stowd.engine.volumes import VolumeManager

log = logging.getLogger("stowd.engine")


class Engine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.core = Core(settings)
        self.events: EventBus = self.core.events
        self.network = NetworkManager(self.core)
        self.volumes = VolumeManager(self.core)
        self._opened = False
        # Set by open(): they need the database, or look on the disk.
        self.runtime: OciRuntime
        self.host_security: hostinfo.SecurityFacts
        self.images: ImageService
        self.containers: ContainerService
        self.distribution: Distribution
        self.builder: Builder
        self.health: HealthMonitor

    @property
    def data_root(self) -> Path:
        return self.settings.data_root

    async def open(self) -> None:
        image_store, found = await asyncio.to_thread(self._open_blocking)
        self._opened = True
        self.images = ImageService(self.core, image_store)
        ctx = Ctx(self.core, image_store, self.runtime, self.network, self.volumes,
                  self.host_security)
        self.containers = ContainerService(ctx)
        self.health = ctx.health
        self.builder = Builder(self.containers, self.images, self.distribution)
        for c in found:
            self.core.handles.add(c)
        await self.volumes.open()  # volumes: before recovery, which may release mounts
        await self.network.open()  # networking: networks, address leases of running containers
        for c in found:
            await monitor.recover(ctx, c)
        await self.network.sweep()  # networking: undo what no running container owns
        restarting.revive_at_daemon_start(ctx, [h.container for h in self.core.handles])
        self.core.tasks.spawn(logrotate.rotate_logs_forever(ctx))

    def _open_blocking(self) -> tuple[ImageStore, list[Container]]:
        s = self.settings
        for d in (s.data_root, s.exec_root, self.core.layout.containers_root):
            d.mkdir(parents=True, exist_ok=True)
        self.runtime = OciRuntime(s.runtime, s.exec_root)
        self.host_security = hostinfo.security_facts(s.init_path)
        store = Store(s.data_root / "stowd.db")
        make_private(s.data_root, s.exec_root)  # new roots, and old ones migrated
        self.core.db.open(store)
        self.core.layout.sweep_trash()
        images = ImageStore(store, s.data_root, self.core.db.call)
        self.distribution = Distribution(
            images, RegistrySettings(s.insecure_registries, s.registry_mirrors,
                                     s.registry_certs_dir),
            s.data_root, self.core.events.publish)
        found = [Container.from_record(record) for record in store.all_containers()]
        known = {c.id for c in found}
        if stale := self.runtime.remove_stale(known):
            log.info("removed the exec-root files of %d unknown containers", len(stale))
        # A crash inside create leaves a directory the database never knew.
        for cid in self.core.layout.unknown(known):
            log.info("removing the directory of unknown container %s", cid[:12])
            self.core.layout.discard(cid)
        return images, found

    async def close(self) -> None:
        """Stop watching; containers keep running (conmon is their parent, not stowd)."""
        self.core.handles.close()
        self.core.tasks.cancel_all()
        if self._opened:
            await self.health.close()
            await self.distribution.close()
            await self.network.close()
        await self.core.db.close()
