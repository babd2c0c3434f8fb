"""Healthcheck rules (engine/health.py): dockerd's merge, checks, defaults and state machine."""

import pytest

from stowd.engine import health
from stowd.engine.errors import InvalidParameter

S = health.SECOND
MS = 1_000_000


def probe(**hc: object) -> health.Probe:
    p = health.probe_of({"Healthcheck": {"Test": ["CMD", "true"], **hc}})
    assert p is not None
    return p


def result(code: int, output: str = "") -> dict[str, object]:
    return {"Start": "s", "End": "e", "ExitCode": code, "Output": output}


# request shape and validation ----------------------------------------------------------

def test_normalize_keeps_nonzero_fields_in_dockers_order() -> None:
    hc = health.normalize({"Retries": 3, "Interval": 2 * S, "Timeout": 0, "Test": [],
                           "StartPeriod": None, "StartInterval": 1.0 * S})
    assert hc == {"Interval": 2 * S, "StartInterval": S, "Retries": 3}
    assert list(hc) == ["Interval", "StartInterval", "Retries"]
    assert health.normalize(None) is None
    assert health.normalize({}) == {}


@pytest.mark.parametrize("value, word", [
    ({"Test": "CMD true"}, "Test of type []string"),
    ({"Test": ["CMD", 1]}, "Test of type []string"),
    ({"Interval": "1s"}, "Interval of type time.Duration"),
    ({"Retries": 1.5}, "Retries of type int"),
    ({"Timeout": True}, "Timeout of type time.Duration"),
    ("CMD true", "HealthConfig"),
])
def test_normalize_refuses_wrong_types(value: object, word: str) -> None:
    with pytest.raises(InvalidParameter, match=word.replace("[", r"\[").replace("]", r"\]")):
        health.normalize(value)


