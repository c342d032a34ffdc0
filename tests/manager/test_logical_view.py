"""Unit tests: what `docker ps` and name resolution show of logical containers
(manager/logical_view.py, manager/api/container_list.py), through the real aiohttp app over a
real Cluster whose agents are fakes: a stale copy on a returned node is neither listed nor
resolved, and a container being rescheduled without a status record is listed and resolved
from its logical record."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from manager.app import make_app
from manager.cluster import Cluster
from proto import agent_pb2 as pb
from proto.docker.errors import DockerError, NotFound
from proto.keys import Keys
from proto.kv import WatchEvent
from proto.logical import FAILED, PENDING, PLACED, PLACING, SWARM_ID_LABEL, is_stale
from proto.records_pb2 import ContainerStatus, LogicalContainer, NodeRecord

NODE_A, NODE_B, NODE_X = "node-a", "node-b", "node-x"  # node-1 and node-2 up, node-3 gone
WEB_SID, PINNED_SID, MOVED_SID, NEW_SID = "1" * 64, "2" * 64, "3" * 64, "4" * 64
STALE, LIVE, PINNED, MOVED, PLAIN = "a" * 64, "b" * 64, "c" * 64, "d" * 64, "e" * 64


class FakeAgent:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    async def ContainerList(self, req: pb.ContainerListRequest) -> pb.ContainerListReply:  # noqa: N802
        return pb.ContainerListReply(rows=[json.dumps(r).encode() for r in self.rows])

    async def ContainerInspect(self, req: pb.ContainerRef) -> pb.JsonReply:  # noqa: N802
        for row in self.rows:
            if row["Id"].startswith(req.id) or f"/{req.id}" in row["Names"]:
                body = {
                    "Id": row["Id"],
                    "Name": row["Names"][0],
                    "Config": {"Labels": row["Labels"]},
                }
                return pb.JsonReply(json=json.dumps(body).encode())
        raise NotFound(f"No such container: {req.id}")


class FakeCluster(Cluster):
    agents: dict[str, FakeAgent]

    def stub(self, node_id: str) -> Any:  # noqa: ANN401 - a FakeAgent stands for the stub
        return self.agents[node_id]


def _row(cid: str, name: str, labels: dict[str, str], state: str = "running") -> dict[str, Any]:
    status = "Up 1 second" if state == "running" else "Exited (137) 1 second ago"
    return {
        "Id": cid,
        "Names": [f"/{name}"],
        "Image": "busybox",
        "ImageID": "sha256:bb",
        "Command": "sleep 1000",
        "Created": 1,
        "Ports": [],
        "Labels": labels,
        "State": state,
        "Status": status,
    }


def _status(cid: str, node_id: str, name: str, sid: str, state: str) -> ContainerStatus:
    """The record an agent writes, with its ps row (what `docker ps` lists on a live node)."""
    labels = {SWARM_ID_LABEL: sid} if sid else {}
    return ContainerStatus(
        id=cid,
        node_id=node_id,
        name=name,
        image="busybox",
        state=state,
        labels=labels,
        ps_row_json=json.dumps(_row(cid, name, labels, state) | {"Status": ""}).encode(),
    )


def _put_logical(cluster: Cluster, rec: LogicalContainer) -> None:
    key = cluster.keys.logical(rec.swarm_id)
    cluster._apply_logical(WatchEvent("put", key, rec.SerializeToString(), 1))


def _world() -> FakeCluster:
    cluster = FakeCluster(kv=None, keys=Keys("/flotilla"))  # type: ignore[arg-type]
    for node_id, name in ((NODE_A, "node-1"), (NODE_B, "node-2")):
        cluster.nodes[node_id] = NodeRecord(id=node_id, name=name, addr="10.99.0.2:4243")
        cluster.node_names[node_id] = name
    cluster.node_names[NODE_X] = "node-3"
    web = {SWARM_ID_LABEL: WEB_SID}
    # web moved from node-1 to node-2; node-1 is back and its agent has not removed the old copy.
    cluster.agents = {
        NODE_A: FakeAgent([_row(STALE, "web", web, "exited"), _row(PLAIN, "plain", {})]),
        NODE_B: FakeAgent([_row(LIVE, "web", web)]),
    }
    cluster.statuses[STALE] = _status(STALE, NODE_A, "web", WEB_SID, "exited")
    cluster.statuses[LIVE] = _status(LIVE, NODE_B, "web", WEB_SID, "running")
    cluster.statuses[PLAIN] = _status(PLAIN, NODE_A, "plain", "", "running")
    _put_logical(
        cluster,
        LogicalContainer(
            swarm_id=WEB_SID,
            generation=2,
            state=PLACED,
            node_id=NODE_B,
            container_id=LIVE,
            name="web",
        ),
    )
    # pinned (node==node-3) waits for node-3; its old copy's status record is gone.
    body = {
        "Image": "busybox",
        "Cmd": ["sleep", "1000"],
        "Labels": {SWARM_ID_LABEL: PINNED_SID, "tier": "db"},
    }
    _put_logical(
        cluster,
        LogicalContainer(
            swarm_id=PINNED_SID,
            generation=1,
            state=PENDING,
            name="pinned",
            create_json=json.dumps(body).encode(),
            previous_node_id=NODE_X,
            previous_container_id=PINNED,
            node_failed_at_ns=1_700_000_000 * 10**9,
        ),
    )
    # moved is waiting out the margin; its old copy's status record is there: today's row.
    cluster.statuses[MOVED] = _status(MOVED, NODE_X, "moved", MOVED_SID, "running")
    _put_logical(
        cluster,
        LogicalContainer(
            swarm_id=MOVED_SID,
            generation=1,
            state=FAILED,
            name="moved",
            previous_node_id=NODE_X,
            previous_container_id=MOVED,
        ),
    )
    return cluster


@pytest.fixture
async def api() -> AsyncIterator[tuple[TestClient, FakeCluster]]:
    cluster = _world()
    async with TestClient(TestServer(make_app(cluster, {}))) as client:
        yield client, cluster


async def ps(client: TestClient, **params: Any) -> dict[str, dict[str, Any]]:  # noqa: ANN401
    if "filters" in params:
        params["filters"] = json.dumps(params["filters"])
    resp = await client.get("/v1.41/containers/json", params=params)
    rows = await resp.json()
    assert resp.status == 200, rows
    names = [row["Names"][0] for row in rows]
    assert len(names) == len(set(names)), names  # no container listed twice
    return {row["Names"][0]: row for row in rows}


def test_the_shared_stale_rule() -> None:
    rec = LogicalContainer(node_id=NODE_B, container_id=LIVE)
    assert is_stale(rec, NODE_A, STALE)  # another node
    assert is_stale(rec, NODE_B, STALE)  # another container on this node
    assert not is_stale(rec, NODE_B, LIVE)
    assert not is_stale(LogicalContainer(node_id=NODE_B), NODE_B, STALE)  # being placed here
    assert not is_stale(None, NODE_A, STALE) and is_stale(None, NODE_A, STALE, fenced=True)


async def test_ps_hides_stale_copies_and_lists_unplaced_ones(api: Any) -> None:
    client, _ = api
    rows = await ps(client, all=1)
    assert set(rows) == {"/node-1/plain", "/node-2/web", "/node-3/pinned", "/node-3/moved"}
    assert rows["/node-2/web"]["Id"] == LIVE
    pinned = rows["/node-3/pinned"]
    assert pinned["Id"] == PINNED and pinned["Status"] == "Pending reschedule"
    assert (pinned["Image"], pinned["Command"], pinned["State"]) == (
        "busybox",
        "sleep 1000",
        "exited",
    )
    assert pinned["Labels"] == {SWARM_ID_LABEL: PINNED_SID, "tier": "db"}
    assert pinned["Created"] == 1_700_000_000
    assert rows["/node-3/moved"]["Status"] == "Host Down"
    assert set(await ps(client)) == {"/node-1/plain", "/node-2/web"}  # not running: -a only


async def test_filters_apply_to_unplaced_rows(api: Any) -> None:
    client, _ = api
    assert set(await ps(client, all=1, filters={"name": ["pinned"]})) == {"/node-3/pinned"}
    assert set(await ps(client, all=1, filters={"label": ["tier=db"]})) == {"/node-3/pinned"}
    assert set(await ps(client, filters={"status": ["exited"]})) == {"/node-3/pinned"}
    assert "/node-3/pinned" not in await ps(client, filters={"status": ["running"]})
    assert set(await ps(client, all=1, filters={"node": ["node-3"]})) == {
        "/node-3/pinned",
        "/node-3/moved",
    }
    assert set(await ps(client, all=1, filters={"label": [f"{SWARM_ID_LABEL}={WEB_SID}"]})) == {
        "/node-2/web"
    }


async def test_a_status_record_keeps_todays_row(api: Any) -> None:
    client, cluster = api
    cluster.statuses[PINNED] = _status(PINNED, NODE_X, "pinned", PINNED_SID, "exited")
    rows = await ps(client, all=1)
    assert rows["/node-3/pinned"]["Status"] == "Pending reschedule"
    assert rows["/node-3/pinned"]["Command"] == ""  # the departed row, from the status record


async def test_unplaced_without_an_old_copy_is_listed_by_its_swarm_id(api: Any) -> None:
    client, cluster = api
    rec = cluster.logical_records[PINNED_SID]
    rec.previous_container_id = ""  # its target died before the copy was made
    rows = await ps(client, all=1)
    assert rows["/node-3/pinned"]["Id"] == PINNED_SID
    # A `docker create` in flight (a `placing` record with no node it moves from) is no row.
    _put_logical(
        cluster,
        LogicalContainer(swarm_id=NEW_SID, generation=1, state=PLACING, node_id=NODE_A, name="new"),
    )
    assert "/node-1/new" not in await ps(client, all=1)


async def test_names_resolve_to_the_live_copy(api: Any) -> None:
    _, cluster = api
    assert await cluster.resolve("web") == (NODE_B, LIVE)
    assert await cluster.resolve(WEB_SID) == (NODE_B, LIVE)
    assert await cluster.resolve(WEB_SID[:12]) == (NODE_B, LIVE)
    assert cluster.name_holder("web") == LIVE
    for ref in (STALE, STALE[:12], "node-1/web"):  # the agent still has it: not shown
        with pytest.raises(NotFound):
            await cluster.resolve(ref)
    # Once the agent removed it and its record is gone, nothing changes for the live one.
    del cluster.statuses[STALE]
    cluster.agents[NODE_A].rows = cluster.agents[NODE_A].rows[1:]
    assert await cluster.resolve("web") == (NODE_B, LIVE)


async def test_unplaced_resolves_as_a_container_on_its_down_node(api: Any) -> None:
    client, cluster = api
    for ref in ("pinned", PINNED, PINNED[:10], PINNED_SID, PINNED_SID[:12]):
        with pytest.raises(DockerError) as err:
            await cluster.resolve(ref)
        assert (err.value.status, err.value.message) == (
            500,
            f"Container {ref} running on unhealthy node node-3",
        )
    resp = await client.get("/v1.41/containers/pinned/json")
    assert resp.status == 500
    assert (await resp.json())["message"] == "Container pinned running on unhealthy node node-3"
    assert cluster.name_holder("pinned") == PINNED  # a new container cannot take the name
