"""runtime.logs on hand-written json-file logs (the shim format, docs/shim-protocol.md)."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from proto.docker.streams import format_timestamp, frame
from runtime import logs

GOLDEN = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "golden",
    "container-logs-multiplexed.bin",
)
BASE = 1_795_000_000  # 2026-11-18, whole seconds since the epoch


def _line(text: str, stream: str = "stdout", sec: int = 0, frac: str = "123456789") -> str:
    ts = format_timestamp((BASE + sec) * 10**9).replace(".000000000", f".{frac}")
    if not frac:
        ts = ts.replace(".000000000", "")
    return json.dumps({"log": text, "stream": stream, "time": ts}) + "\n"


def _write(path, lines: list[str], mode: str = "a") -> None:
    with open(path, mode) as f:
        f.write("".join(lines))


@pytest.fixture
def log_path(tmp_path):
    return str(tmp_path / "abc-json.log")


# ---------------------------------------------------------------- formats


def test_frame_matches_dockerd_golden():
    with open(GOLDEN, "rb") as f:
        expected = f.read()
    ours = frame("stderr", b"err\n") + frame("stdout", b"out\n")
    assert ours[:8] == bytes([2, 0, 0, 0, 0, 0, 0, 4])
    assert ours == expected


def test_timestamps():
    ns = 1_795_000_000 * 10**9 + 120_000_000
    assert format_timestamp(ns) == "2026-11-18T11:06:40.120000000Z"
    assert logs.parse_timestamp("2026-11-18T11:06:40.12Z") == ns
    assert logs.parse_timestamp("2026-11-18T11:06:40.120000000Z") == ns
    assert logs.parse_timestamp("2026-11-18T12:06:40.12+01:00") == ns
    assert logs.parse_timestamp("2026-11-18T11:06:40Z") == ns - 120_000_000


# ---------------------------------------------------------------- read_logs


def test_read_across_rotation_with_filters(log_path):
    _write(log_path + ".2", [_line("one\n", sec=1), _line("err1\n", "stderr", sec=2)])
    _write(log_path + ".1", [_line("two\n", sec=3)])
    _write(log_path, [_line("three\n", sec=4, frac=""), _line("err2\n", "stderr", sec=5)])
    got = logs.read_logs(log_path)
    assert [e.data for e in got] == [b"one\n", b"err1\n", b"two\n", b"three\n", b"err2\n"]
    assert got[0].stream == "stdout" and got[1].stream == "stderr"
    assert got[3].time == (BASE + 4) * 10**9
    only_err = logs.read_logs(log_path, stdout=False)
    assert [e.data for e in only_err] == [b"err1\n", b"err2\n"]
    assert [e.data for e in logs.read_logs(log_path, tail=2)] == [b"three\n", b"err2\n"]
    assert logs.read_logs(log_path, tail=0) == []
    # tail counts both streams before the stream filter, as dockerd does
    assert [e.data for e in logs.read_logs(log_path, tail=2, stderr=False)] == [b"three\n"]
    since = logs.read_logs(log_path, since=BASE + 3, until=BASE + 4.5)
    assert [e.data for e in since] == [b"two\n", b"three\n"]


def test_read_skips_torn_lines_and_missing_file(log_path):
    assert logs.read_logs(log_path) == []
    _write(log_path, [_line("ok\n"), "{not json\n", '{"log":"half'])
    assert [e.data for e in logs.read_logs(log_path)] == [b"ok\n"]


def test_partial_messages_are_separate_entries(log_path):
    _write(log_path, [_line("x" * 16384), _line("tail\n")])
    got = logs.read_logs(log_path)
    assert [len(e.data) for e in got] == [16384, 5]


# ---------------------------------------------------------------- follow_logs


async def _collect(agen, into: list[bytes]) -> None:
    async for entry in agen:
        into.append(entry.data)


async def test_follow_new_lines_rotation_and_stop(log_path):
    _write(log_path, [_line("old1\n", sec=1), _line("old2\n", sec=2)])
    stop = asyncio.Event()
    got: list[bytes] = []
    task = asyncio.create_task(_collect(logs.follow_logs(log_path, tail=1, stop=stop), got))
    await asyncio.sleep(0.15)
    assert got == [b"old2\n"]
    # A line written in two pieces is only delivered once complete.
    with open(log_path, "a") as f:
        f.write(_line("new1\n", sec=3)[:20])
    await asyncio.sleep(0.15)
    assert got == [b"old2\n"]
    with open(log_path, "a") as f:
        f.write(_line("new1\n", sec=3)[20:])
    await asyncio.sleep(0.15)
    assert got == [b"old2\n", b"new1\n"]
    # Rotate like the shim: last line into the old file, rename, new file.
    _write(log_path, [_line("before-rotate\n", sec=4)])
    os.rename(log_path, log_path + ".1")
    _write(log_path, [_line("after-rotate\n", sec=5)], mode="w")
    await asyncio.sleep(0.2)
    # Container exits: lines written just before stop are still delivered.
    _write(log_path, [_line("last\n", "stderr", sec=6)])
    stop.set()
    await asyncio.wait_for(task, 2)
    assert got == [b"old2\n", b"new1\n", b"before-rotate\n", b"after-rotate\n", b"last\n"]


async def test_follow_file_created_later_and_callable_stop(log_path):
    done = False
    got: list[bytes] = []
    agen = logs.follow_logs(log_path, stderr=False, stop=lambda: done)
    task = asyncio.create_task(_collect(agen, got))
    await asyncio.sleep(0.1)
    _write(log_path, [_line("hello\n", sec=1), _line("skip\n", "stderr", sec=2)])
    await asyncio.sleep(0.15)
    done = True
    await asyncio.wait_for(task, 2)
    assert got == [b"hello\n"]


async def test_follow_until_ends_stream(log_path):
    _write(log_path, [_line("a\n", sec=1), _line("b\n", sec=10)])
    got: list[bytes] = []
    agen = logs.follow_logs(log_path, until=BASE + 5, stop=asyncio.Event())
    await asyncio.wait_for(_collect(agen, got), 2)
    assert got == [b"a\n"]
