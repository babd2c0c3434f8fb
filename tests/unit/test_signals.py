import signal

import pytest

from stowd.engine.errors import InvalidParameter
from stowd.engine.signals import parse_signal


@pytest.mark.parametrize("text,number", [
    ("KILL", 9), ("SIGKILL", 9), ("sigterm", 15), ("9", 9), ("hup", 1), ("SIGUSR1", 10),
    ("RTMIN", int(signal.SIGRTMIN)), ("RTMIN+3", int(signal.SIGRTMIN) + 3),
    ("SIGRTMAX-1", int(signal.SIGRTMAX) - 1),
])
def test_parse_signal(text: str, number: int) -> None:
    assert parse_signal(text) == number


@pytest.mark.parametrize("text", ["0", "NOPE", "SIGNOPE", "-1", "999", "RTMIN-1", "RTMAX+1", ""])
def test_bad_signals(text: str) -> None:
    with pytest.raises(InvalidParameter, match="invalid signal"):
        parse_signal(text)
