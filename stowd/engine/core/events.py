"""The event bus behind /events: a bounded history plus live subscribers."""

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from stowd.engine.labels import labels_match

HISTORY = 1024
# The keys GET /events filters by (moby's daemon/events/filter.go).
FILTERS = frozenset({"container", "event", "image", "label", "type", "volume", "network",
                     "daemon", "plugin", "node", "service", "secret", "config", "scope"})
# Objects matched by their ID or `name` attribute, a prefix of either being enough.
_BY_NAME = ("container", "volume", "network", "daemon", "plugin", "node", "service", "secret",
            "config")
# Actions whose filter matches by prefix (`exec_start: sh -c …`), as dockerd's (moby #25798).
_PREFIX_ACTIONS = ("health_status", "exec_create", "exec_start")


@dataclass(frozen=True)
class Event:
    type: str  # container, image, network, volume, daemon
    action: str
    actor_id: str
    attributes: dict[str, str] = field(default_factory=dict)
    time_nano: int = 0

    def to_docker(self, legacy: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Type": self.type,
            "Action": self.action,
            "Actor": {"ID": self.actor_id, "Attributes": dict(self.attributes)},
            "scope": "local",
            "time": self.time_nano // 1_000_000_000,
            "timeNano": self.time_nano,
        }
        if legacy and self.type in ("container", "image"):
            out["status"] = self.action
            out["id"] = self.actor_id
            if "image" in self.attributes and self.type == "container":
                out["from"] = self.attributes["image"]
        return out


class EventBus:
    def __init__(self) -> None:
        self.history: deque[Event] = deque(maxlen=HISTORY)
        self._subscribers: set[asyncio.Queue[Event]] = set()

    def publish(self, type_: str, action: str, actor_id: str,
                attributes: dict[str, str] | None = None) -> Event:
        event = Event(type_, action, actor_id, attributes or {}, time.time_ns())
        self.history.append(event)
        for queue in self._subscribers:
            queue.put_nowait(event)
        return event

    @property
    def listeners(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(queue)


@dataclass(frozen=True)
class EventFilter:
    """Docker's `filters` of GET /events: an event is shown when every key given matches.
    Values of one key are alternatives. As dockerd: `type` and `image` match exactly (an
    image also by its name without tag or digest), objects by a prefix of their ID or
    name (a `container` filter also keeps out other objects' events through that), `event`
    exactly except the actions dockerd matches by prefix."""

    filters: dict[str, list[str]]

    def matches(self, event: Event) -> bool:
        f = self.filters
        attrs = event.attributes
        if "type" in f and event.type not in f["type"]:
            return False
        if "event" in f:
            by_prefix = any(v in _PREFIX_ACTIONS for v in f["event"])
            if not any(event.action == v or (by_prefix and event.action.startswith(v))
                       for v in f["event"]):
                return False
        for key in _BY_NAME:
            if key in f and not (_prefixed(f[key], event.actor_id)
                                 or _prefixed(f[key], attrs.get("name", ""))):
                return False
        if "image" in f:
            name = attrs.get("name" if event.type == "image" else "image", "")
            candidates = {event.actor_id, name, _untagged(event.actor_id), _untagged(name)}
            if not candidates & set(f["image"]):
                return False
        if "scope" in f and "local" not in f["scope"]:
            return False
        return not ("label" in f and not labels_match(attrs, f["label"]))


def _prefixed(values: list[str], text: str) -> bool:
    return bool(text) and any(text.startswith(v) for v in values)


def _untagged(image: str) -> str:
    """An image reference without its digest or tag (`host:5000/a/b:1` → `host:5000/a/b`)."""
    image = image.partition("@")[0]
    slash = image.rfind("/")
    colon = image.rfind(":")
    return image[:colon] if colon > slash else image
