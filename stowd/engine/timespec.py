"""Docker's time arguments: Go durations (`1h30m`, `500ms`), and `until`/`since` values
(Unix seconds, RFC 3339, or a duration before now). The one parser of each."""

import json
import time

from stowd.engine.core.container import NANOS, parse_time
from stowd.engine.errors import InvalidParameter

_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                   "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_duration(text: str) -> int:
    """A Go duration (`30s`, `1m30s`, `500ms`) in nanoseconds."""
    total = 0
    rest = text.strip()
    if not rest:
        raise InvalidParameter("time: invalid duration \"\"")
    if rest == "0":
        return 0
    while rest:
        i = 0
        while i < len(rest) and (rest[i].isdigit() or rest[i] == "."):
            i += 1
        j = i
        while j < len(rest) and not (rest[j].isdigit() or rest[j] == "."):
            j += 1
        number, unit = rest[:i], rest[i:j]
        if not number or unit not in _DURATION_UNITS:
            raise InvalidParameter(f"time: invalid duration {json.dumps(text)}")
        try:
            total += int(float(number) * _DURATION_UNITS[unit])
        except ValueError as exc:
            raise InvalidParameter(f"time: invalid duration {json.dumps(text)}") from exc
        rest = rest[j:]
    return total


def unix_nanos(text: str) -> int:
    """Unix seconds as the API takes `since`/`until` (`1700000000`, or with up to nine
    decimals as the CLI sends a time: `1700000000.123456789`) in exact nanoseconds; a float
    would round them to about 240 ns, enough to miss the line a client resumes from."""
    whole, dot, frac = text.strip().partition(".")
    digits = whole.removeprefix("-")
    if digits.isdigit() and (not dot or frac.isdigit()) and len(frac) <= 9:
        nanos = int(digits) * NANOS + (int(frac.ljust(9, "0")) if frac else 0)
        return -nanos if whole.startswith("-") else nanos
    try:
        return round(float(text) * NANOS)  # another spelling of a number (1.7e9)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not a Unix time: {text!r}") from exc


def parse_until(value: str, now: float | None = None) -> float:
    """An `until` filter as Unix seconds: a Unix time, an RFC 3339 time, or a Go duration
    before now (`10m`, `1h30m`)."""
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parse_time(value)
    except ValueError:
        pass
    try:
        return (time.time() if now is None else now) - parse_duration(value) / 1e9
    except InvalidParameter:
        raise InvalidParameter(f"invalid filter 'until={value}'") from None
