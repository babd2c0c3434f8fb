"""Hardening (issue 12): bursts, hostile bodies and archives, private files, crash windows.

Each test reproduces one finding of the issue against a real daemon and checks that what a
hostile or unlucky client does costs no more than its honest equivalent.
"""

import errno
import socket
import subprocess

from tests.daemon import Daemon


def _listen_backlog(path: str) -> int:
    """The backlog the kernel keeps for a listening unix socket (`ss`'s Send-Q column)."""
    out = subprocess.run(["ss", "-xlnH", "src", path], capture_output=True, text=True,
                         check=True).stdout.split()
    return int(out[3])


def test_burst_of_300_connects_is_accepted(daemon: Daemon) -> None:
    """Finding 4: 300 clients connecting at once all get an answer (backlog was 128)."""
    assert _listen_backlog(str(daemon.socket)) >= 4096
    socks: list[socket.socket] = []
    refused = 0
    try:
        # Non-blocking connects, as Go's dialer makes them: a full backlog is EAGAIN at once.
        for _ in range(300):
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            err = s.connect_ex(str(daemon.socket))
            if err in (errno.EAGAIN, errno.ECONNREFUSED):
                refused += 1
                s.close()
                continue
            assert err == 0, errno.errorcode.get(err)
            socks.append(s)
        answered = 0
        for s in socks:
            s.setblocking(True)
            s.settimeout(30)
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                answered += 1
    finally:
        for s in socks:
            s.close()
    print(f"burst of 300 connects: {refused} refused, {answered} answered")
    assert refused == 0
    assert answered == 300
