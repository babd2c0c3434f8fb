"""The container record (what SQLite keeps of it) and its lifecycle states."""

import functools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

NANOS = 1_000_000_000  # in a second


ZERO_TIME = "0001-01-01T00:00:00Z"

# Docker's container states, as `State.Status` and the list's `State` show them.
CREATED = "created"
RUNNING = "running"
PAUSED = "paused"
RESTARTING = "restarting"
REMOVING = "removing"
EXITED = "exited"
DEAD = "dead"
STATUSES = (CREATED, RUNNING, PAUSED, RESTARTING, REMOVING, EXITED, DEAD)


def rfc3339_nano(ts: float | None = None) -> str:
    """Docker's time format: RFC 3339 with nanoseconds, in UTC."""
    ts = time.time() if ts is None else ts
    whole = int(ts)
    nanos = int(round((ts - whole) * 1e9))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    base = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{nanos:09d}Z"


# Cached: every container list shapes each container's Created and StartedAt, and
# parsing them was a third of the list's CPU (bench/README.md, issue 11's before/after).
@functools.lru_cache(maxsize=8192)
def parse_time(text: str) -> float:
    """Seconds since the epoch for a Docker timestamp; 0 for the zero time."""
    return parse_time_nanos(text) / NANOS


def parse_time_nanos(text: str) -> int:
    """Nanoseconds since the epoch for a Docker timestamp, exactly (a float rounds to about
    240 ns today); 0 for the zero time."""
    if not text or text.startswith("0001-01-01"):
        return 0
    main, _, rest = text.partition(".")
    frac = ""
    tz = "Z"
    if rest:
        digits = ""
        for i, ch in enumerate(rest):
            if ch.isdigit():
                digits += ch
            else:
                tz = rest[i:]
                break
        frac = digits
    elif text.endswith("Z"):
        main = text[:-1]
    base = datetime.fromisoformat(main + ("+00:00" if tz == "Z" else tz))
    seconds = int(base.timestamp())
    return seconds * NANOS + (int(frac[:9].ljust(9, "0")) if frac else 0)


@dataclass
class State:
    status: str = CREATED
    pid: int = 0
    conmon_pid: int = 0
    exit_code: int = 0
    error: str = ""
    oom_killed: bool = False
    dead: bool = False
    started_at: str = ZERO_TIME
    finished_at: str = ZERO_TIME
    # Set by a user's stop or kill: restart policies (and unless-stopped at daemon start)
    # leave such a container alone.
    manually_stopped: bool = False
    has_been_started: bool = False
    # Docker's State.Health (Status, FailingStreak, Log) once a probe was set up: health.py
    health: dict[str, Any] | None = None

    @property
    def live(self) -> bool:
        """Its process is up: running or paused (the one "is active" predicate)."""
        return self.status in (RUNNING, PAUSED)

    @property
    def running(self) -> bool:
        """Docker's State.Running: live, or about to be restarted by its policy."""
        return self.status in (RUNNING, PAUSED, RESTARTING)


@dataclass
class Container:
    id: str
    name: str  # without the leading slash
    created: str
    image_id: str
    config: dict[str, Any]  # Docker's Config, defaults from the image merged in
    host_config: dict[str, Any]
    path: str
    args: list[str]
    networking_config: dict[str, Any] = field(default_factory=dict)
    # What the network layer set up at start (namespace, endpoints, ports): network/manager.py
    network: dict[str, Any] = field(default_factory=dict)
    state: State = field(default_factory=State)
    restart_count: int = 0
    platform: str = "linux"
    driver: str = "overlay2"
    # Resolved volumes, binds and tmpfs mounts (mountspec.MountPoint records): volumes.py
    mounts: list[dict[str, Any]] = field(default_factory=list)
    # Legacy links on the default bridge: {"id", "name", "alias"} of each linked container
    links: list[dict[str, str]] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def to_record(self) -> dict[str, Any]:
        """A deep copy as plain data, taken on the event loop at each state change: through
        orjson's dataclass encoder (16 µs for a usual container) rather than
        dataclasses.asdict (220 µs, a copy.deepcopy per field). Keys that are not strings
        become strings, as the JSON the store writes makes them anyway."""
        record: dict[str, Any] = orjson.loads(orjson.dumps(self, option=orjson.OPT_NON_STR_KEYS))
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Container":
        record = dict(record)
        record["state"] = State(**record.get("state", {}))
        return cls(**record)
