"""Unit tests: `docker ps` from status records (manager/api/ps_rows.py, container_list.py) and
the shared STATUS text (proto/ps_status.py): the rows are those a node's ContainerList gave,
byte for byte as they were listed, and no node is asked."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from manager.api.container_list import PS_ROWS_KEY, warm_rows
from manager.api.ps_rows import PsRows, split_json
from manager.app import make_app
from manager.cluster import Cluster
from proto.keys import Keys
from proto.ps_status import status_text
from proto.records_pb2 import ContainerStatus, NodeRecord

S = 1_000_000_000
NOW = 1_800_000_000 * S
DAYS_2 = 2 * 86400 * S  # far from any unit boundary: the text does not move during a test


def test_status_text_as_dockerd_writes_it() -> None:
    assert status_text("running", NOW - 3 * S, 0, 0, "none", NOW) == "Up 3 seconds"
    assert (
        status_text("running", NOW - 90 * S, 0, 0, "healthy", NOW) == "Up About a minute (healthy)"
    )
    assert (
        status_text("running", NOW, 0, 0, "starting", NOW)
        == "Up Less than a second (health: starting)"
    )
    assert (
        status_text("running", NOW - 7200 * S, 0, 0, "unhealthy", NOW) == "Up 2 hours (unhealthy)"
    )
    assert status_text("paused", NOW - 600 * S, 0, 0, "healthy", NOW) == "Up 10 minutes (Paused)"
    assert (
        status_text("restarting", 0, NOW - 5 * S, 1, "none", NOW) == "Restarting (1) 5 seconds ago"
    )
    assert status_text("exited", 0, NOW - DAYS_2, 137, "none", NOW) == "Exited (137) 2 days ago"
    # a container stopped and then re-created by a failed start shows its last exit
    assert status_text("created", 0, NOW - S, 0, "none", NOW) == "Exited (0) 1 second ago"
    assert status_text("created", 0, 0, 0, "none", NOW) == "Created"
    assert status_text("dead", 0, NOW, 0, "none", NOW) == "Dead"


@pytest.mark.parametrize(
    "row",
    [
        {"Id": "x", "Status": ""},
        {"Status": "", "Id": "x"},
        {"Id": "x", "Labels": {'"Status": ': "\x00\u00e9\u2603"}, "Status": "", "Mounts": []},
        {"Status": ""},
    ],
)
def test_split_json_joins_back_to_the_whole_row(row: dict[str, Any]) -> None:
    head, tail = split_json(row, "Status")
    for text in ("Up 2 days (healthy)", 'q"uote', "\u00e9"):
        assert head + orjson.dumps(text) + tail == orjson.dumps(row | {"Status": text})
        assert json.loads(head + orjson.dumps(text) + tail) == row | {"Status": text}


def _agent_row(cid: str, name: str, state: str, health: str = "none") -> dict[str, Any]:
    """A row as runtime/views.summary builds it (and the agent stores it, Status empty)."""
    return {
        "Id": cid,
        "Names": [f"/{name}"],
        "Image": "busybox",
        "ImageID": "sha256:" + "b" * 64,
        "Command": "sleep 1000",
        "Created": 1_700_000_000,
        "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}]
        if state == "running"
        else [],
        "Labels": {"tier": "web"},
        "State": state,
        "Status": "",
        "HostConfig": {"NetworkMode": "default"},
        "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2"}}},
        "Mounts": [],
        "Health": {"Status": health, "FailingStreak": 0},
    }


def _status(cid: str, node_id: str, name: str, state: str, health: str = "none") -> ContainerStatus:
    now = time.time_ns()
    return ContainerStatus(
        id=cid,
        node_id=node_id,
        name=name,
        image="busybox",
        state=state,
        exit_code=3 if state == "exited" else 0,
        started_at_ns=now - DAYS_2,
        finished_at_ns=now - DAYS_2 if state == "exited" else 0,
        labels={"tier": "web"},
        ps_row_json=json.dumps(_agent_row(cid, name, state, health)).encode(),
    )


class NoRpcCluster(Cluster):
    """A cluster whose nodes must not be asked: any RPC fails the test."""

    asked: list[str]

    def stub(self, node_id: str) -> Any:  # noqa: ANN401
        self.asked.append(node_id)
        raise AssertionError(f"node {node_id} asked")


A, B, C, GONE = "a" * 64, "b" * 64, "c" * 64, "d" * 64


def _cluster() -> NoRpcCluster:
    cluster = NoRpcCluster(kv=None, keys=Keys("/flotilla"))  # type: ignore[arg-type]
    cluster.asked = []
    for node_id, name, addr in (
        ("n1", "node-1", "10.99.0.10:4243"),
        ("n2", "node-2", "10.99.0.11:4243"),
    ):
        cluster.nodes[node_id] = NodeRecord(id=node_id, name=name, addr=addr)
        cluster.node_names[node_id] = name
    cluster.statuses[A] = _status(A, "n1", "web", "running", "healthy")
    cluster.statuses[B] = _status(B, "n2", "db", "exited")
    cluster.statuses[C] = _status(C, "n2", "cache", "running")
    cluster.statuses[GONE] = _status(GONE, "n3", "lost", "running")  # node-3 is not in nodes
    cluster.node_names["n3"] = "node-3"
    return cluster


@pytest.fixture
async def api() -> AsyncIterator[tuple[TestClient, NoRpcCluster]]:
    cluster = _cluster()
    async with TestClient(TestServer(make_app(cluster, {}))) as client:
        yield client, cluster
    assert cluster.asked == []  # no node was asked, whatever the request


async def _ps(client: TestClient, **params: Any) -> str:  # noqa: ANN401
    if "filters" in params:
        params["filters"] = json.dumps(params["filters"])
    resp = await client.get("/v1.41/containers/json", params=params)
    assert resp.status == 200
    assert resp.content_type == "application/json"
    return await resp.text()


def _names(text: str) -> list[str]:
    return [row["Names"][0] for row in json.loads(text)]


def _as_listed_before(cid: str, node: str, ip: str, name: str, state: str, status: str) -> dict:
    """What the fan-out listing made of the node's row: its Status, names under the node, the
    node's address for 0.0.0.0, no Health."""
    row = _agent_row(cid, name, state)
    row["Names"] = [f"/{node}/{name}"]
    row["Status"] = status
    for port in row["Ports"]:
        port["IP"] = ip
    del row["Health"]
    return row


