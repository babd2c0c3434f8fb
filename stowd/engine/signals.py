"""Signal names and numbers as Docker accepts them: KILL, SIGKILL, sigterm, 9, RTMIN+3."""

import signal

from stowd.engine.errors import InvalidParameter

_NAMES: dict[str, int] = {
    s.name.removeprefix("SIG"): int(s)
    for s in signal.Signals
    if s.name.startswith("SIG") and not s.name.startswith("SIG_")
}
_NAMES.setdefault("IOT", int(signal.SIGABRT))
_NAMES.setdefault("POLL", int(signal.SIGIO))
_RTMIN = int(signal.SIGRTMIN)
_RTMAX = int(signal.SIGRTMAX)


def parse_signal(text: str | int) -> int:
    """The signal number for a name or number; raises InvalidParameter for anything else."""
    if isinstance(text, int):
        number = text
    else:
        raw = text.strip()
        if raw.isdigit():
            number = int(raw)
        else:
            name = raw.upper().removeprefix("SIG")
            if name in _NAMES:
                return _NAMES[name]
            number = 0
            if name.startswith("RTMIN") or name.startswith("RTMAX"):
                base = _RTMIN if name.startswith("RTMIN") else _RTMAX
                offset = name[5:]
                if offset == "":
                    number = base
                elif (offset[0] == "+" and name.startswith("RTMIN")) or (
                    offset[0] == "-" and name.startswith("RTMAX")
                ):
                    if offset[1:].isdigit():
                        number = base + int(offset)
            if not _RTMIN <= number <= _RTMAX:
                raise InvalidParameter(f"invalid signal: {text}")
    if number <= 0 or number > _RTMAX:
        raise InvalidParameter(f"invalid signal: {text}")
    return number


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
