"""Reading conmon's k8s-file logs as Docker's logs API serves them.

Each line conmon writes is `<RFC3339Nano time> <stdout|stderr> <F|P> <text>`: F ends a
line (the newline is implied), P is a piece of a longer line or output that ended without
a newline. The reader reassembles pieces into one message, filters by stream and time,
and finds the last N messages by reading the file backwards, so memory stays bounded
whatever the log's size. Blocking: use from a worker thread.
"""

import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import quote_plus

from stowd.engine import k8sfile
from stowd.engine.core.container import parse_time_nanos
from stowd.engine.errors import InvalidParameter

STDOUT = 1
STDERR = 2
SYSTEMERR = 3
_STREAMS = {b"stdout": STDOUT, b"stderr": STDERR}
READ_SIZE = 1024 * 1024  # log bytes turned into output at a time: bounds memory per reader
HEAD_LOOK = 4096  # bytes looked at for the end of a line before searching the whole block


@dataclass
class LogMessage:
    time: str  # RFC3339Nano in UTC, Docker's spelling (…Z)
    stream: int  # STDOUT or STDERR
    data: bytes  # with its newline when the line was complete
    nanos: int  # time as Unix nanoseconds, for since/until


def frame(stream: int, data: bytes) -> bytes:
    """One stdcopy frame: [stream, 0, 0, 0, size (big-endian u32)] + payload."""
    return struct.pack(">BxxxL", stream, len(data)) + data


def docker_time(ts: bytes) -> str:
    text = ts.decode()
    if text.endswith("+00:00"):
        text = text[:-6] + "Z"
    main, _, frac = text.partition(".")
    if frac:
        digits = frac.rstrip("Z")
        if digits.isdigit():
            text = f"{main}.{digits[:9].ljust(9, '0')}Z"
    return text


def parse_line(line: bytes) -> tuple[bytes, int, bool, bytes] | None:
    """(time, stream, partial, text) for one k8s-file line, None for a malformed one."""
    if line.endswith(b"\n"):
        line = line[:-1]
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in _STREAMS:
        return None
    text = parts[3] if len(parts) == 4 else b""
    return parts[0], _STREAMS[parts[1]], parts[2] == b"P", text


def rotate(path: str, max_files: int) -> None:
    """path → path.1 → path.2 …, keeping max_files files in all (blocking)."""
    oldest = f"{path}.{max_files - 1}"
    if max_files > 1 and os.path.exists(oldest):
        os.unlink(oldest)
    for n in range(max_files - 2, 0, -1):
        if os.path.exists(f"{path}.{n}"):
            os.rename(f"{path}.{n}", f"{path}.{n + 1}")
    if max_files > 1:
        os.rename(path, f"{path}.1")
    else:
        os.truncate(path, 0)


def parse_log_options(log_config: dict[str, object] | None) -> tuple[int, int]:
    """(max size in bytes or 0, max files) from Docker's json-file options."""
    opts = (log_config or {}).get("Config") or {}
    if not isinstance(opts, dict):
        raise InvalidParameter("LogConfig.Config must be a map of strings")
    known = {"max-size", "max-file", "compress", "labels", "labels-regex", "env", "env-regex",
             "tag", "mode", "max-buffer-size"}
    for key in opts:
        if key not in known:
            raise InvalidParameter(f"unknown log opt '{key}' for json-file log driver")
    for key in ("labels-regex", "env-regex"):
        if opts.get(key):
            try:
                re.compile(str(opts[key]))
            except re.error as exc:
                # dockerd takes it and fails every start ("failed to initialize logging
                # driver: error parsing regexp"); refused here, before anything is made.
                raise InvalidParameter(f"invalid log opt '{key}': error parsing regexp: "
                                       f"{exc}") from None
    max_size = parse_size(str(opts.get("max-size", "") or ""))
    raw_files = str(opts.get("max-file", "") or "1")
    if not raw_files.isdigit() or int(raw_files) < 1:
        raise InvalidParameter("max-file cannot be less than 1")
    max_files = int(raw_files)
    if not max_size:
        max_files = 1  # Docker ignores max-file without max-size: one unbounded file
    return max_size, max_files


def parse_size(text: str) -> int:
    """Docker's size strings: 100, 10k, 10kb, 1.5m, 2g (powers of 1024)."""
    text = text.strip().lower()
    if not text:
        return 0
    units = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    number = text.rstrip("bkmgti")
    suffix = text[len(number):].removesuffix("ib").removesuffix("b") or "b"
    try:
        value = float(number)
    except ValueError as exc:
        raise InvalidParameter(f"invalid size: '{text}'") from exc
    if suffix not in units or value < 0:
        raise InvalidParameter(f"invalid size: '{text}'")
    return int(value * units[suffix])