async def test_rows_are_byte_for_byte_the_listed_ones(api: Any) -> None:
    client, _ = api
    text = await _ps(client, all=1)
    # Same Created: the ID breaks the tie, highest first (as before).
    expected = [
        _as_listed_before(C, "node-2", "10.99.0.11", "cache", "running", "Up 2 days"),
        _as_listed_before(B, "node-2", "10.99.0.11", "db", "exited", "Exited (3) 2 days ago"),
        _as_listed_before(A, "node-1", "10.99.0.10", "web", "running", "Up 2 days (healthy)"),
    ]
    # node-3's container is a departed row (Host Down; Created from its record: newest)
    assert _names(text)[0] == "/node-3/lost" and json.loads(text)[0]["Status"] == "Host Down"
    assert json.loads(text)[1:] == expected
    assert text.endswith("," + orjson.dumps(expected).decode()[1:])
    sized = json.loads(await _ps(client, size=1))
    assert [(r["SizeRw"], r["SizeRootFs"]) for r in sized] == [(0, 0), (0, 0)]
    assert list(sized[0])[-3:] == ["Mounts", "SizeRw", "SizeRootFs"]


async def test_filters_limit_and_all(api: Any) -> None:
    client, _ = api
    assert _names(await _ps(client)) == ["/node-2/cache", "/node-1/web"]
    assert _names(await _ps(client, filters={"health": ["healthy"]})) == ["/node-1/web"]
    assert _names(await _ps(client, filters={"health": ["none"]})) == ["/node-2/cache"]
    assert _names(await _ps(client, filters={"exited": ["3"]})) == ["/node-2/db"]
    assert _names(await _ps(client, filters={"exited": ["0"]})) == []
    assert _names(await _ps(client, filters={"status": ["exited"]})) == ["/node-2/db"]
    assert _names(await _ps(client, filters={"name": ["^/?ca"]})) == ["/node-2/cache"]
    assert _names(await _ps(client, filters={"node": ["node-1"]})) == ["/node-1/web"]
    assert _names(await _ps(client, filters={"network": ["bridge"]})) == [
        "/node-2/cache",
        "/node-1/web",
    ]
    assert _names(await _ps(client, limit=2)) == ["/node-3/lost", "/node-2/cache"]
    newer = ["/node-3/lost", "/node-2/cache"]
    assert _names(await _ps(client, filters={"since": ["db"]})) == newer
    assert _names(await _ps(client, filters={"before": ["db"]})) == ["/node-1/web"]


async def test_a_record_change_is_listed_and_the_parse_is_cached(api: Any) -> None:
    client, cluster = api
    rows = client.app[PS_ROWS_KEY]
    await _ps(client)
    first = rows.row(A, cluster.statuses[A], cluster.nodes["n1"])
    assert rows.row(A, cluster.statuses[A], cluster.nodes["n1"]) is first  # not parsed again
    # The agent rewrote the record (renamed, now unhealthy): a new object, a new row.
    st = _status(A, "n1", "front", "running", "unhealthy")
    cluster.statuses[A] = st
    assert json.loads(await _ps(client, filters={"id": [A[:12]]}))[0]["Names"] == ["/node-1/front"]
    assert (
        json.loads(await _ps(client, filters={"id": [A]}))[0]["Status"] == "Up 2 days (unhealthy)"
    )
    # A node whose address changed: its ports follow.
    cluster.nodes["n1"] = NodeRecord(id="n1", name="node-1", addr="10.99.0.99:4243")
    row = json.loads(await _ps(client, filters={"id": [A]}))[0]
    assert row["Ports"][0]["IP"] == "10.99.0.99"
    # A removed container's entry goes.
    del cluster.statuses[A]
    await _ps(client)
    assert A not in rows._rows


async def test_warm_rows_builds_what_the_first_listing_uses(api: Any) -> None:  # noqa: ANN401
    client, cluster = api
    rows = client.app[PS_ROWS_KEY]
    warm_rows(client.app)
    built = dict(rows._rows)
    assert set(built) == {A, B, C}  # every container of a live node, stopped ones too
    await _ps(client, all=1)
    assert all(rows._rows[cid] is row for cid, row in built.items())  # none built again


def test_a_record_without_a_row_is_listed_from_its_fields() -> None:
    st = ContainerStatus(id=A, node_id="n1", name="old", image="busybox", state="running")
    built = PsRows().row(A, st, NodeRecord(id="n1", name="node-1", addr="10.0.0.1:1"))
    row = json.loads(built.json(NOW, size=False))
    assert (row["Names"], row["Image"], row["State"]) == (["/node-1/old"], "busybox", "running")
