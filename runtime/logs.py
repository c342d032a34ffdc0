"""Reading the json-file logs the shim writes (`<id>-json.log`, rotated `.1`, `.2`, ...).

One JSON object per line: `{"log": "text\\n", "stream": "stdout", "time": "<RFC3339Nano>"}`.
`.1` is the newest rotated file, so history reads `.N` ... `.1`, then the live file.
"""

from __future__ import annotations

import asyncio
import gzip
import inspect
import json
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

# How often follow_logs looks for new lines; the shim writes a line per container write.
POLL_INTERVAL = 0.05

StopSignal = asyncio.Event | Callable[[], bool | Awaitable[bool]]


@dataclass
class LogEntry:
    stream: str  # "stdout" or "stderr"
    data: bytes
    time: int  # nanoseconds since the epoch


# ---------------------------------------------------------------- formats


def parse_timestamp(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time with 0-9 fraction digits and any offset."""
    date_part, frac = text[:19], ""
    rest = text[19:]
    if rest.startswith("."):
        digits = len(rest) - len(rest[1:].lstrip("0123456789"))
        frac, rest = rest[1:digits], rest[digits:]
    offset = 0
    if rest not in ("Z", "z", ""):
        sign = -1 if rest[0] == "-" else 1
        hours, _, minutes = rest[1:].partition(":")
        offset = sign * (int(hours) * 3600 + int(minutes or 0) * 60)
    secs = int(datetime.strptime(date_part, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
    return (secs - offset) * 1_000_000_000 + int(frac.ljust(9, "0")[:9] or 0)


def decode_line(line: bytes) -> LogEntry | None:
    """One json-file line; None for a torn or corrupt line (Docker skips those too)."""
    try:
        obj = json.loads(line)
        return LogEntry(
            stream=obj.get("stream", "stdout"),
            data=obj.get("log", "").encode("utf-8", "surrogateescape"),
            time=parse_timestamp(obj["time"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None


# ---------------------------------------------------------------- reading history


def rotated_files(path: str) -> list[str]:
    """Existing rotated files oldest first (`.N`, ..., `.1`; gzipped ones included)."""
    found: list[tuple[int, str]] = []
    directory, base = os.path.split(path)
    try:
        names = os.listdir(directory or ".")
    except FileNotFoundError:
        return []
    for name in names:
        if not name.startswith(base + "."):
            continue
        suffix = name[len(base) + 1 :].removesuffix(".gz")
        if suffix.isdigit():
            found.append((int(suffix), os.path.join(directory, name)))
    return [p for _, p in sorted(found, reverse=True)]


def _file_lines(path: str) -> Iterator[bytes]:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    yield line
    except FileNotFoundError:
        return


def _all_lines(path: str, live_lines: list[bytes] | None = None) -> Iterator[bytes]:
    """Rotated files then the live one (or `live_lines`, already read from the live file)."""
    for p in rotated_files(path):
        yield from _file_lines(p)
    if live_lines is None:
        yield from _file_lines(path)
    else:
        yield from live_lines


def _tail(lines: Iterable[bytes], tail: int | None) -> Iterable[bytes]:
    if tail is None or tail < 0:
        return lines
    if tail == 0:
        return []
    return deque(lines, maxlen=tail)


def _since_ns(since: float | None) -> int:
    return int(since * 1_000_000_000) if since else 0


def _wanted(entry: LogEntry, stdout: bool, stderr: bool) -> bool:
    return (entry.stream == "stdout" and stdout) or (entry.stream == "stderr" and stderr)


def read_logs(
    path: str,
    *,
    stdout: bool = True,
    stderr: bool = True,
    tail: int | None = None,
    since: float | None = None,
    until: float | None = None,
) -> list[LogEntry]:
    """The logged lines, oldest first, filtered like `GET /containers/{id}/logs`.

    As in dockerd, `tail` counts lines of both streams before the since/until and stream filters.
    `since`/`until` are unix seconds (0 or None = unbounded); `tail` None or negative = all.
    """
    entries, _ = _history(path, stdout, stderr, tail, since, until)
    return entries


def _history(
    path: str,
    stdout: bool,
    stderr: bool,
    tail: int | None,
    since: float | None,
    until: float | None,
    live_lines: list[bytes] | None = None,
) -> tuple[list[LogEntry], bool]:
    """Entries plus whether `until` was passed (then following must not continue)."""
    since_ns, until_ns = _since_ns(since), _since_ns(until)
    out: list[LogEntry] = []
    for line in _tail(_all_lines(path, live_lines), tail):
        entry = decode_line(line)
        if entry is None or entry.time < since_ns:
            continue
        if until_ns and entry.time > until_ns:
            return out, True
        if _wanted(entry, stdout, stderr):
            out.append(entry)
    return out, False


# ---------------------------------------------------------------- following


class _LiveFile:
    """The live log file, reopened when the shim rotates it away."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.f: BinaryIO | None = None
        self.ino = -1
        self.partial = b""

    def open(self) -> None:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - kept open across polls
        except FileNotFoundError:
            return
        self.f = f
        self.ino = os.fstat(f.fileno()).st_ino
        self.partial = b""

    def read_new(self) -> list[bytes]:
        """Complete lines appended since the last call, across a rotation if one happened."""
        # Check for rotation first: once renamed, the old file gets no more writes, so draining it
        # afterwards cannot miss its last lines.
        rotated = self._rotated()
        lines = self.drain()
        if rotated:
            self.close()
            self.open()
            lines += self.drain()
        return lines

    def drain(self) -> list[bytes]:
        if self.f is None:
            return []
        data = self.partial + self.f.read()
        *complete, self.partial = data.split(b"\n")
        return [line + b"\n" for line in complete]

    def _rotated(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self.ino
        except FileNotFoundError:
            return False

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


async def _stopped(stop: StopSignal) -> bool:
    if isinstance(stop, asyncio.Event):
        return stop.is_set()
    result = stop()
    if inspect.isawaitable(result):
        result = await result
    return bool(result)


async def follow_logs(
    path: str,
    *,
    stdout: bool = True,
    stderr: bool = True,
    tail: int | None = None,
    since: float | None = None,
    until: float | None = None,
    stop: StopSignal,
) -> AsyncIterator[LogEntry]:
    """`docker logs -f`: history, then new lines as the shim appends them.

    Ends once `stop` is set (or returns True; the container exited) and everything written before
    that has been yielded, or once a line is past `until`.
    """
    live = _LiveFile(path)
    # The live file's existing lines are read through the handle we keep following, so nothing
    # written between reading history and following is lost or repeated.
    live.open()
    try:
        first = live.drain()
        entries, past_until = _history(path, stdout, stderr, tail, since, until, first)
        for entry in entries:
            yield entry
        if past_until:
            return
        since_ns, until_ns = _since_ns(since), _since_ns(until)
        while True:
            stopping = await _stopped(stop)
            if live.f is None:
                live.open()
            for line in live.read_new():
                entry = decode_line(line)
                if entry is None or entry.time < since_ns:
                    continue
                if until_ns and entry.time > until_ns:
                    return
                if _wanted(entry, stdout, stderr):
                    yield entry
            if stopping or (until_ns and time.time_ns() > until_ns):
                return
            await asyncio.sleep(POLL_INTERVAL)
    finally:
        live.close()
