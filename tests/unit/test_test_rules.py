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


def _lines(pattern: re.Pattern[str], excuse: str) -> list[str]:
    """Lines that match, unless the line or the one above gives the excuse."""
    out = []
    for path in sorted(INTEGRATION.glob("*.py")):
        lines = path.read_text().splitlines()
        for n, line in enumerate(lines):
            if pattern.search(line) and excuse not in line and (
                    n == 0 or excuse not in lines[n - 1]):
                out.append(f"{path.name}:{n + 1}: {line.strip()}")
    return out


def test_integration_tests_wait_not_sleep() -> None:
    # A sleep that IS what is tested says why: `# sleep-ok: <why>`.
    assert _lines(SLEEP, "# sleep-ok:") == []


def test_integration_tests_use_docker_py_public_api() -> None:
    # Where docker-py has no public way, the line above says so: `# no public API: <why>`.
    assert _lines(DOCKER_PY_PRIVATE, "# no public API:") == []
