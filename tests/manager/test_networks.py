"""manager/api/networks.py through the real aiohttp app, over a fake two-node cluster whose
agents answer NetworkList with the runtime's own views (runtime.networks), and a real etcd for
overlay networks (tests/manager/test_networks_overlay.py)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from manager.app import make_app
from manager.node_images import NodeImages
from manager.scheduler_view import SchedulerView
from proto import agent_pb2 as pb
from proto.docker.errors import DockerError, NotFound
from proto.keys import Keys
from proto.kv import KV
from proto.records_pb2 import NodeRecord
from runtime.network import Bridge
from runtime.networks import BuiltinNetworks

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden")
WEB = "c" * 64
ENDPOINT = {
    "Name": "web",
    "EndpointID": WEB,
    "MacAddress": "02:42:0a:4d:00:02",
    "IPv4Address": "10.77.0.2/24",
    "IPv6Address": "",
}


class FakeStub:
    def __init__(self, views: list[dict[str, Any]], up: bool) -> None:
        self.views = views
        self.up = up
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.refuse: DockerError | None = None

    async def NetworkList(self, req: pb.NetworkListRequest) -> pb.JsonReply:
        if not self.up:
            raise DockerError("node is not available", 503)
        views = json.loads(json.dumps(self.views))
        for view in views:
            if not req.verbose:
                view["Containers"] = {}
        return pb.JsonReply(json=json.dumps(views).encode())

    async def NetworkConnect(self, req: pb.NetworkConnectRequest) -> pb.Empty:  # noqa: N802
        self.calls.append(("connect", req.network_id, json.loads(req.json)))
        return pb.Empty()

    async def NetworkDisconnect(self, req: pb.NetworkDisconnectRequest) -> pb.Empty:  # noqa: N802
        self.calls.append(("disconnect", req.network_id, json.loads(req.json)))
        if self.refuse is not None:
            raise self.refuse
        return pb.Empty()


class FakeCluster:
    """What the networks module uses of manager.cluster.Cluster."""

    def __init__(self, root: str, kv: KV) -> None:
        self.kv = kv
        self.keys = Keys("/nets")
        self.recs = [NodeRecord(id=f"ID{i}", name=f"node-{i}") for i in range(2)]
        self.stubs = {}
        for rec in self.recs:
            bridge = Bridge(os.path.join(root, rec.name), "flotilla0", "10.77.0.0/24")
            views = BuiltinNetworks(os.path.join(root, rec.name), bridge).views([], False)
            self.stubs[rec.id] = FakeStub(views, up=True)
        self.stubs["ID1"].views[0]["Containers"] = {WEB: ENDPOINT}  # node-1's bridge
        self.scheduler_view = SchedulerView(self)  # type: ignore[arg-type]
        self.node_images = NodeImages(kv, self.keys)

    def sorted_nodes(self) -> list[NodeRecord]:
        return list(self.recs)

    def node_by_name(self, name: str) -> NodeRecord | None:
        return next((r for r in self.recs if name in (r.name, r.id)), None)

    def node_name(self, node_id: str) -> str:
        return next((r.name for r in self.recs if r.id == node_id), node_id)

    def containers_on(self, node_id: str) -> list[Any]:
        return []  # the scheduler's view of a node (network create's `node/` placement)

    def take_changed_nodes(self) -> set[str]:
        return set()

    def take_changed_ids(self) -> set[str]:
        return set()

    def node_order(self) -> list[str]:
        order = [r.id for r in self.recs]
        if order != getattr(self, "_order", None):
            self._order = order
        return self._order

    @property
    def nodes(self) -> dict[str, NodeRecord]:
        return {r.id: r for r in self.recs}

    async def fan_out(
        self, fn: Callable[[FakeStub], Awaitable[Any]], node_ids: list[str] | None = None
    ) -> list[tuple[NodeRecord, Any]]:
        out: list[tuple[NodeRecord, Any]] = []
        for rec in self.recs:
            if node_ids and rec.id not in node_ids:
                continue
            try:
                out.append((rec, await fn(self.stubs[rec.id])))
            except DockerError as e:
                out.append((rec, e))
        return out

    async def resolve(self, ref: str) -> tuple[str, str]:
        """Container lookup: `web` (and its ID) runs on node-1."""
        if ref in ("web", WEB):
            return "ID1", WEB
        raise NotFound(f"No such container: {ref}")

    async def call(self, node_id: str, fn: Callable[[FakeStub], Awaitable[Any]]) -> Any:  # noqa: ANN401
        return await fn(self.stubs[node_id])

    def network(self, node: int, name: str) -> dict[str, Any]:
        views = self.stubs[f"ID{node}"].views
        return next(v for v in views if v["Name"] == name)


@pytest.fixture
async def api(tmp_path: Any, etcd: Any) -> AsyncIterator[tuple[TestClient, FakeCluster]]:  # noqa: ANN401
    kv = await KV.connect([etcd.endpoint])
    cluster = FakeCluster(str(tmp_path), kv)
    try:
        async with TestClient(TestServer(make_app(cluster, {}))) as client:  # type: ignore[arg-type]
            yield client, cluster
    finally:
        await kv.close()


async def call(client: TestClient, method: str, path: str, **kw: Any) -> tuple[int, Any, bytes]:
    resp = await client.request(method, path, **kw)
    body = await resp.read()
    return resp.status, json.loads(body) if body else None, body


def ls_filter(doc: dict[str, Any]) -> dict[str, str]:
    return {"filters": json.dumps(doc)}


async def names(client: TestClient, doc: dict[str, Any]) -> list[str]:
    status, rows, _ = await call(client, "GET", "/v1.41/networks", params=ls_filter(doc))
    assert status == 200, rows
    return sorted(r["Name"] for r in rows)


ALL = [f"node-{i}/{n}" for i in range(2) for n in ("bridge", "host", "none")]


async def test_list_is_every_nodes_builtins_named_node_slash_name(api: Any) -> None:
    client, cluster = api
    status, rows, _ = await call(client, "GET", "/networks")
    assert status == 200
    assert sorted(r["Name"] for r in rows) == ALL
    bridge = next(r for r in rows if r["Name"] == "node-1/bridge")
    # The node's own entry, renamed: no extra key, and Containers left empty like dockerd.
    assert bridge == {**cluster.network(1, "bridge"), "Name": "node-1/bridge", "Containers": {}}


async def test_list_filters_in_both_json_forms(api: Any) -> None:
    client, cluster = api
    for form in (lambda v: [v], lambda v: {v: True}):
        assert await names(client, {"type": form("builtin")}) == ALL
        assert await names(client, {"type": form("custom")}) == []
        assert await names(client, {"node": form("node-1")}) == ALL[3:]
        assert await names(client, {"name": form("bridge")}) == ["node-0/bridge", "node-1/bridge"]
        assert await names(client, {"name": form("node-1/host")}) == ["node-1/host"]
        assert await names(client, {"driver": form("null")}) == ["node-0/none", "node-1/none"]
        net_id = cluster.network(0, "host")["Id"]
        assert await names(client, {"id": form(net_id[:10])}) == ["node-0/host"]
        assert await names(client, {"label": form("team")}) == []
    assert await names(client, {"node": ["node-1"], "driver": ["bridge", "host"]}) == [
        "node-1/bridge",
        "node-1/host",
    ]
    assert await names(client, {"name": ["[unclosed"]}) == []
    status, doc, _ = await call(client, "GET", "/networks", params=ls_filter({"type": ["x"]}))
    assert (status, doc) == (400, {"message": "Invalid filter: 'type'='x'"})
    status, doc, _ = await call(client, "GET", "/networks", params=ls_filter({"bogus": ["1"]}))
    assert (status, doc) == (400, {"message": "Invalid filter 'bogus'"})


async def test_unreachable_node_is_left_out(api: Any) -> None:
    client, cluster = api
    cluster.stubs["ID0"].up = False
    assert await names(client, {}) == ALL[3:]


async def test_inspect_by_node_name_id_and_prefix(api: Any) -> None:
    client, cluster = api
    own = cluster.network(1, "bridge")
    assert own["Containers"] == {WEB: ENDPOINT}
    for ref in ("node-1/bridge", "ID1/bridge", own["Id"], own["Id"][:12]):
        status, doc, _ = await call(client, "GET", f"/v1.41/networks/{ref}")
        assert (status, doc) == (200, own), ref  # the node's own view, bare name
    status, doc, _ = await call(client, "GET", "/networks/bridge")
    assert status == 404
    assert doc == {"message": "network bridge is ambiguous (2 matches found based on name)"}
    for ref in ("node-9/bridge", "node-0/nosuch", "node-0/"):
        status, doc, _ = await call(client, "GET", f"/networks/{ref}")
        assert (status, doc) == (404, {"message": f"network {ref} not found"})
    status, _, body = await call(client, "GET", "/v1.41/networks/nosuchnet")
    with open(os.path.join(GOLDEN, "error-404-missing-network.json"), "rb") as f:
        assert (status, body) == (404, f.read())


async def test_changes_to_builtin_networks_answer_docker_errors(api: Any) -> None:
    client, _ = api
    for name in ("bridge", "node-0/host", "default"):
        status, doc, _ = await call(client, "POST", "/networks/create", json={"Name": name})
        bare = name.rpartition("/")[2]
        message = f"operation is not permitted on predefined {bare} network "
        assert (status, doc) == (403, {"message": message})
    # Swarm's CreateNetwork places `node/NAME` with a node== constraint: its error for a
    # node that does not exist.
    status, doc, _ = await call(client, "POST", "/networks/create", json={"Name": "node-9/x"})
    assert status == 500, doc
    assert doc["message"].startswith("Unable to find a node that satisfies the following")
    assert doc["message"].endswith("[node==node-9]")
    status, doc, _ = await call(client, "DELETE", "/v1.41/networks/node-0/bridge")
    assert (status, doc) == (
        403,
        {"message": "bridge is a pre-defined network and cannot be removed"},
    )
    status, doc, _ = await call(client, "DELETE", "/networks/nosuch")
    assert (status, doc) == (404, {"message": "network nosuch not found"})
    for verb in ("connect", "disconnect"):
        body = {"Container": "web"}
        status, doc, _ = await call(client, "POST", f"/networks/node-1/host/{verb}", json=body)
        assert status == 501
        assert f"cannot {verb} containers to the nodes' built-in" in doc["message"]
        status, doc, _ = await call(client, "POST", f"/networks/nosuch/{verb}", json=body)
        assert (status, doc) == (404, {"message": "network nosuch not found"})
    status, doc, _ = await call(client, "POST", "/v1.41/networks/prune")
    assert (status, doc) == (200, {"NetworksDeleted": None})
    status, doc, _ = await call(
        client, "POST", "/networks/prune", params=ls_filter({"dangling": ["true"]})
    )
    assert (status, doc) == (400, {"message": "Invalid filter 'dangling'"})