def rotated_paths(path: str) -> list[str]:
    """The log and its rotated predecessors (path.1 is the newest of those), oldest first."""
    out = [path]
    n = 1
    while os.path.exists(f"{path}.{n}"):
        out.insert(0, f"{path}.{n}")
        n += 1
    return out


class LogReader:
    """Messages of a container's log (and its rotated files), in batches (blocking)."""

    def __init__(self, path: str, *, stdout: bool = True, stderr: bool = True,
                 since: int = 0, until: int = 0, tail: int = -1) -> None:
        """since/until: Unix nanoseconds (0: none)."""
        self.path = path
        self.streams = {s for s, on in ((STDOUT, stdout), (STDERR, stderr)) if on}
        self.since = since
        self.until = until
        self.tail = tail
        self._file: BinaryIO | None = None
        self._queue: list[str] = []  # older files still to read after the current one
        self._pending: dict[int, tuple[bytes, bytes]] = {}  # stream -> (time, pieces so far)
        self._carry = b""
        self.done = False  # past `until`: nothing more will match
        self.at_end = False  # the last read reached the end of what was written so far
        self._since_key = k8sfile.time_key(since) if since else b""
        self._until_key = k8sfile.time_key(until) if until else b""

    def open(self) -> None:
        files = rotated_paths(self.path)
        start_index, start_offset = 0, 0
        if self.tail >= 0:
            start_index, start_offset = len(files) - 1, -1
            remaining = self.tail
            # Output that ended without a newline is the last message (flush_partial
            # gives it out), as dockerd counts it: the tail begins with it or before.
            pieces_at = self._pieces_at_end(files[-1]) if remaining > 0 else None
            if pieces_at is not None:
                start_offset, remaining = pieces_at, remaining - 1
            for index in range(len(files) - 1, -1, -1):
                if pieces_at is not None and remaining == 0:
                    break
                offset, remaining = self._tail_in(files[index], remaining)
                start_index, start_offset = index, offset
                if remaining < 0:
                    break
        elif self._since_key:
            start_index, start_offset = self._since_in(files)
        self._queue = files[start_index + 1:]
        self._open_file(files[start_index], start_offset)

    def _since_in(self, files: list[str]) -> tuple[int, int]:
        """(file, offset) where the messages from `since` on begin: files wholly older
        are passed over and the rest found by bisecting (k8sfile.since_start), not read."""
        for index, path in enumerate(files):
            try:
                with open(path, "rb") as f:
                    offset = k8sfile.since_start(f, self._since_key)
                    size = f.seek(0, os.SEEK_END)
            except FileNotFoundError:
                continue
            if offset is None:
                return index, 0  # not in the shape bisecting needs: read it all, filtered
            if offset < size or index == len(files) - 1:
                return index, offset
        return 0, 0

    def _open_file(self, path: str, offset: int) -> None:
        try:
            self._file = open(path, "rb")  # noqa: SIM115 - kept open across batches
        except FileNotFoundError:
            self._file = None
            return
        if offset < 0:
            self._file.seek(0, os.SEEK_END)
        else:
            self._file.seek(offset)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "LogReader":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pieces_at_end(self, path: str) -> int | None:
        """Where the pieces (`P` lines) that end the log begin, when they are of a stream
        and time the query shows: a message without its newline yet. None when the log
        ends with a whole line (a line still being written is not looked at). Pieces that
        the other stream's lines follow are not looked for: that tail then shows one
        message more than asked (dockerd writes such output after those lines)."""
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return None
        with f:
            end = f.seek(0, os.SEEK_END)
            look = min(end, 64 * 1024)
            f.seek(end - look)
            block = f.read(look)
        block = block[:block.rfind(b"\n") + 1]
        lines = block.split(b"\n")[:-1]
        if end > look:
            lines = lines[1:]  # the first may be cut
        start = end - look + len(block)
        found, first_time = None, b""
        for line in reversed(lines):
            parsed = parse_line(line)
            if parsed is None or not parsed[2] or (found is not None and parsed[1] != found):
                break
            found = parsed[1]
            start -= len(line) + 1
            first_time = parsed[0]
        if found is None or found not in self.streams or \
                self._out_of_window(parse_time_nanos(docker_time(first_time))):
            return None
        return start

    def _tail_in(self, path: str, count: int) -> tuple[int, int]:
        """Where the last `count` shown messages of one file start, reading it backwards.

        Returns (offset, count still wanted from older files); the count is -1 once the
        start was found in this file, and the offset -1 means "at the end"."""
        if count == 0:
            return -1, -1
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return 0, count
        with f:
            pos = f.seek(0, os.SEEK_END)
            buf = b""
            seen = 0
            first = True
            while pos > 0:
                step = min(READ_SIZE, pos)
                pos -= step
                f.seek(pos)
                buf = f.read(step) + buf
                # The first line may be cut; keep it for the next block unless at the start.
                cut = buf.find(b"\n") if pos > 0 else -1
                if pos > 0 and cut < 0:
                    continue  # no line starts in this block: read further back
                head = buf[:cut] if pos > 0 else None
                offset = pos + cut + 1
                # The last line here lost its newline to the block after it (the file's own
                # last line keeps one, or is still being written).
                block = buf[cut + 1:] + (b"" if first else b"\n")
                first = False
                fast = k8sfile.tail_start(block, offset, count - seen, self.streams,
                                          self._since_key, self._until_key)
                if fast is not None:
                    if fast[1] < 0:
                        return fast
                    seen += fast[1]
                    buf = head if head is not None else b""
                    continue
                body = buf[cut + 1:].split(b"\n")
                offsets = []
                for line in body:
                    offsets.append((offset, line))
                    offset += len(line) + 1
                for line_offset, line in reversed(offsets):
                    parsed = parse_line(line)
                    if parsed is None or parsed[1] not in self.streams or parsed[2]:
                        continue
                    if self._out_of_window(parse_time_nanos(docker_time(parsed[0]))):
                        continue
                    seen += 1
                    if seen > count:
                        # The message after this one starts the tail; step past this line.
                        return line_offset + len(line) + 1, -1
                buf = head if head is not None else b""
        return 0, count - seen

    def _out_of_window(self, nanos: int) -> bool:
        return bool((self.since and nanos < self.since) or (self.until and nanos > self.until))

    def read_encoded(self, *, framed: bool, timestamps: bool, details: bytes | None = None,
                     max_bytes: int = READ_SIZE) -> bytes | memoryview:
        """Docker's logs output for the messages available now: stdcopy frames when
        `framed` (no TTY), each message after its time when `timestamps`. b"" once nothing
        more is available now (at the end of the log, or past `until`); pieces of a line
        still waiting for their end are not included (see flush_partial)."""
        while True:
            data = self._read_lines(max_bytes)
            if data is None:
                return b""
            if details is not None:  # rare: the line-by-line path
                out: bytes | memoryview = encode_messages(
                    self._messages(data), framed=framed, timestamps=timestamps,
                    details=details)
            else:
                out = self._encode_block(data, framed, timestamps)
            if out or self.done:
                return out

    def _encode_block(self, data: bytes | memoryview, framed: bool,
                      timestamps: bool) -> bytes | memoryview:
        """One block of complete lines as output, through k8sfile where it can."""
        done: list[LogMessage] = []
        if self._pending:
            # A message begun in the block before ends in this one: finish it line by line.
            data = memoryview(data)
            while self._pending and len(data) and not self.done:
                end = bytes(data[:HEAD_LOOK]).find(b"\n")
                end = end if end >= 0 else bytes(data).index(b"\n")
                if (message := self._feed(bytes(data[:end]))) is not None:
                    done.append(message)
                data = data[end + 1:]
            if not len(data) or self.done:
                return encode_messages(done, framed=framed, timestamps=timestamps)
        fast = k8sfile.encode(data, streams=self.streams, framed=framed,
                              timestamps=timestamps, since=self._since_key,
                              until=self._until_key)
        if fast is None:
            done += self._messages(data)
            return encode_messages(done, framed=framed, timestamps=timestamps)
        self.done = fast.past_until
        # Pieces of a line whose end conmon has not written yet wait for the next block
        # (a line past READ_SIZE comes out in pieces of that size, as line by line).
        later = self._messages(memoryview(data)[fast.open_from:]) \
            if fast.open_from < len(data) else []
        if not done and not later:
            return fast.output
        return b"".join((encode_messages(done, framed=framed, timestamps=timestamps),
                         fast.output,
                         encode_messages(later, framed=framed, timestamps=timestamps)))

    def _read_lines(self, max_bytes: int) -> bytes | memoryview | None:
        """The next complete lines (ending with a newline), None when there are none now."""
        while not self.done:
            if self._file is None:
                self._open_file(self.path, 0)
                if self._file is None:
                    return None
            raw = self._file.read(max_bytes)
            self.at_end = len(raw) < max_bytes and not self._queue
            if not raw:
                if self._queue:
                    # This file is done (older rotated file): go on with the next one.
                    self._file.close()
                    self._open_file(self._queue.pop(0), 0)
                    self._carry = b""
                    continue
                self._reopen_if_rotated()
                return None
            data = self._carry + raw if self._carry else raw
            cut = data.rfind(b"\n") + 1
            self._carry = data[cut:]
            if cut:
                return data if cut == len(data) else memoryview(data)[:cut]
        return None

    def read_batch(self, max_bytes: int = 256 * 1024) -> list[LogMessage]:
        """Messages available now, line by line; [] once none is."""
        while (data := self._read_lines(max_bytes)) is not None:
            if out := self._messages(data):
                return out
        return []

    def _messages(self, data: bytes | memoryview) -> list[LogMessage]:
        return [m for m in map(self._feed, bytes(data[:-1]).split(b"\n")) if m is not None]

    def _reopen_if_rotated(self) -> None:
        """Start over when the log was truncated or replaced under us (size limits)."""
        assert self._file is not None
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return
        mine = os.fstat(self._file.fileno())
        if (on_disk.st_ino, on_disk.st_dev) != (mine.st_ino, mine.st_dev):
            # Rotated: the new file exists only once conmon reopened, so the old one is
            # final; read what it got after our last look before moving on.
            if self._file.read(1):
                self._file.seek(-1, os.SEEK_CUR)
                return
            self._file.close()
            self._file = open(self.path, "rb")  # noqa: SIM115 - kept open across batches
            self._carry = b""
        elif on_disk.st_size < self._file.tell():
            self._file.seek(0)
            self._carry = b""

    def _feed(self, line: bytes) -> LogMessage | None:
        parsed = parse_line(line)
        if parsed is None:
            return None
        ts, stream, partial, text = parsed
        if stream not in self.streams:
            return None
        start_ts, pieces = self._pending.pop(stream, (ts, b""))
        pieces += text
        if partial:
            self._pending[stream] = (start_ts, pieces)
            if len(pieces) < 1024 * 1024:
                return None
            # A huge line without a newline: hand it out in pieces, as Docker splits at 16K.
            self._pending.pop(stream)
            complete = pieces
        else:
            complete = pieces + b"\n"
        when = docker_time(start_ts)
        nanos = parse_time_nanos(when)
        if self.until and nanos > self.until:
            self.done = True
            return None
        if self.since and nanos < self.since:
            return None
        return LogMessage(when, stream, complete, nanos)

    def flush_partial(self) -> list[LogMessage]:
        """Pieces still waiting for their end: output that stopped without a newline."""
        out = []
        for stream, (ts, pieces) in sorted(self._pending.items()):
            when = docker_time(ts)
            nanos = parse_time_nanos(when)
            if pieces and not self._out_of_window(nanos):
                out.append(LogMessage(when, stream, pieces, nanos))
        self._pending.clear()
        return out


