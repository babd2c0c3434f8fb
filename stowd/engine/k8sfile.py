"""Whole blocks of conmon's k8s-file log turned into Docker's logs output, without a Python
step per line.

conmon writes every line as `<time> <stream> <F|P> <text>\\n` with a fixed-width time
(`2026-01-01T00:00:01.000000001+00:00`: nanoseconds, zone as ±hh:mm), so in the usual case
the text of each line starts 45 bytes in. numpy finds the newlines, checks that every line
has that shape, and rewrites each 45-byte prefix in place into what Docker sends before the
text: the 8-byte stdcopy header and/or Docker's timestamp (`…000000001Z `); then the part
of each line that is output is moved up against the previous one (`_pack`). That is a few
array operations per block of about a megabyte, instead of a split, a parse and an
allocation per line: the difference between ~10 MB/s and several hundred.

A block with a line of another shape (a partial `P` line, a zone other than UTC, anything
malformed) is not handled here: `encode` returns None and the caller reads that block line
by line (`logs.LogReader`), which also reassembles partial lines.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

HEAD = 45  # `<35-byte time> <6-byte stream> <flag> `: where the text starts
TIME = 29  # the time without its zone: Docker prints these 29 bytes and then "Z"
_ROW = 48  # each line's prefix is checked as 3 little-endian u64 from byte 24 (3 past HEAD)
# Bytes past the end of a block's copy, so that a row of up to this width can be read from
# the start of any line of it (prefixes, and _pack's rows).
_SPARE = 4096
# _pack copies one row of the longest line's width per line: worth it while that moves at
# most this many times the bytes that are output (else one boolean mask does it).
_PACK_FACTOR = 4


def _word(text: bytes) -> int:
    return int.from_bytes(text.ljust(8, b"\0"), "little")


def _mask(size: int) -> int:
    return (1 << (8 * size)) - 1


# Words 3-5 of a prefix: "…nnnnn+00" (bytes 24-31), ":00 stdo"/":00 stde" (32-39) and
# "ut F "/"rr P "… (40-44, then the text). Checking them checks every fixed byte after the
# nanoseconds: zone, spaces, stream and flag.
_W3_MASK, _W3 = _word(b"\0\0\0\0\0\xff\xff\xff"), _word(b"\0\0\0\0\0+00")
_W4_OUT, _W4_ERR = _word(b":00 stdo"), _word(b":00 stde")
_W5_MASK = _mask(5)
_W5 = {(1, True): _word(b"ut F "), (1, False): _word(b"ut P "),
       (2, True): _word(b"rr F "), (2, False): _word(b"rr P ")}

Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


def time_key(seconds: float) -> bytes:
    """A unix time in the 29-byte form the log's times start with, so that they compare as
    bytes (the times in a log are all UTC and of the same width)."""
    whole = int(seconds // 1)
    nanos = round((seconds - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S").encode() + \
        b".%09d" % nanos


def _rows(buf: npt.NDArray[np.uint8], width: int) -> npt.NDArray[np.uint8]:
    """A writable view of buf with one row of `width` bytes starting at each byte, so that
    one fancy index per line reads or writes several bytes of it."""
    return np.lib.stride_tricks.as_strided(buf, shape=(len(buf) - width + 1, width),
                                           strides=(1, 1))


@dataclass
class Lines:
    """The complete lines of a block, all in the fixed shape."""

    buf: npt.NDArray[np.uint8]  # a writable copy of the block (and _SPARE bytes)
    starts: Ints
    ends: Ints  # index of each line's newline
    stream: npt.NDArray[np.uint8]  # 1 stdout, 2 stderr
    full: Bools  # F (a whole line) rather than P (a piece)

    def times(self) -> npt.NDArray[np.bytes_]:
        """Each line's 29-byte time, comparable with `time_key`."""
        return self.time_rows().view(f"S{TIME}").ravel()

    def time_rows(self) -> npt.NDArray[np.uint8]:
        """Each line's 29-byte time, one row per line (gathered when asked for: plain
        output never needs them)."""
        return _rows(self.buf, TIME)[self.starts]

    def shown(self, streams: set[int], since: bytes, until: bytes) -> tuple[Bools, int]:
        """Which lines the query shows, and how many lines come before the first one past
        `until` (all of them when none is)."""
        keep = np.zeros(len(self.starts), np.bool_)
        for stream in streams:
            keep |= self.stream == stream
        count = len(self.starts)
        if since or until:
            times = self.times()
            if since:
                keep &= times >= np.bytes_(since)
            if until:
                over = times > np.bytes_(until)
                if over.any():
                    count = int(np.argmax(over))
        return keep, count


def scan(data: bytes | memoryview) -> Lines | None:
    """The lines of `data` (complete lines: it ends with a newline), or None when one of
    them is not in conmon's fixed shape."""
    size = len(data)
    buf = np.empty(size + _SPARE, np.uint8)  # the spare bytes are read, never output
    buf[:size] = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(buf[:size] == 10)
    if not len(ends) or ends[-1] != size - 1:
        return None
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    if (ends - starts < HEAD).any():
        return None
    # Only the bytes past the time are checked here (the time's digits are not).
    words = _rows(buf, _ROW - 24)[starts + 24].view("<u8")
    w4, w5 = words[:, 1], words[:, 2] & _W5_MASK
    out = w4 == _W4_OUT
    stream = np.where(out, np.uint8(1), np.uint8(2)).astype(np.uint8)
    full = np.where(out, w5 == _W5[1, True], w5 == _W5[2, True])
    partial = np.where(out, w5 == _W5[1, False], w5 == _W5[2, False])
    ok = (out | (w4 == _W4_ERR)) & (full | partial) & ((words[:, 0] & _W3_MASK) == _W3)
    if not ok.all():
        return None
    return Lines(buf, starts, ends, stream, full)


