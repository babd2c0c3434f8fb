"""Waiting for the condition a test means (a log line, a status, an event), never a fixed
sleep; and the raw API through docker-py's public requests.Session methods."""

import time
from collections.abc import Callable
from typing import Any

import docker
import requests
from docker.errors import create_api_error_from_http_exception


def until(pred: Callable[[], object], timeout: float = 15.0, what: str = "condition",
          every: float = 0.05) -> None:
    """Poll pred until it is true; AssertionError naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout} s")
        time.sleep(every)


def logs_show(ctr: Any, text: bytes, timeout: float = 15.0) -> None:
    """Wait until the container has written `text` (e.g. the `ready` a script prints once
    its signal traps are in place)."""
    until(lambda: text in ctr.logs(), timeout, f"{ctr.id[:12]} never wrote {text!r}")


def status_is(api: docker.APIClient, cid: str, want: str, timeout: float = 15.0) -> None:
    until(lambda: api.inspect_container(cid)["State"]["Status"] == want, timeout,
          f"{cid[:12]} never became {want}")


def event_seen(api: docker.APIClient, since: float, filters: dict[str, Any],
               pred: Callable[[dict[str, Any]], bool] = lambda e: True,
               timeout: float = 15.0) -> dict[str, Any]:
    """Wait for an event the filters and pred select, published after `since`."""
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = [e for e in api.events(since=since, until=time.time(), decode=True,
                                          filters=filters) if pred(e)]
        return bool(found)

    until(seen, timeout, f"no event {filters}", every=0.1)
    return found[0]


def url(api: docker.APIClient, path: str) -> str:
    """The versioned URL of an API path, for docker-py's public get/post/put/delete
    (APIClient is a requests.Session) where docker-py has no method for the call."""
    return f"{api.base_url}/v{api.api_version}{path}"


def process_gone(pid: int, timeout: float = 15.0) -> None:
    until(lambda: not _alive(pid), timeout, f"process {pid} still runs")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def result_of(res: requests.Response, json: bool = True) -> Any:
    """A raw answer as docker-py reports one: APIError (NotFound, ...) for an HTTP error,
    else the decoded JSON (or the text)."""
    try:
        res.raise_for_status()
    except requests.HTTPError as exc:
        raise create_api_error_from_http_exception(exc) from None
    return res.json() if json else res.text
