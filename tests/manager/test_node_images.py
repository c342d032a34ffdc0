"""manager/node_images.py on fake watch events, and the shared list filters (proto/image_list.py)
on rows as nodes publish them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from manager.node_images import NodeImages, merge_rows
from proto.docker.errors import InvalidParameter
from proto.image_list import filter_listed
from proto.keys import Keys
from proto.kv import Entry, KVError, WatchEvent
from proto.records_pb2 import NodeImages as NodeImagesRecord

KEYS = Keys("/t")
BUSYBOX = {
    "Containers": -1,
    "Created": 100,
    "Id": "sha256:" + "b" * 64,
    "Labels": None,
    "ParentId": "",
    "RepoDigests": None,
    "RepoTags": ["busybox:latest"],
    "SharedSize": -1,
    "Size": 10,
    "VirtualSize": 10,
}
APP = {**BUSYBOX, "Id": "sha256:" + "a" * 64, "Created": 200, "Labels": {"tier": "web"}}
APP["RepoTags"] = ["app:1", "registry.example/app:1"]
DANGLING = {**BUSYBOX, "Id": "sha256:" + "d" * 64, "Created": 50}
DANGLING.update(RepoTags=["<none>:<none>"], RepoDigests=["<none>@<none>"])


class FakeKV:
    def __init__(self, latest: int = 0, fail: bool = False) -> None:
        self.latest = latest
        self.fail = fail

    async def latest_revision(self, prefix: str) -> int:
        assert prefix == KEYS.images_prefix()
        if self.fail:
            raise KVError("etcd away")
        return self.latest


def put(node_id: str, rows: list[dict[str, Any]], revision: int) -> WatchEvent:
    record = NodeImagesRecord(node_id=node_id, images_json=json.dumps(rows).encode())
    return WatchEvent("put", KEYS.images(node_id), record.SerializeToString(), revision)


def view(kv: FakeKV | None = None) -> NodeImages:
    return NodeImages(kv or FakeKV(), KEYS)  # type: ignore[arg-type]


def test_puts_and_deletes_follow_the_records() -> None:
    images = view()
    first = put("n1", [BUSYBOX], 3)
    images.load([Entry(first.key, first.value, 3, 3, 1)], 7)
    assert images.revision == 7
    assert images.names.get("n1", set()) == {BUSYBOX["Id"], "busybox:latest"}
    images.apply(put("n2", [APP, BUSYBOX], 8))
    assert images.count(["n1", "n2"]) == 3
    assert images.count(["n2"]) == 2
    images.apply(put("n1", [], 9))  # rmi busybox on n1
    assert images.names.get("n1", set()) == set() and images.count(["n1"]) == 0
    images.apply(WatchEvent("delete", KEYS.images("n2"), b"", 10))  # its lease ran out
    assert images.rows_of("n2") == [] and images.names.get("n2", set()) == set()
    assert images.revision == 10


def test_an_unreadable_record_hides_only_its_node() -> None:
    images = view()
    images.apply(put("n1", [BUSYBOX], 2))
    images.apply(put("n2", [APP], 3))
    images.apply(WatchEvent("put", KEYS.images("n1"), b"\xff\x00garbage", 4))
    bad = NodeImagesRecord(images_json=b'{"not": "a list"}').SerializeToString()
    images.apply(WatchEvent("put", KEYS.images("n2"), bad, 5))
    assert images.rows_of("n1") == [] and images.rows_of("n2") == []
    images.apply(put("n2", [APP], 6))
    assert images.count(["n1", "n2"]) == 1 and images.revision == 6


def test_merge_is_one_row_per_image_and_leaves_the_view_alone() -> None:
    images = view()
    other = {**BUSYBOX, "RepoTags": ["busybox:1"], "RepoDigests": ["busybox@sha256:" + "c" * 64]}
    images.apply(put("n1", [APP, BUSYBOX], 2))
    images.apply(put("n2", [other], 3))
    rows = merge_rows(images.rows_of(n) for n in ("n1", "n2"))
    assert [r["Id"] for r in rows] == [APP["Id"], BUSYBOX["Id"]]
    assert rows[1]["RepoTags"] == ["busybox:latest", "busybox:1"]
    assert rows[1]["RepoDigests"] == ["busybox@sha256:" + "c" * 64]
    assert images.rows_of("n1")[1]["RepoTags"] == ["busybox:latest"]


def test_filters_as_the_node_applies_them() -> None:
    rows = [APP, BUSYBOX, DANGLING]
    assert filter_listed(rows, {}) == rows
    assert filter_listed(rows, {"reference": ["app"]}) == [{**APP, "RepoTags": ["app:1"]}]
    assert filter_listed(rows, {"reference": ["*/app:*"]})[0]["RepoTags"] == [
        "registry.example/app:1"
    ]
    assert filter_listed(rows, {"dangling": ["true"]}) == [DANGLING]
    assert filter_listed(rows, {"dangling": ["false"]}) == [APP, BUSYBOX]
    assert filter_listed(rows, {"label": ["tier=web"]}) == [APP]
    assert filter_listed(rows, {"label": ["tier=db"]}) == []
    assert APP["RepoTags"] == ["app:1", "registry.example/app:1"]  # not narrowed in place
    with pytest.raises(InvalidParameter, match="Invalid filter 'dangling=maybe'"):
        filter_listed([], {"dangling": ["maybe"]})
    with pytest.raises(InvalidParameter, match="Invalid filter 'colour'"):
        filter_listed(rows, {"colour": ["red"]})


async def test_catch_up_waits_for_the_watch() -> None:
    kv = FakeKV(latest=5)
    images = view(kv)
    images.load([], 3)
    waiting = asyncio.create_task(images.catch_up(timeout_s=30))
    await asyncio.sleep(0)
    assert not waiting.done()
    images.apply(put("n1", [BUSYBOX], 5))
    await waiting
    assert images.names.get("n1", set())


async def test_catch_up_answers_anyway_when_etcd_is_away() -> None:
    images = view(FakeKV(fail=True))
    await images.catch_up()
    images = view(FakeKV(latest=9))
    await images.catch_up(timeout_s=0.01)  # the watch never gets there: bounded
    assert images.revision == 0
