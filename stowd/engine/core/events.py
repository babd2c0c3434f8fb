"""The event bus behind /events: a bounded history plus live subscribers."""

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

HISTORY = 1024


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