@pytest.mark.parametrize("hc, message", [
    ({"Interval": 100}, "Interval in Healthcheck cannot be less than 1ms"),
    ({"Interval": -5 * S}, "Interval in Healthcheck cannot be less than 1ms"),
    ({"Timeout": MS - 1}, "Timeout in Healthcheck cannot be less than 1ms"),
    ({"Retries": -1}, "Retries in Healthcheck cannot be negative"),
    ({"StartPeriod": 999_999}, "StartPeriod in Healthcheck cannot be less than 1ms"),
    ({"StartInterval": 5}, "StartInterval in Healthcheck cannot be less than 1ms"),
])
def test_validate_dockerd_minimums(hc: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        health.validate(hc)


def test_validate_accepts_the_minimum_and_zero() -> None:
    health.validate({"Interval": MS, "Timeout": MS, "StartPeriod": MS, "StartInterval": MS,
                     "Retries": 0})
    health.validate({})
    health.validate(None)


def test_start_interval_is_dropped_below_api_1_44() -> None:
    hc = {"Test": ["CMD", "true"], "StartInterval": S}
    assert health.for_api_version(hc, (1, 43)) == {"Test": ["CMD", "true"]}
    assert health.for_api_version(hc, (1, 44)) == hc
    assert health.for_api_version(None, (1, 41)) is None


# merge with the image ------------------------------------------------------------------

IMAGE = {"Test": ["CMD-SHELL", "echo img"], "Interval": 2 * S, "Timeout": 3 * S,
         "StartPeriod": 4 * S, "Retries": 5}


def test_merge_field_by_field_as_dockerd() -> None:
    assert health.merge(None, IMAGE) == IMAGE
    assert health.merge({"Interval": S}, IMAGE) == {**IMAGE, "Interval": S}
    # --no-healthcheck keeps the image's other fields (what dockerd shows in inspect)
    assert health.merge({"Test": ["NONE"]}, IMAGE) == {**IMAGE, "Test": ["NONE"]}
    assert health.merge({"Test": ["CMD", "x"]}, None) == {"Test": ["CMD", "x"]}
    assert health.merge(None, None) is None
    assert health.merge({"Interval": 5 * S}, None) == {"Interval": 5 * S}


def test_probe_of_commands_and_defaults() -> None:
    p = health.probe_of({"Healthcheck": {"Test": ["CMD-SHELL", "exit 1"]}})
    assert p == health.Probe(cmd=["/bin/sh", "-c", "exit 1"], interval=30 * S,
                             timeout=30 * S, start_period=0, start_interval=5 * S, retries=3)
    shell = health.probe_of({"Healthcheck": {"Test": ["CMD-SHELL", "x"]},
                             "Shell": ["/bin/ash", "-ec"]})
    assert shell is not None and shell.cmd == ["/bin/ash", "-ec", "x"]
    assert probe(Test=["CMD", "a", "b c"]).cmd == ["a", "b c"]
    assert probe(Retries=0).retries == 3
    assert probe(Retries=7).retries == 7
    for none in ({}, {"Healthcheck": {"Test": ["NONE"]}}, {"Healthcheck": {"Interval": S}},
                 {"Healthcheck": {"Test": ["BOGUS", "x"]}}, {"Healthcheck": None}):
        assert health.probe_of(none) is None


# the state machine ---------------------------------------------------------------------

def test_success_makes_healthy_and_clears_streak() -> None:
    h = health.reset(None)
    assert h == {"Status": "starting", "FailingStreak": 0, "Log": []}
    assert health.record(h, result(1), probe(Retries=3), 100) is None
    assert h["FailingStreak"] == 1
    assert health.record(h, result(0, "ok"), probe(), 101) == "healthy"
    assert h["FailingStreak"] == 0 and h["Status"] == "healthy"
    assert health.record(h, result(0), probe(), 102) is None


def test_failures_inside_start_period_do_not_count_while_starting() -> None:
    p = probe(StartPeriod=10 * S, Retries=1)
    h = health.reset(None)
    assert health.record(h, result(1), p, 9.9) is None
    assert h["FailingStreak"] == 0 and h["Status"] == "starting"
    assert health.record(h, result(1), p, 10.0) == "unhealthy"
    assert h["FailingStreak"] == 1


def test_a_success_ends_the_start_period() -> None:
    p = probe(StartPeriod=60 * S, Retries=2)
    h = health.reset(None)
    health.record(h, result(0), p, 1)
    assert health.record(h, result(1), p, 2) is None  # counts: no longer starting
    assert h["FailingStreak"] == 1
    assert health.record(h, result(-1), p, 3) == "unhealthy"


def test_retries_in_a_row_make_unhealthy_and_any_nonzero_is_failure() -> None:
    p = probe(Retries=3)
    h = health.reset(None)
    for i, code in enumerate((1, 2)):
        assert health.record(h, result(code), p, i) is None
    assert health.record(h, result(255), p, 3) == "unhealthy"
    assert health.record(h, result(1), p, 4) is None
    assert h["FailingStreak"] == 4


def test_log_keeps_the_last_five_and_reset_keeps_the_log() -> None:
    h = health.reset(None)
    for i in range(7):
        health.record(h, result(0, str(i)), probe(), i)
    assert [e["Output"] for e in h["Log"]] == ["2", "3", "4", "5", "6"]
    h["FailingStreak"] = 2
    again = health.reset(h)
    assert again["Status"] == "starting" and again["FailingStreak"] == 0
    assert [e["Output"] for e in again["Log"]] == ["2", "3", "4", "5", "6"]


def test_monitor_closed_reads_unhealthy() -> None:
    h = health.reset(None)
    health.record(h, result(0), probe(), 1)
    health.monitor_closed(h)
    assert h["Status"] == "unhealthy" and h["FailingStreak"] == 0
    health.monitor_closed(None)


def test_next_delay_start_interval_and_period_end() -> None:
    p = probe(Interval=30 * S, StartPeriod=10 * S, StartInterval=2 * S)
    assert health.next_delay(p, 0, "starting") == 2
    assert health.next_delay(p, 9, "starting") == pytest.approx(1)  # not past the period
    assert health.next_delay(p, 10, "starting") == 30
    assert health.next_delay(p, 1, "healthy") == 30
    plain = probe(Interval=S)
    assert health.next_delay(plain, 0, "starting") == 1  # no start period: the interval
    assert health.next_delay(probe(), 0, "starting") == 30


# output, words ------------------------------------------------------------------------

def test_output_capped_at_4096_bytes_with_ellipsis() -> None:
    buf = health.OutputBuffer()
    buf.write(b"a" * 4000)
    buf.write(b"b" * 200)
    buf.write(b"c")
    text = buf.text()
    assert text == "a" * 4000 + "b" * 96 + "..."
    small = health.OutputBuffer()
    small.write(b"out\n")
    small.write(b"\xff")
    assert small.text() == "out\n\ufffd"


def test_timeout_entry_words() -> None:
    assert (health.timeout_output(probe(Timeout=S), "")
            == "Health check exceeded timeout (1s)")
    assert (health.timeout_output(probe(Timeout=1500 * MS), "partial\n")
            == "Health check exceeded timeout (1.5s): partial\n")


@pytest.mark.parametrize("ns, text", [
    (0, "0s"), (MS, "1ms"), (1500, "1.5µs"), (7, "7ns"), (250 * MS, "250ms"),
    (S, "1s"), (30 * S, "30s"), (90 * S, "1m30s"), (60 * S, "1m0s"),
    (3600 * S, "1h0m0s"), (3723 * S + 500 * MS, "1h2m3.5s"), (-2 * S, "-2s"),
])
def test_go_duration(ns: int, text: str) -> None:
    assert health.go_duration(ns) == text


def test_status_words_and_filter() -> None:
    assert health.status_suffix(None) == ""
    assert health.status_suffix({"Status": "starting"}) == " (health: starting)"
    assert health.status_suffix({"Status": "healthy"}) == " (healthy)"
    assert health.status_suffix({"Status": "unhealthy"}) == " (unhealthy)"
    assert health.filter_status(None) == "none"
    assert health.filter_status({"Status": "healthy"}) == "healthy"
    health.validate_filter(["starting", "healthy", "unhealthy", "none"])
    with pytest.raises(InvalidParameter, match="Unrecognised filter value for health: bogus"):
        health.validate_filter(["bogus"])
