"""What the container verbs work with: the core and the parts a container uses."""

from dataclasses import dataclass, field
from pathlib import Path

from stowd.engine import hostinfo
from stowd.engine.core.container import Container
from stowd.engine.core.core import Core
from stowd.engine.healthmon import HealthMonitor
from stowd.engine.images.store import ImageStore
from stowd.engine.network.manager import NetworkManager
from stowd.engine.runtime.oci import OciRuntime
from stowd.engine.stats import StatsCollector
from stowd.engine.volumes import VolumeManager


@dataclass
class Ctx:
    core: Core
    images: ImageStore
    runtime: OciRuntime
    network: NetworkManager
    volumes: VolumeManager
    host_security: hostinfo.SecurityFacts
    stats: StatsCollector = field(default_factory=StatsCollector)
    health: HealthMonitor = field(init=False)

    def __post_init__(self) -> None:
        # Healthchecks: the probes of running containers (healthmon.py)
        self.health = HealthMonitor(
            self.runtime.path, self.runtime.root, self.core.settings.exec_root / "health",
            spec_of=self._spec, event=self._health_event, persist=self.core.db.persist)

    def _spec(self, c: Container) -> Path:
        return self.core.dir(c).config

    def _health_event(self, c: Container, action: str, attrs: dict[str, str]) -> None:
        self.core.event(c, action, **attrs)