def encode(data: bytes | memoryview, *, streams: set[int], framed: bool, timestamps: bool,
           since: bytes = b"", until: bytes = b"") -> tuple[memoryview, bool] | None:
    """Docker's logs output for the complete lines in `data`, and whether a line past
    `until` was reached (nothing after it will be shown). None when a line is not in the
    fixed shape or is a partial one: the caller must read this block line by line."""
    lines = scan(data)
    if lines is None or not lines.full.all():
        return None
    keep, count = lines.shown(streams, since, until)
    past_until = count < len(keep)
    keep = keep[:count]
    if not keep.any():
        return memoryview(b""), past_until
    starts, ends = lines.starts[:count], lines.ends[:count]
    # The text (with its newline) runs from start + HEAD to end; what Docker puts before it
    # is written into the end of the prefix, and the rest of the prefix (`drop`) is cut.
    size = ends - starts - HEAD + 1
    kept = 0
    if timestamps:
        kept = TIME + 2  # the time, "Z" and the space already at HEAD - 1
        _rows(lines.buf, TIME)[starts + HEAD - kept] = lines.time_rows()[:count]
        lines.buf[starts + HEAD - 2] = ord("Z")
        size = size + kept
    if framed:
        head = np.zeros((count, 8), np.uint8)
        head[:, 0] = lines.stream[:count]
        head[:, 4:] = size.astype(">u4").view(np.uint8).reshape(count, 4)
        kept += 8
        _rows(lines.buf, 8)[starts + HEAD - kept] = head
    # Each shown line's output runs from `drop` bytes into its prefix to its newline.
    first = starts[keep] + (HEAD - kept)
    return _pack(lines.buf, first, ends[keep] + 1 - first), past_until


def _pack(buf: npt.NDArray[np.uint8], first: Ints, size: Ints) -> memoryview:
    """The runs buf[first[i]:first[i] + size[i]], one after the other.

    When the lines are of similar lengths, one fancy-indexed copy of a row as wide as the
    longest run per line does it: each row also copies whatever follows its run, which
    the next row, copied after it, overwrites (numpy assigns the rows of an index in
    order). About four times faster than a boolean mask, which stays for blocks with a
    few long lines."""
    total = int(size.sum())
    width = int(size.max())
    if width <= _SPARE and width * len(size) <= _PACK_FACTOR * total:
        out = np.empty(total + width, np.uint8)
        dest = np.zeros(len(size), np.int64)
        np.cumsum(size[:-1], out=dest[1:])
        _rows(out, width)[dest] = _rows(buf, width)[first]
        return out.data[:total]
    # One run to cut, then one to keep, per line (what is between the runs is cut).
    cut = np.empty_like(first)
    cut[0] = first[0]
    cut[1:] = first[1:] - (first[:-1] + size[:-1])
    runs = np.empty(2 * len(size) + 1, np.int64)
    runs[0:-1:2], runs[1:-1:2] = cut, size
    runs[-1] = len(buf) - int(first[-1] + size[-1])
    mask = np.repeat(np.tile(np.array([False, True]), len(size) + 1)[:-1], runs)
    packed: memoryview = buf[mask].data
    return packed


def before(data: bytes | memoryview, since: bytes) -> bool:
    """Whether every line of `data` (complete lines) is older than `since`, so that none
    is shown: its last line is (times only grow down a log) and none is a piece of a line
    (`P`), which could begin a message that ends after `since`. False when unsure: the
    caller then encodes the block as usual."""
    view = bytes(data[-2 * 1024:]) if len(data) > 2 * 1024 else bytes(data)
    start = view.rfind(b"\n", 0, len(view) - 1) + 1
    if start == 0 and len(view) < len(data):
        return False  # a last line longer than the look: not worth finding
    last = view[start:start + HEAD]
    if len(last) < HEAD or last[TIME:TIME + 7] != b"+00:00 " or last[10:11] != b"T":
        return False
    return last[:TIME] < since and b" P " not in (
        data if isinstance(data, bytes) else bytes(data))


def tail_start(data: bytes, base: int, count: int, streams: set[int], since: bytes,
               until: bytes) -> tuple[int, int] | None:
    """For `tail`, reading a file backwards: `data` holds complete lines that begin at file
    offset `base`. Returns (offset where the last `count` shown messages begin, -1) when
    they begin in this block, else (0, how many shown messages it has); None when a line
    is not in the fixed shape."""
    lines = scan(data)
    if lines is None:
        return None
    keep, n = lines.shown(streams, since, until)
    keep = keep[:n] & lines.full[:n]  # a piece is not a message of its own
    shown = np.flatnonzero(keep)
    if len(shown) <= count:
        return 0, len(shown)
    # The message before the first of the last `count` ones: the tail starts after it.
    before = shown[len(shown) - count - 1]
    return base + int(lines.ends[before]) + 1, -1
