"""The manager's incremental container indexes and the scheduler's kept view: what a create
or a name lookup reads must follow every change without scanning all containers."""

from __future__ import annotations

import json

import pytest

from manager.cluster import Cluster, Placement
from manager.container_index import ContainerIndex, StateCounts
from proto.docker.errors import NotFound
from proto.keys import Keys
from proto.kv import WatchEvent
from proto.logical import SWARM_ID_LABEL
from proto.records_pb2 import ContainerStatus, NodeImages, NodeRecord

SID = "a" * 64


def _status(cid: str, node: str, name: str, sid: str = "") -> ContainerStatus:
    labels = {SWARM_ID_LABEL: sid} if sid else {}
    return ContainerStatus(id=cid, node_id=node, name=name, state="running", labels=labels)


def test_state_counts_follow_status_records() -> None:
    """`docker info`'s counts per node, as dockerd counts: restarting, created, exited and
    dead are stopped; a placement without a status record (not yet on the node) is not
    counted."""
    index = ContainerIndex()
    index.placements["c0"] = Placement(node_id="n1", name="new", image="busybox")
    for cid, state in (("c1", "running"), ("c2", "paused"), ("c3", "restarting"), ("c4", "exited")):
        index.statuses[cid] = ContainerStatus(id=cid, node_id="n1", state=state)
    assert index.state_counts("n1") == StateCounts(total=4, running=1, paused=1)
    assert index.state_counts("n1").stopped == 2

    index.statuses["c2"] = ContainerStatus(id="c2", node_id="n1", state="running")  # unpaused
    index.statuses["c4"] = ContainerStatus(id="c4", node_id="n2", state="exited")  # moved
    del index.statuses["c3"]
    assert index.state_counts("n1") == StateCounts(total=2, running=2)
    assert index.state_counts("n2") == StateCounts(total=1)
    assert index.state_counts("n1") + index.state_counts("n2") == StateCounts(3, 2, 0)
    index.statuses.clear()
    assert index.state_counts("n1") == index.state_counts("n2") == StateCounts()
    assert not index._states  # nothing left behind for nodes that had containers


def test_statuses_placements_and_pending_are_indexed_as_they_change() -> None:
    index = ContainerIndex()
    index.placements["c1"] = Placement(node_id="n1", name="web", image="busybox")
    assert index.ids_on("n1") == ("c1",)
    assert index.ids_named("web") == ("c1",)
    assert index.take_changed_nodes() == {"n1"}
    assert index.take_changed_nodes() == set()

    # The status record says where it is and what it is called now: it wins.
    index.statuses["c1"] = _status("c1", "n2", "api", SID)
    assert index.ids_on("n1") == () and index.ids_on("n2") == ("c1",)
    assert set(index.ids_named("web")) == {"c1"}  # our placement still carries the old name
    assert index.ids_named("api") == ("c1",)
    assert index.ids_with_swarm_id(SID) == ("c1",)
    assert index.ids_with_short_swarm_id(SID[:12]) == ("c1",)
    assert index.take_changed_nodes() == {"n1", "n2"}

    token = 7
    index.pending[token] = Placement(node_id="n3", name="db", image="busybox")
    assert [t for t, _ in index.pending_on("n3")] == [token]
    assert index.take_changed_nodes() == {"n3"}
    index.pending.pop(token)
    assert index.pending_on("n3") == []

    del index.statuses["c1"]
    index.placements.pop("c1")
    assert index.ids_on("n2") == () and index.ids_named("api") == ()
    assert index.ids_with_swarm_id(SID) == ()
    # Without its status it counted on its placement's node for a moment: n1 changed too.
    assert index.take_changed_nodes() == {"n1", "n2", "n3"}


def test_a_change_in_place_is_reindexed_when_reported() -> None:
    index = ContainerIndex()
    index.statuses["c1"] = _status("c1", "n1", "old")
    index.statuses["c1"].name = "new"
    assert index.ids_named("old") == ("c1",)  # not reported yet
    index.changed("c1")
    assert index.ids_named("old") == () and index.ids_named("new") == ("c1",)


