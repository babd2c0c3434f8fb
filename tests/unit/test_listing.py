"""`docker ps` selection and status strings."""

import time

import pytest

from stowd.api.filters import parse_filters
from stowd.api.shapes import human_duration, status_text
from stowd.engine import listing
from stowd.engine.core.container import Container, State, rfc3339_nano
from stowd.engine.errors import InvalidParameter, NotFound
from stowd.engine.labels import labels_match, pattern_match


def _c(cid: str, name: str, status: str, created: float, code: int = 0,
       labels: dict[str, str] | None = None) -> Container:
    return Container(id=cid * 64, name=name, created=rfc3339_nano(created), image_id="sha256:i",
                     config={"Labels": labels or {}, "ExposedPorts": {"80/tcp": {}}},
                     host_config={}, path="true", args=[],
                     state=State(status=status, exit_code=code))


CTRS = [_c("c", "third", "exited", 300, 3), _c("b", "second", "created", 200,
                                                labels={"t": "y"}),
        _c("a", "first", "running", 100, labels={"t": "x"})]


def _select(filters: dict[str, list[str]], all_: bool = True,
            limit: int | None = None) -> list[str]:
    by_name = {c.name: c for c in CTRS}

    def resolve(ref: str) -> Container:
        if ref in by_name:
            return by_name[ref]
        raise NotFound(f"No such container: {ref}")

    return [c.name for c in listing.select(CTRS, filters, all_=all_, limit=limit,
                                           resolve=resolve, ancestors=lambda n: {"sha256:i"})]


def test_select() -> None:
    assert _select({}, all_=False) == ["first"]
    assert _select({}) == ["third", "second", "first"]
    assert _select({}, all_=False, limit=2) == ["third", "second"]
    assert _select({"status": ["exited"]}, all_=False) == ["third"]
    assert _select({"exited": ["3"]}) == ["third"]
    assert _select({"label": ["t"]}) == ["second", "first"]
    assert _select({"label": ["t=x"]}) == ["first"]
    assert _select({"name": ["^/s"]}) == ["second"]
    assert _select({"before": ["second"]}) == ["first"]
    assert _select({"since": ["second"]}) == ["third"]
    assert _select({"expose": ["80"]}) == ["third", "second", "first"]
    assert _select({"expose": ["81-90"]}) == []
    for bad in ({"status": ["sleeping"]}, {"before": ["nope"]}, {"exited": ["x"]}):
        with pytest.raises(InvalidParameter):
            _select(bad)


def test_parse_filters_both_forms() -> None:
    assert parse_filters('{"status":{"running":true}}', {"status"}) == {"status": ["running"]}
    assert parse_filters('{"status":["running"]}', {"status"}) == {"status": ["running"]}
    with pytest.raises(InvalidParameter, match="invalid filter 'x'"):
        parse_filters('{"x":["1"]}', {"status"})
    with pytest.raises(InvalidParameter, match="invalid filter"):
        parse_filters("{nope", {"status"})


def test_human_duration() -> None:
    assert human_duration(0.5) == "Less than a second"
    assert human_duration(1) == "1 second"
    assert human_duration(59) == "59 seconds"
    assert human_duration(90) == "About a minute"
    assert human_duration(600) == "10 minutes"
    assert human_duration(3600) == "About an hour"
    assert human_duration(5 * 3600) == "5 hours"
    assert human_duration(3 * 86400) == "3 days"


def test_status_text() -> None:
    now = time.time()
    c = _c("d", "d", "exited", now - 100, 137)
    c.state.finished_at = rfc3339_nano(now - 5)
    assert status_text(c, now) == "Exited (137) 5 seconds ago"
    c.state.status = "running"
    c.state.started_at = rfc3339_nano(now - 120)
    assert status_text(c, now) == "Up 2 minutes"
    c.state.status = "paused"
    assert status_text(c, now) == "Up 2 minutes (Paused)"
    assert status_text(_c("e", "e", "created", now), now) == "Created"


def test_the_one_name_pattern_and_label_filter() -> None:
    assert pattern_match("web", "web") and pattern_match("^we", "web")
    assert not pattern_match("^eb", "web")
    assert not pattern_match("[", "web")  # an invalid expression matches nothing
    assert pattern_match("[", "[")  # but equality still does
    assert labels_match({"a": "1", "b": ""}, ["a", "b="], ["c"])
    assert not labels_match({"a": "1"}, ["a=2"])
    assert not labels_match({"a": "1"}, [], ["a"])
    assert labels_match(None, [])
