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

conmon reads a container's output in 8 KB reads and writes what ends without a newline as
a piece (`P`); the rest of the line follows as the next line of that stream. A fast writer's
log has a piece every few KB, so pieces are joined here too: a message is the run of pieces
and the line that ends it, one frame at the time of its first piece.

A block with a line of another shape (a zone other than UTC, anything malformed, a piece
followed by the other stream) is not handled here: `encode` returns None and the caller
reads that block line by line (`logs.LogReader`). `since_start` finds where a `since` query
begins by bisecting the file on its lines' times, so the older part is never read.
"""

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

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


def time_key(nanos: int) -> bytes:
    """A Unix time in nanoseconds in the 29-byte form the log's times start with, so that
    they compare as bytes (the times in a log are all UTC and of the same width)."""
    whole, frac = divmod(nanos, 1_000_000_000)
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S").encode() + \
        b".%09d" % frac


def _items(buf: npt.NDArray[np.uint8], width: int, kind: str = "V") -> npt.NDArray[Any]:
    """A writable view of buf with one item of `width` bytes starting at each byte (items
    overlap), so that one fancy index per line reads or writes several bytes of it. One
    item per line rather than a row of bytes: numpy's one-dimensional fancy indexing copies
    an item at a time, about three times faster than a row of a 2-D strided view."""
    return np.ndarray(buffer=buf, dtype=np.dtype(f"{kind}{width}"),
                      shape=(len(buf) - width + 1,), strides=(1,))


@dataclass
class Lines:
    """The complete lines of a block, all in the fixed shape."""

    buf: npt.NDArray[np.uint8]  # a writable copy of the block (and _SPARE bytes)
    starts: Ints
    ends: Ints  # index of each line's newline
    stream: npt.NDArray[np.uint8]  # 1 stdout, 2 stderr
    full: Bools  # F (a whole line) rather than P (a piece)

    def times(self, at: Ints | None = None) -> npt.NDArray[np.bytes_]:
        """Each line's (or the lines `at`'s) 29-byte time, comparable with `time_key`
        (gathered when asked for: plain output never needs them)."""
        starts = self.starts if at is None else self.starts[at]
        times: npt.NDArray[np.bytes_] = _items(self.buf, TIME, "S")[starts]
        return times

    def shown(self, streams: set[int], since: bytes, until: bytes,
              at: Ints | None = None) -> tuple[Bools, int]:
        """Which lines (or the lines `at`: the first of each message) the query shows, and
        how many of them come before the first one past `until` (all when none is)."""
        stream = self.stream if at is None else self.stream[at]
        keep = np.zeros(len(stream), np.bool_)
        for wanted in streams:
            keep |= stream == wanted
        count = len(stream)
        if since or until:
            times = self.times(at)
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
    words = _items(buf, _ROW - 24)[starts + 24].view("<u8").reshape(-1, 3)
    w4, w5 = words[:, 1], words[:, 2] & _W5_MASK
    out = w4 == _W4_OUT
    stream = np.where(out, np.uint8(1), np.uint8(2)).astype(np.uint8)
    full = np.where(out, w5 == _W5[1, True], w5 == _W5[2, True])
    partial = np.where(out, w5 == _W5[1, False], w5 == _W5[2, False])
    ok = (out | (w4 == _W4_ERR)) & (full | partial) & ((words[:, 0] & _W3_MASK) == _W3)
    if not ok.all():
        return None
    return Lines(buf, starts, ends, stream, full)


@dataclass
class Encoded:
    """What `encode` made of a block."""

    output: memoryview  # Docker's logs output for the block's whole messages
    past_until: bool  # a message past `until` was reached: nothing after it is shown
    # Where the pieces of a message still open at the block's end begin (conmon had not
    # written its end yet): the caller carries them over. len(data) when there are none.
    open_from: int


def encode(data: bytes | memoryview, *, streams: set[int], framed: bool, timestamps: bool,
           since: bytes = b"", until: bytes = b"") -> Encoded | None:
    """Docker's logs output for the messages in `data` (complete lines; the first one
    begins a message). A message is a line (`F`), or the pieces (`P`) conmon wrote of a
    longer one, one after the other, and the line that ends it: one frame, at the time of
    its first piece, as the line-by-line reader makes it. None when a line is not in the
    fixed shape, or a piece is not followed by the rest of its line (the other stream came
    in between): the caller must read this block line by line."""
    lines = scan(data)
    if lines is None:
        return None
    full = lines.full
    count = len(full)
    if full.all():
        first = None  # every line is a message: the common case, no grouping
    else:
        piece = ~full[:-1]
        if (piece & (lines.stream[1:] != lines.stream[:-1])).any():
            return None
        complete = np.flatnonzero(full)
        count = int(complete[-1]) + 1 if len(complete) else 0  # lines of whole messages
        first = np.empty(count, np.bool_)
        first[:1] = True
        first[1:] = full[:max(count - 1, 0)]
    open_from = int(lines.starts[count]) if count < len(full) else len(data)
    heads = np.arange(count) if first is None else np.flatnonzero(first)
    keep, shown = lines.shown(streams, since, until, None if first is None else heads)
    past_until = shown < len(heads)
    if past_until:
        count = int(heads[shown])
        heads, keep = heads[:shown], keep[:shown]
        open_from = len(data)
        if first is not None:
            first = first[:count]
    if not keep.any():
        return Encoded(memoryview(b""), past_until, open_from)
    starts, ends = lines.starts[:count], lines.ends[:count]
    # The text of a line runs from start + HEAD to its newline, which is output only where
    # the line ends a message (`F`). What Docker puts before a message is written into the
    # end of the prefix of its first line, and the rest of that prefix is cut.
    text = ends - starts - HEAD + full[:count]
    size = text if first is None else np.add.reduceat(text, heads)
    at = starts[heads]
    kept = 0
    if timestamps:
        kept = TIME + 2  # the time, "Z" and the space already at HEAD - 1
        times = _items(lines.buf, TIME)
        times[at + HEAD - kept] = times[at]
        lines.buf[at + HEAD - 2] = ord("Z")
        size = size + kept
    if framed:
        head = np.zeros((len(heads), 8), np.uint8)
        head[:, 0] = lines.stream[heads]
        head[:, 4:] = size.astype(">u4").view(np.uint8).reshape(len(heads), 4)
        kept += 8
        _items(lines.buf, 8)[at + HEAD - kept] = head.view("V8").ravel()
    if first is None:
        # Each shown line's output runs from `kept` bytes before its text to its newline.
        run = starts[keep] + (HEAD - kept)
        return Encoded(_pack(lines.buf, run, ends[keep] + 1 - run), past_until, open_from)
    # The first line of a message from `kept` bytes before its text, the others from their
    # text; each to its newline, or to the byte before it for a piece.
    lead = np.where(first, kept, 0)
    shown_line = keep[np.cumsum(first) - 1]
    run = (starts + HEAD - lead)[shown_line]
    return Encoded(_pack(lines.buf, run, (text + lead)[shown_line]), past_until, open_from)


def _pack(buf: npt.NDArray[np.uint8], first: Ints, size: Ints) -> memoryview:
    """The runs buf[first[i]:first[i] + size[i]], one after the other.

    When the lines are of similar lengths, one fancy-indexed copy of an item as wide as
    the longest run per line does it: each item also copies whatever follows its run,
    which the next item, copied after it, overwrites (numpy assigns the items of an index
    in order). About four times faster than a boolean mask, which stays for blocks with a
    few long lines."""
    total = int(size.sum())
    width = int(size.max())
    if width <= _SPARE and width * len(size) <= _PACK_FACTOR * total:
        out = np.empty(total + width, np.uint8)
        dest = np.zeros(len(size), np.int64)
        np.cumsum(size[:-1], out=dest[1:])
        _items(out, width)[dest] = _items(buf, width)[first]
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


PROBE = 16 * 1024  # bytes looked at for a line's end (conmon splits longer ones)


def since_start(f: BinaryIO, since: bytes) -> int | None:
    """Where reading a log file must begin to see every message from `since` on: the
    start of the message holding the first line at or after `since`, found by bisecting
    the file on its lines' times (they only grow down a log: conmon stamps each line as it
    reads it). The file's size when every line is older; None when a probed line is not in
    the fixed shape (the caller then reads from the start and filters)."""
    size = f.seek(0, os.SEEK_END)
    # The least offset whose next line is at or after `since` (or is none) is in [low, high].
    low, high = 0, size
    while low < high:
        middle = (low + high) // 2
        line = _line_at_or_after(f, middle, size)
        if line is None:
            return None
        start, prefix = line
        if prefix and prefix[:TIME] < since:
            low = start + 1  # every offset up to this line's start finds it, or an older one
        else:
            high = middle
    line = _line_at_or_after(f, low, size)
    if line is None:
        return None
    return _message_start(f, line[0]) if line[1] else size


def _line_at_or_after(f: BinaryIO, offset: int, size: int) -> tuple[int, bytes] | None:
    """(start, prefix) of the first line beginning at or after offset; (size, b"") when
    none does (or only a line still being written); None when that line is not in the
    fixed shape, or too far to look for."""
    start = offset
    if offset > 0:
        f.seek(offset - 1)
        look = f.read(PROBE)
        cut = look.find(b"\n")
        if cut < 0:
            return None if len(look) == PROBE else (size, b"")
        start = offset + cut
    f.seek(start)
    prefix = f.read(HEAD)
    if len(prefix) < HEAD:
        return None if b"\n" in prefix else (size, b"")  # short, or still being written
    return (start, prefix) if _is_head(prefix) else None


def _message_start(f: BinaryIO, start: int) -> int:
    """The start of the message the line at `start` belongs to: back over the pieces
    (`P` lines) before it."""
    while start > 0:
        back = max(0, start - PROBE)
        f.seek(back)
        block = f.read(start - back)
        cut = block.rfind(b"\n", 0, len(block) - 1) + 1
        if cut == 0 and back > 0:
            return start  # a line longer than the look: take the line we have
        prefix = block[cut:cut + HEAD]
        if not _is_head(prefix, flag=b"P"):
            return start  # the line before ends a message (or is not ours to join)
        start = back + cut
    return start


def _is_head(prefix: bytes, flag: bytes = b"") -> bool:
    """Whether a line begins with conmon's fixed-shape prefix (and, when given, that flag)."""
    return (len(prefix) >= HEAD and prefix[10:11] == b"T" and prefix[TIME:TIME + 7] == b"+00:00 "
            and prefix[36:43] in (b"stdout ", b"stderr ") and prefix[43:44] in (b"F", b"P")
            and (not flag or prefix[43:44] == flag) and prefix[44:45] == b" ")


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