def encode_messages(messages: list[LogMessage], *, framed: bool, timestamps: bool,
                    details: bytes | None = None) -> bytes:
    """Messages as the logs API sends them (the line-by-line path); `details` goes before
    each message's text (after its time), as `docker logs --details` shows them."""
    out = bytearray()
    for message in messages:
        data = message.data
        if details is not None:
            data = details + data
        if timestamps:
            data = message.time.encode() + b" " + data
        out += frame(message.stream, data) if framed else data
    return bytes(out)


def details_prefix(config: dict[str, Any], log_config: dict[str, Any] | None) -> bytes:
    """What `docker logs --details` puts before each message: the attributes the json-file
    options `labels`, `labels-regex`, `env` and `env-regex` pick from the container's
    labels and environment, as dockerd (daemon/logger/loginfo.go ExtraAttributes), sorted
    by key, query-escaped, joined by commas, and a space (a lone space when there are
    none)."""
    opts = (log_config or {}).get("Config") or {}
    labels: dict[str, str] = config.get("Labels") or {}
    env = dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e)
    attrs: dict[str, str] = {}
    for names, source in ((opts.get("labels"), labels), (opts.get("env"), env)):
        for name in str(names or "").split(","):
            if name in source:
                attrs[name] = source[name]
    for pattern, source in ((opts.get("labels-regex"), labels), (opts.get("env-regex"), env)):
        if pattern:  # checked at create (parse_log_options)
            wanted = re.compile(str(pattern))
            attrs.update({k: v for k, v in source.items() if wanted.search(k)})
    pairs = (f"{quote_plus(k)}={quote_plus(v)}" for k, v in sorted(attrs.items()))
    return ",".join(pairs).encode() + b" "


def read_all(reader: LogReader) -> Iterator[LogMessage]:
    """Every message the reader sees now (blocking generator)."""
    while True:
        batch = reader.read_batch()
        if not batch:
            break
        yield from batch
    yield from reader.flush_partial()
