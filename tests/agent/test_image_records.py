"""agent/image_records.py against a real etcd: the record is the node's `docker images` rows,
under the lease, one write per burst of image events, written before `written` returns."""

from __future__ import annotations

import json
from typing import Any

from agent.events import EventBus
from agent.image_records import ImagesReporter
from proto.keys import Keys
from proto.kv import KV
from proto.records_pb2 import NodeImages
from runtime import image_views
from runtime.hollow_images import BUSYBOX_ID, HollowImages

KEYS = Keys("/t")


class CountingKV(KV):
    puts = 0

    async def put(self, key: str, value: bytes, lease: int | None = None, **kw: Any) -> int:
        type(self).puts += 1
        return await super().put(key, value, lease=lease, **kw)


async def test_record_follows_image_events_under_the_lease(etcd: Any) -> None:  # noqa: ANN401
    kv = await CountingKV.connect([etcd.endpoint])
    lease = 0
    store = HollowImages()
    bus = EventBus()
    reporter = ImagesReporter(kv, KEYS, "n1", store, lease=lambda: lease)
    bus.listeners.append(reporter.on_event)
    await reporter.start()
    try:
        since = reporter.generation
        reporter.request_resync()
        await reporter.written(since, timeout_s=0.3)  # no lease yet: nothing written, bounded
        assert await kv.get(KEYS.images("n1")) is None

        lease = await kv.lease_grant(30)
        since = reporter.generation
        reporter.request_resync()  # what a registration does
        await reporter.written(since)
        entry = await kv.get(KEYS.images("n1"))
        assert entry is not None and entry.lease == lease
        record = NodeImages()
        record.ParseFromString(entry.value)
        rows = json.loads(record.images_json)
        assert record.node_id == "n1" and rows == image_views.list_images(store)
        assert rows[0]["Id"] == BUSYBOX_ID and rows[0]["RepoTags"] == ["busybox:latest"]

        before, since = CountingKV.puts, reporter.generation
        for n in range(5):  # a load of five images: one write
            bus.publish("image", "load", BUSYBOX_ID, {"name": f"x:{n}"})
        bus.publish("image", "save", BUSYBOX_ID, {"name": "busybox"})  # changes nothing
        bus.publish("container", "start", "c" * 64, {})
        await reporter.written(since)
        assert CountingKV.puts - before == 1
        since = reporter.generation
        bus.publish("container", "commit", "c" * 64, {})
        await reporter.written(since)
        assert CountingKV.puts - before == 2

        await kv.lease_revoke(lease)  # the node is gone: so is its record
        assert await kv.get(KEYS.images("n1")) is None
    finally:
        await reporter.stop()
        await kv.close()
