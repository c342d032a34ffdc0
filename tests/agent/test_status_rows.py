"""Unit tests: the status records carry each container's ps row (agent/status.py) and a
lifecycle call can wait for its record (StatusReporter.flush), on a hollow runtime and an
in-memory KV whose writes the test holds back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agent.status import StatusReporter
from proto.keys import Keys
from proto.records_pb2 import ContainerStatus
from runtime import views
from runtime.hollow import HollowRuntime

KEYS = Keys("/flotilla")
NODE = "n" * 64


class HeldKV:
    """Only what the reporter uses; `put` waits while `hold` is clear."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.hold = asyncio.Event()
        self.hold.set()

    async def put(self, key: str, value: bytes, **_: Any) -> None:
        await self.hold.wait()
        self.data[key] = value

    async def delete(self, key: str) -> bool:
        return self.data.pop(key, None) is not None

    async def get_prefix(self, prefix: str) -> list[Any]:
        return []


def _record(kv: HeldKV, cid: str) -> ContainerStatus:
    st = ContainerStatus()
    st.ParseFromString(kv.data[KEYS.status(NODE, cid)])
    return st


async def test_flush_waits_for_the_write_and_the_row_follows_each_change() -> None:
    kv = HeldKV()
    reporter: StatusReporter | None = None
    rt = HollowRuntime("hollow-0", events=lambda t, a, i, attrs: reporter.notify(t, a, i, attrs))  # type: ignore[union-attr]
    reporter = StatusReporter(kv, KEYS, NODE, rt)  # type: ignore[arg-type]
    await reporter.start()
    try:
        await reporter.flush()
        rec = await rt.create({"Image": "busybox", "Cmd": ["sleep", "1000"]}, "web")
        kv.hold.clear()
        await rt.start(rec.id)
        flushed = asyncio.ensure_future(reporter.flush())
        await asyncio.sleep(0.05)
        assert not flushed.done()  # its write is held back
        kv.hold.set()
        await flushed
        st = _record(kv, rec.id)
        row = json.loads(st.ps_row_json)
        assert st.state == "running" and row["State"] == "running"
        assert row["Status"] == ""  # written by the reader at its time
        expected = views.summary(rt, rec)
        assert list(row) == list(expected)
        assert {k: v for k, v in row.items() if k != "Status"} == {
            k: v for k, v in expected.items() if k != "Status"
        }
        await rt.rename(rec.id, "front")
        await reporter.flush()
        assert json.loads(_record(kv, rec.id).ps_row_json)["Names"] == ["/front"]
        # A network event names the network; the container's record is rewritten.
        before = kv.data[KEYS.status(NODE, rec.id)]
        reporter.notify("network", "connect", "f" * 64, {"container": rec.id, "name": "net"})
        await reporter.flush()
        assert kv.data[KEYS.status(NODE, rec.id)] != before  # updated_at_ns moved at least
        await rt.stop(rec.id, 0)
        await reporter.flush()
        assert json.loads(_record(kv, rec.id).ps_row_json)["State"] == "exited"
    finally:
        await reporter.stop()


async def test_flush_gives_up_after_its_timeout() -> None:
    kv = HeldKV()
    rt = HollowRuntime("hollow-0")
    reporter = StatusReporter(kv, KEYS, NODE, rt)  # type: ignore[arg-type]
    await reporter.start()
    try:
        await reporter.flush()
        kv.hold.clear()
        reporter.notify("container", "start", "c" * 64)
        await asyncio.wait_for(reporter.flush(timeout=0.05), 5)  # returns; the write is held
    finally:
        kv.hold.set()
        await reporter.stop()
