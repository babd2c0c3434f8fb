"""The fast lane (api/fastlane.py): hot GETs answered without aiohttp, everything else handed
to aiohttp with the connection, on the same keep-alive connection as clients use it."""

import json
import socket

import docker

from tests.daemon import Daemon


class Conn:
    """A raw keep-alive HTTP/1.1 connection to the daemon's socket."""

    def __init__(self, daemon: Daemon) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(daemon.socket))
        self.sock.settimeout(30)
        self.buf = b""

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def response(self, head: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        top, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = top.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        size = 0 if head else int(headers.get("Content-Length", "0"))
        while len(self.buf) < size:
            self._fill()
        body, self.buf = self.buf[:size], self.buf[size:]
        return int(lines[0].split()[1]), headers, body

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, "the daemon closed the connection"
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def _get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: docker\r\n{extra}\r\n".encode()


def test_fast_and_handed_over_answers_are_the_same(daemon: Daemon,
                                                   api: docker.APIClient) -> None:
    cid = api.create_container("busybox", ["true"], labels={"fastlane": "1"})["Id"]
    list_path = '/v1.44/containers/json?all=1&filters={"label":["fastlane=1"]}'
    conn = Conn(daemon)
    try:
        conn.send(_get("/_ping"))
        status, fast_ping, body = conn.response()
        assert (status, body) == (200, b"OK")
        conn.send(_get(list_path))
        status, fast_headers, fast_body = conn.response()
        assert status == 200 and [c["Id"] for c in json.loads(fast_body)] == [cid]
        # A POST goes to aiohttp, and the connection with it.
        body = json.dumps({"Image": "busybox", "Cmd": ["true"]}).encode()
        conn.send(b"POST /v1.44/containers/create HTTP/1.1\r\nHost: docker\r\n"
                  b"Content-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status, _, created = conn.response()
        assert status == 201
        other = json.loads(created)["Id"]
        conn.send(_get(list_path))
        status, slow_headers, slow_body = conn.response()
        assert (status, slow_body) == (200, fast_body)
        conn.send(_get("/_ping"))
        status, slow_ping, _ = conn.response()
        drop = {"Date"}
        assert {k: v for k, v in fast_headers.items() if k not in drop} == \
            {k: v for k, v in slow_headers.items() if k not in drop}
        assert {k: v for k, v in fast_ping.items() if k not in drop} == \
            {k: v for k, v in slow_ping.items() if k not in drop}
    finally:
        conn.close()
    api.remove_container(cid)
    api.remove_container(other)


def test_pipelined_head_close_and_errors(daemon: Daemon) -> None:
    conn = Conn(daemon)
    try:
        conn.send(_get("/_ping") + _get("/v1.44/version") + _get("/_ping"))
        assert conn.response()[2] == b"OK"
        assert json.loads(conn.response()[2])["ApiVersion"] == "1.44"
        assert conn.response()[2] == b"OK"
        conn.send(b"HEAD /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
        status, headers, _ = conn.response(head=True)
        assert status == 200 and headers["Content-Length"] == "0"
        conn.send(_get("/v1.99/containers/json"))
        status, _, body = conn.response()
        assert status == 400 and b"too new" in body
        conn.send(_get("/_ping", "Connection: close\r\n"))
        assert conn.response()[2] == b"OK"
        assert conn.closed()
    finally:
        conn.close()
    conn = Conn(daemon)
    try:
        conn.send(b"NOT HTTP AT ALL\r\n\r\n")
        assert conn.response()[0] == 400
    finally:
        conn.close()


def test_kept_pings_answer_as_the_app_does(daemon: Daemon) -> None:
    """/_ping is answered from kept bytes after the first time (api/fastlane.py): the same
    status, headers and body as aiohttp's answer, a fresh Date, HEAD without a body, and
    `Connection: close` honoured on a connection that never left the fast lane."""
    for path in ("/_ping", "/v1.44/_ping"):
        answers = []
        for _ in range(3):
            conn = Conn(daemon)
            try:
                conn.send(_get(path))
                answers.append(conn.response())
                conn.send(b"HEAD " + path.encode() + b" HTTP/1.1\r\nHost: docker\r\n\r\n")
                status, head, _ = conn.response(head=True)
                assert status == 200 and head["Content-Length"] == "0"
                conn.send(_get(path, "Connection: close\r\n"))
                status, closing, body = conn.response()
                assert (status, body, closing["Connection"]) == (200, b"OK", "close")
                assert conn.closed()
            finally:
                conn.close()
        assert {a[2] for a in answers} == {b"OK"}
        assert all(a[1]["Date"].endswith(" GMT") for a in answers)
        headers = [{k: v for k, v in a[1].items() if k != "Date"} for a in answers]
        assert headers[0] == headers[1] == headers[2]
    # Handed over to aiohttp (a POST first), the same ping answers the same headers.
    conn = Conn(daemon)
    try:
        conn.send(b"POST /v1.44/containers/prune HTTP/1.1\r\nHost: docker\r\n"
                  b"Content-Length: 0\r\n\r\n")
        assert conn.response()[0] == 200
        conn.send(_get("/v1.44/_ping"))
        status, slow, _ = conn.response()
        assert {k: v for k, v in slow.items() if k != "Date"} == headers[0]
    finally:
        conn.close()
    conn = Conn(daemon)
    try:  # a version the app refuses is never kept
        for _ in range(2):
            conn.send(_get("/v1.99/_ping"))
            status, _, body = conn.response()
            assert status == 400 and b"too new" in body
    finally:
        conn.close()
