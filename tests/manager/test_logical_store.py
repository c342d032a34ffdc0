"""LogicalStore.update with the cluster view's watched copy as its first guess: one swap when
the copy is current, etcd's own record when it is behind (never a change lost or skipped)."""

from __future__ import annotations

from typing import Any

from manager.logical import LogicalStore
from proto.keys import Keys
from proto.kv import KV
from proto.logical import PLACED
from proto.records_pb2 import LogicalContainer

SID = "b" * 64


async def test_update_uses_the_guess_and_falls_back_to_etcd(etcd: Any) -> None:  # noqa: ANN401
    kv = await KV.connect([etcd.endpoint])
    try:
        keys = Keys("/t")
        plain = LogicalStore(kv, keys)
        rec = LogicalContainer(swarm_id=SID, state=PLACED, container_id="c1", name="web")
        assert await plain.swap(rec, 0)
        entry = await kv.get(keys.logical(SID))
        assert entry is not None
        current = (LogicalContainer.FromString(entry.value), entry.mod_revision)

        gets = 0
        real_get = LogicalStore.get

        async def counting_get(self: LogicalStore, swarm_id: str) -> Any:  # noqa: ANN401
            nonlocal gets
            gets += 1
            return await real_get(self, swarm_id)

        store = LogicalStore(kv, keys, known=lambda sid: _copy(current))
        store.get = counting_get.__get__(store)  # type: ignore[method-assign]
        await store.set_start(SID, "c1", True)
        assert gets == 0  # the guess was current: one swap, no read
        found = await plain.get(SID)
        assert found is not None and found[0].start

        # The guess is behind (start still False there, an old revision): etcd decides.
        await store.set_start(SID, "c1", False)
        assert gets == 1
        found = await plain.get(SID)
        assert found is not None and not found[0].start

        # The guess says nothing is to change, but etcd's record does: it is still written.
        stale_true = _copy((LogicalContainer(swarm_id=SID, start=True, container_id="c1"), 1))
        store.known = lambda sid: stale_true
        await store.set_start(SID, "c1", True)
        found = await plain.get(SID)
        assert found is not None and found[0].start
    finally:
        await kv.close()


def _copy(found: tuple[LogicalContainer, int]) -> tuple[LogicalContainer, int]:
    rec = LogicalContainer()
    rec.CopyFrom(found[0])
    return rec, found[1]


async def test_swap_all_batches_and_only_changed_records_lose(etcd: Any) -> None:  # noqa: ANN401
    """A mass failover's marks: many records a transaction; a batch with one changed record is
    done again one by one, so only that one loses; a large record starts a batch of its own."""
    from manager import logical

    kv = await KV.connect([etcd.endpoint])
    try:
        keys = Keys("/swap-all")
        store = LogicalStore(kv, keys)
        recs = [LogicalContainer(swarm_id=f"{i:064x}", state=PLACED) for i in range(150)]
        recs[7].create_json = b"x" * (logical.SWAP_BATCH_BYTES - 10)  # alone in its batch
        revisions = [await store.swap(r, 0) for r in recs]
        assert all(revisions)
        before = await _revision(kv)
        # Someone else changes record 100 meanwhile.
        assert await store.swap(_copy((recs[100], revisions[100]))[0], revisions[100])
        for r in recs:
            r.state = "failed"
        written = await store.swap_all(list(zip(recs, revisions, strict=True)))
        assert written[100] == 0 and all(written[i] for i in range(150) if i != 100)
        # 150 records: batches of at most SWAP_BATCH, the large one alone, the changed
        # record's batch again one by one: far fewer transactions than records.
        assert await _revision(kv) - before - 1 < 150 // 2
        for i in (0, 7, 149):
            found = await store.get(recs[i].swarm_id)
            assert found is not None and found[0].state == "failed"
        found = await store.get(recs[100].swarm_id)
        assert found is not None and found[0].state == PLACED
    finally:
        await kv.close()


async def _revision(kv: KV) -> int:
    return (await kv.snapshot("/swap-all/nothing-here/"))[1]
