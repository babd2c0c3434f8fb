"""Healthchecks: Docker's rules for `Config.Healthcheck` and the `State.Health` state machine.

Pure functions and small records (no I/O), so every rule is unit-tested; the probes
themselves run in `healthmon.py`. The rules are moby's (`daemon/health.go`,
`container/health.go`, the merge in `daemon/commit.go`, the checks in `daemon/container.go`):

- a container's healthcheck is the user's merged field by field with the image's; `Test`
  `["NONE"]`, an unknown type or no `Test` at all means no probe and no `State.Health`;
- probes start one interval after the start (the start interval while the container is
  still starting inside its start period), each the interval after the previous ended;
- a success makes the container healthy; a failure inside the start period while still
  starting does not count; `Retries` counted failures in a row make it unhealthy;
- the log keeps the last five results; output is capped at 4096 bytes, `...` marking a cut;
- a stopped (or paused) container's monitor closes and its status reads `unhealthy`,
  without an event; a start resets it to `starting` (the log is kept).
"""

from dataclasses import dataclass
from typing import Any

from stowd.engine.errors import InvalidParameter

SECOND = 1_000_000_000
MINIMUM_DURATION = 1_000_000  # 1ms, moby's containertypes.MinimumDuration

DEFAULT_INTERVAL = 30 * SECOND
DEFAULT_TIMEOUT = 30 * SECOND
DEFAULT_START_PERIOD = 0
DEFAULT_START_INTERVAL = 5 * SECOND
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096

STARTING = "starting"
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
NO_HEALTHCHECK = "none"
FILTER_VALUES = (STARTING, HEALTHY, UNHEALTHY, NO_HEALTHCHECK)

DURATION_FIELDS = ("Interval", "Timeout", "StartPeriod", "StartInterval")
# Docker's field order in inspect (HealthConfig, every field omitempty).
FIELDS = ("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries")


def _type_error(field: str, value: Any, go_type: str) -> InvalidParameter:
    kind = {str: "string", bool: "bool", list: "array", dict: "object"}.get(type(value),
                                                                          "number")
    return InvalidParameter(f"json: cannot unmarshal {kind} into Go struct field "
                            f"HealthConfig.Healthcheck.{field} of type {go_type}")


def normalize(value: Any) -> dict[str, Any] | None:
    """A request's `Healthcheck` with Docker's types and only its non-zero fields (as
    Docker's omitempty JSON shows it); None when absent. InvalidParameter when malformed
    (dockerd answers those with a 500 from its JSON decoder)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidParameter("json: cannot unmarshal into Go struct field "
                               "Config.Healthcheck of type container.HealthConfig")
    out: dict[str, Any] = {}
    test = value.get("Test")
    if test is not None:
        if not isinstance(test, list) or not all(isinstance(t, str) for t in test):
            raise _type_error("Test", test, "[]string")
        if test:
            out["Test"] = list(test)
    for field in (*DURATION_FIELDS, "Retries"):
        raw = value.get(field)
        if raw is None:
            continue
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != int(raw):
            raise _type_error(field, raw, "int" if field == "Retries" else "time.Duration")
        if int(raw):
            out[field] = int(raw)
    return {k: out[k] for k in FIELDS if k in out}


def validate(hc: dict[str, Any] | None) -> None:
    """dockerd's checks on the user's healthcheck, with its words (400)."""
    if hc is None:
        return
    for field in ("Interval", "Timeout"):
        if hc.get(field, 0) and hc[field] < MINIMUM_DURATION:
            raise InvalidParameter(f"{field} in Healthcheck cannot be less than "
                                   f"{go_duration(MINIMUM_DURATION)}")
    if hc.get("Retries", 0) < 0:
        raise InvalidParameter("Retries in Healthcheck cannot be negative")
    for field in ("StartPeriod", "StartInterval"):
        if hc.get(field, 0) and hc[field] < MINIMUM_DURATION:
            raise InvalidParameter(f"{field} in Healthcheck cannot be less than "
                                   f"{go_duration(MINIMUM_DURATION)}")


def for_api_version(hc: dict[str, Any] | None, version: tuple[int, int]) -> dict[str, Any] | None:
    """StartInterval came with API 1.44: older clients' values are dropped, as dockerd does."""
    if hc is not None and version < (1, 44) and "StartInterval" in hc:
        hc = {k: v for k, v in hc.items() if k != "StartInterval"}
    return hc


def merge(user: dict[str, Any] | None, image: dict[str, Any] | None) -> dict[str, Any] | None:
    """The container's healthcheck: the user's, each zero field taken from the image's."""
    if user is None:
        return dict(image) if image is not None else None
    if image is None:
        return dict(user)
    merged = {k: user.get(k) or image.get(k) for k in FIELDS}
    return {k: v for k, v in merged.items() if v}


@dataclass(frozen=True)
class Probe:
    """A container's probe with Docker's defaults applied; durations in nanoseconds."""
    cmd: list[str]
    interval: int
    timeout: int
    start_period: int
    start_interval: int
    retries: int


