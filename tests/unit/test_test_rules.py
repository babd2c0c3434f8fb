"""The suite's own rules, checked on its source: integration tests wait for the condition
they mean (tests/waits.py), never a fixed sleep, and reach the daemon through docker-py's
public API (its requests.Session methods where it has no call), never its private members."""

import re
from pathlib import Path

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"

SLEEP = re.compile(r"\b(time|asyncio)\.sleep\(")
# docker-py's private helpers a test could be tempted by (APIClient._post, ._url, the
# socket behind attach_socket, ...).
DOCKER_PY_PRIVATE = re.compile(r"\.(_post|_get|_put|_delete|_url|_result|_stream_helper|"
                               r"_raise_for_status|_sock|_attach_websocket|_get_raw_response"
                               r"_socket|_read_from_socket|_multiplexed_\w+)\b")


def _lines(pattern: re.Pattern[str]) -> list[str]:
    return [f"{path.name}:{n}: {line.strip()}"
            for path in sorted(INTEGRATION.glob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if pattern.search(line) and "# sleep-ok:" not in line]


def test_integration_tests_wait_not_sleep() -> None:
    # A sleep that IS what is tested says why on its line: `# sleep-ok: <why>`.
    assert _lines(SLEEP) == []


def test_integration_tests_use_docker_py_public_api() -> None:
    assert _lines(DOCKER_PY_PRIVATE) == []
