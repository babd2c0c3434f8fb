"""conmon's k8s-file format read back as Docker's logs API serves it."""

from pathlib import Path

from stowd.engine.logs import STDERR, STDOUT, LogReader, docker_time, frame, parse_line, read_all


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


LINES = [
    "2026-01-01T00:00:01.000000001+00:00 stdout F one",
    "2026-01-01T00:00:02.5+00:00 stderr F two",
    "2026-01-01T00:00:03.000000000+00:00 stdout P thr",
    "2026-01-01T00:00:03.100000000+00:00 stdout F ee",
    "2026-01-01T00:00:04.000000000+00:00 stdout F ",
    "2026-01-01T00:00:05.000000000+00:00 stdout P no-newline",
]


def test_parse_line_and_time() -> None:
    assert parse_line(b"2026-01-01T00:00:01.1+00:00 stdout F hi there\n") == (
        b"2026-01-01T00:00:01.1+00:00", STDOUT, False, b"hi there")
    assert parse_line(b"garbage") is None
    assert docker_time(b"2026-01-01T00:00:02.5+00:00") == "2026-01-01T00:00:02.500000000Z"


def test_frame() -> None:
    assert frame(STDERR, b"ab") == b"\x02\x00\x00\x00\x00\x00\x00\x02ab"


def test_reassembles_partial_lines(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    _write(log, LINES)
    with LogReader(str(log)) as reader:
        messages = list(read_all(reader))
    assert [(m.stream, m.data) for m in messages] == [
        (STDOUT, b"one\n"), (STDERR, b"two\n"), (STDOUT, b"three\n"), (STDOUT, b"\n"),
        (STDOUT, b"no-newline")]
    assert messages[2].time == "2026-01-01T00:00:03.000000000Z"


def test_stream_selection_tail_since_until(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    _write(log, LINES[:5])

    def data(**kw: object) -> list[bytes]:
        with LogReader(str(log), **kw) as reader:  # type: ignore[arg-type]
            return [m.data for m in read_all(reader)]

    assert data(stdout=False) == [b"two\n"]
    assert data(stderr=False, tail=2) == [b"three\n", b"\n"]
    assert data(tail=0) == []
    assert data(tail=100) == [b"one\n", b"two\n", b"three\n", b"\n"]
    since = 1767225602.0  # 2026-01-01T00:00:02Z
    assert data(since=since) == [b"two\n", b"three\n", b"\n"]
    assert data(until=since) == [b"one\n"]
    assert data(since=since, until=since + 1.5, tail=1) == [b"three\n"]


def test_tail_reads_backwards_over_many_blocks(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    lines = [f"2026-01-01T00:00:01.000000001+00:00 stdout F line-{i:06d}" for i in range(50000)]
    _write(log, lines)
    with LogReader(str(log), tail=3) as reader:
        assert [m.data for m in read_all(reader)] == [b"line-049997\n", b"line-049998\n",
                                                      b"line-049999\n"]


def test_missing_log_is_empty(tmp_path: Path) -> None:
    with LogReader(str(tmp_path / "none.log")) as reader:
        assert list(read_all(reader)) == []


def test_parse_size_and_log_options() -> None:
    import pytest

    from stowd.engine.errors import InvalidParameter
    from stowd.engine.logs import parse_log_options, parse_size

    assert parse_size("100") == 100 and parse_size("10k") == 10240
    assert parse_size("1.5m") == 1572864 and parse_size("2GB") == 2 * 1024**3
    assert parse_log_options({"Config": {"max-size": "1m", "max-file": "3"}}) == (1048576, 3)
    assert parse_log_options(None) == (0, 1)
    assert parse_log_options({"Config": {"max-file": "100"}}) == (0, 1)
    for bad in ({"max-size": "x"}, {"max-file": "0", "max-size": "1k"},
                {"what": "1"}):
        with pytest.raises(InvalidParameter):
            parse_log_options({"Config": bad})


def test_rotation_and_reading_across_files(tmp_path: Path) -> None:
    from stowd.engine.logs import rotate

    log = tmp_path / "ctr.log"
    for batch in range(4):
        _write(log, [f"2026-01-01T00:00:0{batch}.{i:09d}+00:00 stdout F b{batch}-{i}"
                     for i in range(3)])
        if batch < 3:
            rotate(str(log), 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctr.log", "ctr.log.1", "ctr.log.2"]
    with LogReader(str(log)) as reader:
        assert [m.data for m in read_all(reader)] == [
            f"b{b}-{i}\n".encode() for b in (1, 2, 3) for i in range(3)]
    with LogReader(str(log), tail=4) as reader:
        assert [m.data for m in read_all(reader)] == [b"b2-2\n", b"b3-0\n", b"b3-1\n",
                                                      b"b3-2\n"]
