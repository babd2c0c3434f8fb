"""conmon's k8s-file format read back as Docker's logs API serves it."""

import itertools
from pathlib import Path

import numpy as np

from stowd.engine.logs import STDERR, STDOUT, LogReader, docker_time, frame, parse_line, read_all
from stowd.engine.timespec import unix_nanos

S = 1_000_000_000  # nanoseconds in a second: since/until are Unix nanoseconds


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


def test_times_are_exact_to_the_nanosecond() -> None:
    """The CLI sends `--since <a line's time>` as seconds with nine decimals; as a float
    that rounds by up to ~120 ns and could leave out the line a client resumes from."""
    from stowd.engine import k8sfile
    from stowd.engine.core.container import parse_time_nanos

    line_time = "2026-12-03T18:00:47.515533871Z"
    nanos = unix_nanos("1796320847.515533871")
    assert parse_time_nanos(line_time) == nanos == 1796320847515533871
    assert k8sfile.time_key(nanos) == b"2026-12-03T18:00:47.515533871"
    assert round(float("1796320847.515533871") * S) != nanos  # what a float would give
    assert unix_nanos("1700000000") == 1700000000 * S
    assert unix_nanos("1.7e9") == 1700000000 * S
    assert unix_nanos("-1.5") == -3 * S // 2


