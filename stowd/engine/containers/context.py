"""What the container verbs work with: the core and the parts a container uses."""

from dataclasses import dataclass, field

from stowd.engine import hostinfo
from stowd.engine.core.core import Core
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