def probe_of(config: dict[str, Any], shell: list[str] | None = None) -> Probe | None:
    """The probe a container runs, or None (no healthcheck, `NONE`, an unknown type).

    CMD-SHELL runs through the container's `Shell` (else `/bin/sh -c`)."""
    hc = config.get("Healthcheck")
    if not isinstance(hc, dict):
        return None
    test = list(hc.get("Test") or [])
    if not test or test[0] not in ("CMD", "CMD-SHELL"):
        return None
    cmd = test[1:]
    if test[0] == "CMD-SHELL":
        cmd = list(shell or config.get("Shell") or ["/bin/sh", "-c"]) + cmd
    retries = int(hc.get("Retries") or 0)
    return Probe(
        cmd=cmd,
        interval=int(hc.get("Interval") or DEFAULT_INTERVAL),
        timeout=int(hc.get("Timeout") or DEFAULT_TIMEOUT),
        start_period=int(hc.get("StartPeriod") or DEFAULT_START_PERIOD),
        start_interval=int(hc.get("StartInterval") or DEFAULT_START_INTERVAL),
        retries=retries if retries > 0 else DEFAULT_RETRIES,
    )


def reset(health: dict[str, Any] | None) -> dict[str, Any]:
    """`State.Health` at a start or restart: starting, no failures; the log is kept."""
    log = list((health or {}).get("Log") or [])
    return {"Status": STARTING, "FailingStreak": 0, "Log": log}


def monitor_closed(health: dict[str, Any] | None) -> None:
    """A stop or pause closes the monitor; dockerd then reports `unhealthy` (no event)."""
    if health is not None:
        health["Status"] = UNHEALTHY


def record(health: dict[str, Any], result: dict[str, Any], probe: Probe,
           since_start: float) -> str | None:
    """Apply one probe result; the new status when it changed (for the event), else None.

    since_start: seconds from the container's start to the probe's start."""
    before = health.get("Status") or UNHEALTHY
    log = list(health.get("Log") or [])
    log.append(result)
    health["Log"] = log[-MAX_LOG_ENTRIES:]
    if result.get("ExitCode") == 0:
        health["FailingStreak"] = 0
        health["Status"] = HEALTHY
    elif not (before == STARTING and since_start * SECOND < probe.start_period):
        health["FailingStreak"] = int(health.get("FailingStreak") or 0) + 1
        if health["FailingStreak"] >= probe.retries:
            health["Status"] = UNHEALTHY
    after = health.get("Status") or UNHEALTHY
    return after if after != before else None


def next_delay(probe: Probe, since_start: float, status: str) -> float:
    """Seconds until the next probe (counted from the end of the previous one).

    While a container is still starting inside its start period, the start interval, but
    never past the end of the period (moby's newer rule). Unlike moby, a start interval
    shorter than the time left is honoured: moby returns the remaining start period
    whenever it is below the interval, which ignores StartInterval altogether then."""
    remaining = probe.start_period / SECOND - since_start
    if remaining <= 0 or status != STARTING:
        return probe.interval / SECOND
    return min(probe.start_interval / SECOND, remaining)


class OutputBuffer:
    """A probe's stdout and stderr as they arrive, up to MAX_OUTPUT bytes; `...` if cut."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.truncated = False

    def write(self, data: bytes) -> None:
        keep = min(MAX_OUTPUT - len(self._buf), len(data))
        if keep > 0:
            self._buf += data[:keep]
        if keep < len(data):
            self.truncated = True

    def text(self) -> str:
        # Go's JSON encoder turns invalid UTF-8 into U+FFFD; a cut character ends the same.
        out = self._buf.decode(errors="replace")
        return out + "..." if self.truncated else out


def timeout_output(probe: Probe, output: str) -> str:
    """The log entry of a probe that ran past its timeout (moby ≥ 25 keeps its output)."""
    message = f"Health check exceeded timeout ({go_duration(probe.timeout)})"
    return f"{message}: {output}" if output else message


def status_suffix(health: dict[str, Any] | None) -> str:
    """What `docker ps` shows after "Up …": ` (health: starting)`, ` (healthy)`, …"""
    if health is None:
        return ""
    status = health.get("Status") or UNHEALTHY
    return " (health: starting)" if status == STARTING else f" ({status})"


def filter_status(health: dict[str, Any] | None) -> str:
    """The value the `health=` list filter matches."""
    if health is None:
        return NO_HEALTHCHECK
    return str(health.get("Status") or UNHEALTHY)


def validate_filter(values: list[str]) -> None:
    for value in values:
        if value not in FILTER_VALUES:
            raise InvalidParameter(f"Unrecognised filter value for health: {value}")


def go_duration(ns: int) -> str:
    """A duration as Go's time.Duration.String() writes it: 1ms, 1.5s, 1m30s, 2h0m0s."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < SECOND:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _fraction(ns, size) + unit
    hours, rest = divmod(ns, 3600 * SECOND)
    minutes, rest = divmod(rest, 60 * SECOND)
    text = _fraction(rest, SECOND) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _fraction(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")