def test_details_prefix_as_dockerd_writes_it() -> None:
    """dockerd 20.10 printed `FAR=1,FOO=x+y%2Cz,ab=c+d ` before each line for this
    container, and a lone space without log attributes."""
    from stowd.engine.logs import details_prefix

    config = {"Labels": {"ab": "c d", "other": "x"}, "Env": ["FOO=x y,z", "FAR=1", "PATH=/"]}
    log_config = {"Type": "json-file",
                  "Config": {"labels-regex": "^a", "env-regex": "^F"}}
    assert details_prefix(config, log_config) == b"FAR=1,FOO=x+y%2Cz,ab=c+d "
    named = {"Type": "json-file", "Config": {"labels": "other,missing", "env": "PATH"}}
    assert details_prefix(config, named) == b"PATH=%2F,other=x "
    assert details_prefix(config, None) == b" "
    import pytest

    from stowd.engine.errors import InvalidParameter
    from stowd.engine.logs import parse_log_options

    with pytest.raises(InvalidParameter, match="invalid log opt 'env-regex'"):
        parse_log_options({"Config": {"env-regex": "("}})  # dockerd fails every start


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
    since = 1767225602 * S  # 2026-01-01T00:00:02Z
    assert data(since=since) == [b"two\n", b"three\n", b"\n"]
    assert data(until=since) == [b"one\n"]
    assert data(since=since, until=since + 3 * S // 2, tail=1) == [b"three\n"]


def test_tail_counts_output_that_ended_without_a_newline(tmp_path: Path) -> None:
    """As dockerd: the last message of `printf "no-newline"` is that output, so `tail=1`
    shows it alone (it was shown on top of the last whole line)."""
    log = tmp_path / "ctr.log"
    _write(log, LINES)

    def data(**kw: object) -> list[bytes]:
        with LogReader(str(log), **kw) as reader:  # type: ignore[arg-type]
            return [m.data for m in read_all(reader)]

    assert data(tail=1) == [b"no-newline"]
    assert data(tail=2) == [b"\n", b"no-newline"]
    assert data(tail=0) == []
    assert data(tail=1, stdout=False) == [b"two\n"]  # the pieces are stdout's
    assert data(tail=9) == data()
    pieces = LINES[:-1] + ["2026-01-01T00:00:05.000000000+00:00 stdout P no-",
                           "2026-01-01T00:00:05.100000000+00:00 stdout P newline"]
    _write(log, pieces)
    assert data(tail=1) == [b"no-newline"]
    assert data(tail=1, until=1767225604 * S + S // 2) == [b"\n"]  # the pieces are later


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


def _rotated_log(tmp_path: Path) -> Path:
    """Four batches of three lines (second N, line i: `bN-i`), rotated with max-file 3."""
    from stowd.engine.logs import rotate

    log = tmp_path / "ctr.log"
    for batch in range(4):
        _write(log, [f"2026-01-01T00:00:0{batch}.{i:09d}+00:00 stdout F b{batch}-{i}"
                     for i in range(3)])
        if batch < 3:
            rotate(str(log), 3)
    return log


def test_rotation_and_reading_across_files(tmp_path: Path) -> None:
    log = _rotated_log(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctr.log", "ctr.log.1", "ctr.log.2"]
    with LogReader(str(log)) as reader:
        assert [m.data for m in read_all(reader)] == [
            f"b{b}-{i}\n".encode() for b in (1, 2, 3) for i in range(3)]
    with LogReader(str(log), tail=4) as reader:
        assert [m.data for m in read_all(reader)] == [b"b2-2\n", b"b3-0\n", b"b3-1\n",
                                                      b"b3-2\n"]


def _conmon_log(path: Path, count: int, *, partial_every: int = 0, seed: int = 7,
                pieces: float = 0.0) -> None:
    """A log as conmon writes it: fixed-width UTC times, both streams, texts of any length;
    with `pieces`, that share of the lines is a piece continued by the next line of its
    stream (as conmon writes a line its 8 KB read cut), runs of several included."""
    import random

    rng = random.Random(seed)
    lines = []
    stream = "stdout"
    flag = "F"
    for i in range(count):
        if flag == "F" or not pieces:  # with `pieces`, a line's rest comes in its stream
            stream = "stderr" if rng.random() < 0.3 else "stdout"
        flag = "P" if partial_every and i % partial_every == 1 else "F"
        if pieces and rng.random() < pieces and i < count - 1:
            flag = "P"
        text = "x" * rng.randrange(0, 300) + f"-{i}"
        lines.append(f"2026-01-01T00:{i // 6000:02d}:{i // 100 % 60:02d}.{i % 100:07d}00+00:00"
                     f" {stream} {flag} {text}")
    _write(path, lines)


def _line_by_line(path: Path, framed: bool, timestamps: bool, **kw: object) -> bytes:
    from stowd.engine.logs import encode_messages

    with LogReader(str(path), **kw) as reader:  # type: ignore[arg-type]
        return encode_messages(list(read_all(reader)), framed=framed, timestamps=timestamps)


def _encoded(path: Path, framed: bool, timestamps: bool, max_bytes: int, **kw: object) -> bytes:
    out = b""
    with LogReader(str(path), **kw) as reader:  # type: ignore[arg-type]
        while chunk := reader.read_encoded(framed=framed, timestamps=timestamps,
                                           max_bytes=max_bytes):
            out += chunk
        from stowd.engine.logs import encode_messages
        out += encode_messages(reader.flush_partial(), framed=framed, timestamps=timestamps)
    return out


def test_block_encoding_matches_line_by_line(tmp_path: Path) -> None:
    """The vectorised path (k8sfile) answers byte for byte what the per-line reader does,
    for every query shape, whatever block size cuts the lines."""
    import itertools

    from stowd.engine import k8sfile

    log = tmp_path / "ctr.log"
    _conmon_log(log, 1200)
    block = (log.read_bytes().split(b"\n", 1)[0] + b"\n")
    assert k8sfile.encode(block, streams={1, 2}, framed=True, timestamps=False) is not None
    since, until = unix_nanos("1767225607.5"), unix_nanos("1767225622.25")
    queries: list[dict[str, object]] = [
        {}, {"stdout": False}, {"stderr": False}, {"since": since}, {"until": until},
        {"since": since, "until": until, "stderr": False}, {"tail": 0}, {"tail": 1},
        {"tail": 777}, {"tail": 2000}, {"tail": 50, "until": until},
        {"tail": 10, "since": since, "stdout": False}]
    for query, framed, timestamps, max_bytes in itertools.product(
            queries, (True, False), (False, True), (4096, 1 << 20)):
        expected = _line_by_line(log, framed, timestamps, **query)
        got = _encoded(log, framed, timestamps, max_bytes, **query)
        assert got == expected, (query, framed, timestamps, max_bytes)
    assert _line_by_line(log, True, False, since=since) != _line_by_line(log, True, False)


def test_blocks_with_partial_or_odd_lines_fall_back(tmp_path: Path) -> None:
    from stowd.engine import k8sfile

    log = tmp_path / "ctr.log"
    _conmon_log(log, 500, partial_every=7)
    data = log.read_bytes()
    assert k8sfile.encode(data, streams={1, 2}, framed=True, timestamps=False) is None
    for framed, timestamps in ((True, False), (False, True)):
        assert _encoded(log, framed, timestamps, 2048) == _line_by_line(log, framed, timestamps)
    assert k8sfile.scan(b"2026-01-01T00:00:01.5+00:00 stdout F short time\n") is None
    assert k8sfile.scan(b"2026-01-01T00:00:01.000000000+01:00 stdout F other zone\n") is None
    assert k8sfile.scan(b"2026-01-01T00:00:01.000000000+00:00 stdin  F what\n") is None


def test_block_encoding_output_shape() -> None:
    from stowd.engine import k8sfile

    data = (b"2026-01-01T00:00:01.000000001+00:00 stdout F hello\n"
            b"2026-01-01T00:00:02.000000000+00:00 stderr F \n")
    def encoded(**kw: object) -> tuple[bytes, bool, int]:
        out = k8sfile.encode(data, **kw)  # type: ignore[arg-type]
        assert out is not None
        return bytes(out.output), out.past_until, out.open_from

    assert encoded(streams={1, 2}, framed=True, timestamps=False) == (
        frame(STDOUT, b"hello\n") + frame(STDERR, b"\n"), False, len(data))
    assert encoded(streams={2}, framed=False, timestamps=True) == (
        b"2026-01-01T00:00:02.000000000Z \n", False, len(data))
    assert encoded(streams={1, 2}, framed=False, timestamps=False,
                   until=k8sfile.time_key(unix_nanos("1767225601.5"))) == (
        b"hello\n", True, len(data))
    # Pieces: one message at the time of its first piece; one still open at the end is
    # left for the next block.
    data = (b"2026-01-01T00:00:01.000000001+00:00 stdout P hel\n"
            b"2026-01-01T00:00:01.500000000+00:00 stdout P l\n"
            b"2026-01-01T00:00:02.000000000+00:00 stdout F o\n"
            b"2026-01-01T00:00:03.000000000+00:00 stderr P open\n")
    assert encoded(streams={1, 2}, framed=True, timestamps=True) == (
        frame(STDOUT, b"2026-01-01T00:00:01.000000001Z hello\n"), False,
        data.index(b"2026-01-01T00:00:03"))
    began = k8sfile.time_key(unix_nanos("1767225601.2"))  # after its first piece
    assert encoded(streams={1, 2}, framed=False, timestamps=False, since=began)[0] == b""
    data = data.replace(b"stdout F o", b"stderr F o")  # a piece continued by the other stream
    assert k8sfile.encode(data, streams={1, 2}, framed=True, timestamps=False) is None
    assert k8sfile.time_key(unix_nanos("1767225601.000000001")) == \
        b"2026-01-01T00:00:01.000000001"
    assert k8sfile.time_key(unix_nanos("1767225601.25")) == b"2026-01-01T00:00:01.250000000"


def test_packing_lines_of_any_lengths(tmp_path: Path) -> None:
    """Both ways of packing the shown lines together (rows as wide as the longest line,
    or a mask when one line is much longer than the rest) answer what the per-line
    reader does."""
    from stowd.engine import k8sfile

    rng = np.random.default_rng(3)
    for longest in (0, 3000, 9000):  # 9000: wider than the spare bytes of a block copy
        lines = [f"2026-01-01T00:00:{i // 100 % 60:02d}.{i % 100:07d}00+00:00 "
                 f"{'stderr' if i % 3 == 0 else 'stdout'} F " + "y" * int(rng.integers(0, 90))
                 for i in range(400)]
        if longest:
            lines[123] += "L" * longest
        log = tmp_path / f"ctr-{longest}.log"
        _write(log, lines)
        data = log.read_bytes()
        for framed, timestamps in itertools.product((True, False), (True, False)):
            got = k8sfile.encode(data, streams={1, 2}, framed=framed, timestamps=timestamps)
            assert got is not None
            assert bytes(got.output) == _line_by_line(log, framed, timestamps)
            got = k8sfile.encode(data, streams={2}, framed=framed, timestamps=timestamps)
            assert got is not None
            assert bytes(got.output) == _line_by_line(log, framed, timestamps, stdout=False)


def test_pieces_are_joined_in_blocks_as_line_by_line(tmp_path: Path) -> None:
    """A fast writer's log, where conmon cut a line into pieces every few KB: the blocks
    stay on the vectorised path and answer what the per-line reader does, wherever a block
    boundary cuts a message, including messages longer than a block."""
    from stowd.engine import k8sfile

    log = tmp_path / "ctr.log"
    _conmon_log(log, 3000, pieces=0.2, seed=11)
    data = log.read_bytes()
    assert data.count(b" P ") > 400
    assert k8sfile.encode(data, streams={1, 2}, framed=True, timestamps=False) is not None
    since, until = unix_nanos("1767225607.5"), unix_nanos("1767225622.25")
    queries: list[dict[str, object]] = [
        {}, {"stdout": False}, {"since": since}, {"until": until},
        {"since": since, "until": until, "stderr": False}, {"tail": 333}]
    for query, framed, timestamps, max_bytes in itertools.product(
            queries, (True, False), (False, True), (1000, 4096, 1 << 20)):
        assert _encoded(log, framed, timestamps, max_bytes, **query) == \
            _line_by_line(log, framed, timestamps, **query), (query, framed, max_bytes)


def test_since_bisects_instead_of_reading(tmp_path: Path) -> None:
    """`since` starts where bisecting the times says, in the right rotated file, at the
    first piece of a message; the answers equal reading everything and filtering."""
    from stowd.engine import k8sfile

    log = tmp_path / "ctr.log"
    _conmon_log(log, 6000, pieces=0.3, seed=5)
    data = log.read_bytes()
    with log.open("rb") as f:
        assert k8sfile.since_start(f, k8sfile.time_key(0)) == 0
        assert k8sfile.since_start(f, k8sfile.time_key(1767235600 * S)) == len(data)
        since = k8sfile.time_key(unix_nanos("1767225630.0000005"))
        start = k8sfile.since_start(f, since)
    assert start is not None and 0 < start < len(data)
    older = data[:start].split(b"\n")[:-1]
    assert older[-1][43:44] == b"F"  # the message before ends there
    assert max(line[:29] for line in older) < since
    newer = data[start:].split(b"\n")
    due = next(n for n, line in enumerate(newer) if line[:29] >= since)
    assert all(line[43:44] == b"P" for line in newer[:due])  # only its message's pieces
    for second in ("00.0", "03.333", "29.99", "30.004", "59.5", "61.0", "30.000000500"):
        since = unix_nanos(f"17672256{second}")
        for framed in (True, False):
            expected = _line_by_line(log, framed, False, since=since)
            got = _encoded(log, framed, False, 1 << 20, since=since)
            assert got == expected, second
    # Not the fixed shape: read from the start and filtered, as before.
    odd = tmp_path / "odd.log"
    _write(odd, LINES)
    with odd.open("rb") as f:
        assert k8sfile.since_start(f, k8sfile.time_key(1767225602 * S)) is None
    with LogReader(str(odd), since=1767225602 * S) as reader:
        assert [m.data for m in read_all(reader)] == [b"two\n", b"three\n", b"\n",
                                                      b"no-newline"]


def test_since_across_rotated_files(tmp_path: Path) -> None:
    log = _rotated_log(tmp_path)
    for since, first in ((1767225600 * S, b"b1-0\n"), (unix_nanos("1767225601.5"), b"b2-0\n"),
                         (1767225602 * S + 1, b"b2-1\n"), (1767225603 * S, b"b3-0\n")):
        with LogReader(str(log), since=since) as reader:
            assert next(m.data for m in read_all(reader)) == first
    with LogReader(str(log), since=1767225609 * S) as reader:
        assert list(read_all(reader)) == []
