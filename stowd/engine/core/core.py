"""The core the engine's parts share: settings, handles, the database writer, tasks,
events and the on-disk layout. Built once by the wiring module (engine.py)."""

from stowd.config import Settings
from stowd.engine.core.container import Container
from stowd.engine.core.db import Database
from stowd.engine.core.events import EventBus
from stowd.engine.core.handles import Handles
from stowd.engine.core.layout import ContainerDir, Layout
from stowd.engine.core.tasks import Tasks


class Core:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.layout = Layout(settings.data_root)
        self.handles = Handles()
        self.db = Database()
        self.tasks = Tasks()
        self.events = EventBus()

    def dir(self, c: Container | str) -> ContainerDir:
        return self.layout.of(c if isinstance(c, str) else c.id)

    def event(self, c: Container, action: str, **extra: str) -> None:
        """A container event, with its labels, image and name as attributes (as Docker)."""
        attrs = dict(c.config.get("Labels") or {})
        attrs["image"] = c.config.get("Image") or c.image_id
        attrs["name"] = c.name
        attrs.update(extra)
        self.events.publish("container", action, c.id, attrs)