def _cluster(nodes: int) -> Cluster:
    cluster = Cluster(kv=None, keys=Keys("/t"))  # type: ignore[arg-type]
    for i in range(nodes):
        rec = NodeRecord(id=f"id{i}", name=f"node-{i}", ncpu=2, memory_bytes=1 << 30)
        cluster.nodes[rec.id] = rec
    return cluster


def test_the_scheduler_view_rebuilds_only_the_nodes_that_changed() -> None:
    cluster = _cluster(50)
    for i in range(50):
        cluster.statuses[f"c{i}"] = _status(f"c{i}", f"id{i}", f"web{i}")
    first = cluster.scheduler_view.infos()
    assert [n.name for n in first[:3]] == ["node-0", "node-1", "node-2"]
    versions = {n.id: n._version for n in first}
    lists = {n.id: n.containers for n in first}

    cluster.placements["new"] = Placement(node_id="id7", name="new", image="busybox")
    cluster.statuses["c3"] = _status("c3", "id3", "renamed")
    second = cluster.scheduler_view.infos()
    assert all(a is b for a, b in zip(first, second, strict=True))  # the same NodeInfo objects
    touched = {n.id for n in second if n._version != versions[n.id]}
    assert touched == {"id3", "id7"}
    assert [c.name for c in second[7].containers] == ["web7", "new"]
    assert [c.name for c in second[3].containers] == ["renamed"]
    assert all(second[i].containers is lists[f"id{i}"] for i in range(50) if i not in (3, 7))


def test_the_scheduler_view_follows_nodes_and_their_images() -> None:
    cluster = _cluster(3)
    _images(cluster, "id1", ["busybox:latest"])
    infos = cluster.scheduler_view.infos()
    assert infos[1].images == {"sha256:1", "busybox:latest"} and infos[0].images == set()
    assert cluster.scheduler_view.nodes_with_image("busybox") == 1
    version = infos[1]._version
    assert cluster.scheduler_view.infos()[1]._version == version  # nothing changed

    relabelled = NodeRecord()
    relabelled.CopyFrom(cluster.nodes["id1"])
    relabelled.labels["zone"] = "east"
    cluster.nodes["id1"] = relabelled
    del cluster.nodes["id2"]
    _images(cluster, "id1", [])
    infos = cluster.scheduler_view.infos()
    assert [n.id for n in infos] == ["id0", "id1"]
    assert infos[1].labels == {"zone": "east"} and infos[1].images == {"sha256:1"}
    assert cluster.scheduler_view.nodes_with_image("busybox") == 0


def _images(cluster: Cluster, node_id: str, tags: list[str]) -> None:
    rows = [{"Id": "sha256:1", "RepoTags": tags}]
    record = NodeImages(node_id=node_id, images_json=json.dumps(rows).encode())
    key = cluster.keys.images(node_id)
    cluster.node_images.apply(WatchEvent("put", key, record.SerializeToString(), 1))


async def test_references_resolve_from_the_view_without_asking_any_node() -> None:
    cluster = _cluster(3)
    cluster.stub = _no_agent  # type: ignore[method-assign]
    cid = "c" * 64
    cluster.statuses[cid] = _status(cid, "id2", "web", SID)
    assert await cluster.resolve("web") == ("id2", cid)
    assert await cluster.resolve(SID[:12]) == ("id2", cid)
    assert await cluster.resolve("node-2/web") == ("id2", cid)
    assert await cluster.resolve(cid[:5]) == ("id2", cid)
    with pytest.raises(NotFound) as err:
        await cluster.resolve("nosuch")  # not known to the view: no node is asked
    assert err.value.message == "No such container: nosuch"


def _no_agent(node_id: str) -> None:
    raise AssertionError(f"node {node_id} was asked")
