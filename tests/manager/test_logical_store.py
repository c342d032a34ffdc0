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
