"""proto/kv.py against a real etcd."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from deploy.etcd import EtcdServer, free_port
from proto.keys import Keys
from proto.kv import (
    KV,
    Absent,
    KVError,
    ModRevisionIs,
    Put,
    ValueIs,
    WatchEvent,
    parse_discovery,
)

pytestmark = pytest.mark.timeout(60)


def test_parse_discovery() -> None:
    assert parse_discovery("etcd://10.0.0.1:2379,10.0.0.2:2379/flt") == (
        ["10.0.0.1:2379", "10.0.0.2:2379"],
        "/flt",
    )
    assert parse_discovery("etcd://127.0.0.1:2379") == (["127.0.0.1:2379"], "/flotilla")
    assert parse_discovery("etcd://localhost/") == (["localhost:2379"], "/flotilla")
    with pytest.raises(ValueError):
        parse_discovery("http://127.0.0.1:2379/x")


def test_keys() -> None:
    k = Keys("/flt/")
    assert k.node("N1") == "/flt/nodes/N1"
    assert k.status("N1", "c1") == "/flt/status/N1/c1"
    assert k.status_prefix("N1") == "/flt/status/N1/"
    assert k.node_id(k.node("A:B")) == "A:B"
    assert k.status_ids(k.status("N", "c").encode()) == ("N", "c")
    assert k.endpoint_ids(k.endpoint("net", "10.0.0.2")) == ("net", "10.0.0.2")
    assert Keys().leader() == "/flotilla/leader"
    with pytest.raises(ValueError):
        k.node("a/b")
    with pytest.raises(ValueError):
        k.node_id("/flt/containers/x")


async def test_round_trip(kv: KV) -> None:
    rev = await kv.put("/t/a", b"1")
    entry = await kv.get("/t/a")
    assert entry is not None and entry.value == b"1" and entry.mod_revision == rev
    await kv.put("/t/b", b"2")
    await kv.put("/tx", b"sibling")
    assert [e.key for e in await kv.get_prefix("/t/")] == ["/t/a", "/t/b"]

    assert await kv.create("/t/c", b"3")
    assert not await kv.create("/t/c", b"again")
    c = await kv.get("/t/c")
    assert c is not None and c.value == b"3"
    assert not await kv.compare_and_swap("/t/c", b"x", c.mod_revision + 100)
    assert await kv.compare_and_swap("/t/c", b"4", c.mod_revision)
    assert (await kv.get("/t/c")).value == b"4"  # type: ignore[union-attr]
    assert not await kv.compare_and_delete("/t/c", c.mod_revision)

    assert await kv.delete("/t/a")
    assert not await kv.delete("/t/a")
    assert await kv.get("/t/a") is None
    assert await kv.delete_prefix("/t/") == 2
    assert await kv.get_prefix("/t/") == []
    assert (await kv.get("/tx")) is not None


async def test_txn_is_all_or_nothing(kv: KV) -> None:
    rev = await kv.txn([Absent("/x/a"), Absent("/x/b")], [Put("/x/a", b"1"), Put("/x/b", b"2")])
    a, b = await kv.get("/x/a"), await kv.get("/x/b")
    assert rev > 0 and a is not None and b is not None
    assert a.mod_revision == b.mod_revision == rev  # one write, one revision

    # One compare fails: nothing is written, nothing deleted.
    assert await kv.txn([Absent("/x/c"), Absent("/x/a")], [Put("/x/c", b"3")], ["/x/b"]) == 0
    assert await kv.get("/x/c") is None and await kv.get("/x/b") is not None
    assert await kv.txn([ModRevisionIs("/x/a", rev + 100)], [Put("/x/c", b"3")]) == 0
    assert await kv.txn([ValueIs("/x/a", b"other")], [Put("/x/c", b"3")]) == 0
    assert await kv.txn([ValueIs("/x/missing", b"")], [Put("/x/c", b"3")]) == 0
    assert await kv.get("/x/c") is None

    # Every compare holds: the puts and the deletes happen together.
    rev2 = await kv.txn(
        [ModRevisionIs("/x/a", rev), ValueIs("/x/b", b"2"), ModRevisionIs("/x/c", 0)],
        [Put("/x/a", b"10"), Put("/x/c", b"30")],
        ["/x/b"],
    )
    assert rev2 > rev
    assert [(e.key, e.value) for e in await kv.get_prefix("/x/")] == [
        ("/x/a", b"10"),
        ("/x/c", b"30"),
    ]
    # Deletes alone, and a lease on a put.
    lease = await kv.lease_grant(30)
    assert await kv.txn([ValueIs("/x/c", b"30")], [Put("/x/l", b"v", lease)], ["/x/a", "/x/c"])
    assert [e.key for e in await kv.get_prefix("/x/")] == ["/x/l"]
    assert (await kv.get("/x/l")).lease == lease  # type: ignore[union-attr]
    await kv.lease_revoke(lease)
    assert await kv.get("/x/l") is None
    # The one-key helpers are this transaction: create == absent, CAS 0 == absent.
    assert await kv.compare_and_swap("/x/n", b"1", 0)
    assert not await kv.compare_and_swap("/x/n", b"2", 0)
    n = await kv.get("/x/n")
    assert n is not None and await kv.compare_and_delete("/x/n", n.mod_revision)


async def test_failover_to_a_live_endpoint(etcd: EtcdServer) -> None:
    client = await KV.connect([f"127.0.0.1:{free_port()}", etcd.endpoint], timeout=3.0)
    try:
        for i in range(5):
            await client.put(f"/f/{i}", b"x")
        assert len(await client.get_prefix("/f/")) == 5
    finally:
        await client.close()


async def test_errors_when_etcd_is_down(etcd: EtcdServer, kv: KV) -> None:
    etcd.stop()
    with pytest.raises(KVError):
        await kv.put("/down", b"x")
    etcd.start()
    await kv.put("/down", b"x")


async def test_lease_expiry(kv: KV) -> None:
    lease = await kv.lease_grant(2)
    await kv.put("/l/k", b"v", lease=lease)
    assert (await kv.get("/l/k")).lease == lease  # type: ignore[union-attr]
    for _ in range(3):  # renewals keep it past its TTL
        await asyncio.sleep(1)
        assert await kv.lease_keepalive_once(lease) > 0
    assert await kv.get("/l/k") is not None
    await asyncio.sleep(3.5)
    assert await kv.get("/l/k") is None
    assert await kv.lease_keepalive_once(lease) == 0
    await kv.lease_revoke(lease)  # revoking a dead lease is not an error

    lease2 = await kv.lease_grant(30)
    await kv.put("/l/k2", b"v", lease=lease2)
    await kv.lease_revoke(lease2)
    assert await kv.get("/l/k2") is None


async def _next(it: AsyncIterator[WatchEvent]) -> WatchEvent:
    return await asyncio.wait_for(anext(it), 10)


async def test_watch_resumes_after_etcd_restart(etcd: EtcdServer, kv: KV) -> None:
    _, rev = await kv.snapshot("/w/")
    it = kv.watch_prefix("/w/", rev + 1)
    try:
        await kv.put("/w/a", b"1")
        ev = await _next(it)
        assert (ev.kind, ev.key, ev.value) == ("put", "/w/a", b"1")
        etcd.stop()
        pending = asyncio.ensure_future(_next(it))
        await asyncio.sleep(1.5)  # the watch notices and keeps retrying
        etcd.start()
        await kv.put("/w/b", b"2")
        await kv.delete("/w/a")
        ev = await pending
        assert (ev.kind, ev.key) == ("put", "/w/b")  # /w/a is not delivered twice
        ev = await _next(it)
        assert (ev.kind, ev.key) == ("delete", "/w/a")
    finally:
        await it.aclose()  # type: ignore[attr-defined]


async def test_watch_relists_after_compaction(kv: KV) -> None:
    await kv.put("/c/old", b"1")
    _, rev = await kv.snapshot("/c/")
    await kv.put("/c/new", b"2")
    await kv.delete("/c/old")
    _, now = await kv.snapshot("/c/")
    await kv.compact(now)
    it = kv.watch_prefix("/c/", rev, known=["/c/old"])
    try:
        events = [await _next(it), await _next(it)]
        assert [(e.kind, e.key) for e in events] == [("delete", "/c/old"), ("put", "/c/new")]
        await kv.put("/c/later", b"3")
        ev = await _next(it)
        assert (ev.kind, ev.key) == ("put", "/c/later")
    finally:
        await it.aclose()  # type: ignore[attr-defined]


async def test_a_prefix_larger_than_a_grpc_message_is_read_whole_at_one_revision(
    kv: KV,
) -> None:
    # 1,200 values of 8 KiB: ~10 MB, over gRPC's default 4 MiB for one received message
    # (a manager with 30,000 status records could not start before paging).
    value = b"x" * 8192
    for batch in range(0, 1200, 100):
        await asyncio.gather(*(kv.put(f"/big/{i:05d}", value) for i in range(batch, batch + 100)))
    last = await kv.put("/big/01199", value)
    entries, revision = await kv.snapshot("/big/")  # three pages of RANGE_PAGE_KEYS
    assert [e.key for e in entries] == [f"/big/{i:05d}" for i in range(1200)]
    assert all(e.value == value for e in entries)
    assert revision == last  # the store's revision when read: a watch resumes from + 1
    assert await kv.get_prefix("/big/00001") == [entries[1]]
