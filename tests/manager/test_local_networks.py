"""Node-local user networks (Swarm's `node/NAME`) through manager/api/networks.py on a real etcd,
next to the fake two-node cluster of test_networks.py: create, names, ls, inspect, rm, connect,
the container create body, and the store's name rule."""

from __future__ import annotations

from typing import Any

import pytest

from manager.api.containers import _prefer_node
from manager.api.networks_overlay import with_network_ids
from manager.network_store import NetworkStore
from proto.docker.errors import InvalidParameter, NotFound
from tests.manager.test_networks import ALL, WEB, api, call, ls_filter, names

__all__ = ["api"]


async def _create(client: Any, name: str, **body: Any) -> str:  # noqa: ANN401
    status, doc, _ = await call(
        client, "POST", "/v1.41/networks/create", json={"Name": name, "Driver": "bridge", **body}
    )
    assert status == 201, doc
    return str(doc["Id"])


async def test_create_on_a_node_ls_and_inspect(api: Any) -> None:
    client, cluster = api
    net_id = await _create(client, "node-1/loc", Labels={"a": "b"})
    rec = (await NetworkStore(cluster.kv, cluster.keys).get(net_id) or (None, 0))[0]
    assert rec is not None and (rec.name, rec.node_id, rec.driver) == ("loc", "ID1", "bridge")
    # Its name claim is its node's; it has a VNI (its bridge's name) and a subnet of its own.
    assert await cluster.kv.get(cluster.keys.network_name("loc", "ID1")) is not None
    assert await cluster.kv.get(cluster.keys.network_name("loc")) is None
    assert await cluster.kv.get(cluster.keys.vni(rec.vni)) is not None
    status, rows, _ = await call(client, "GET", "/v1.41/networks")
    row = next(r for r in rows if r["Id"] == net_id)
    assert (row["Name"], row["Scope"], row["Driver"]) == ("node-1/loc", "local", "bridge")
    assert await names(client, {"type": ["custom"]}) == ["node-1/loc"]
    assert await names(client, {"scope": ["local"]}) == sorted([*ALL, "node-1/loc"])
    assert await names(client, {"scope": ["global"]}) == []
    bridges = ["node-0/bridge", "node-1/bridge", "node-1/loc"]
    assert await names(client, {"driver": ["bridge"]}) == bridges
    assert await names(client, {"node": ["node-0"]}) == ALL[:3]
    assert await names(client, {"name": ["node-1/l"]}) == ["node-1/loc"]
    assert await names(client, {"name": ["loc"]}) == ["node-1/loc"]
    # inspect: node/name (by node name or ID), the bare name while unambiguous, ID, prefix;
    # the answer is the node's own view: the bare name.
    for ref in ("node-1/loc", "ID1/loc", "loc", net_id, net_id[:10]):
        status, doc, _ = await call(client, "GET", f"/v1.41/networks/{ref}")
        assert status == 200, (ref, doc)
        assert (doc["Name"], doc["Id"], doc["Scope"], doc["Driver"]) == (
            "loc",
            net_id,
            "local",
            "bridge",
        )
        assert doc["Labels"] == {"a": "b"} and doc["IPAM"]["Config"][0]["Subnet"]
    for ref in ("node-0/loc", "node-9/loc"):
        status, doc, _ = await call(client, "GET", f"/networks/{ref}")
        assert (status, doc) == (404, {"message": f"network {ref} not found"})


async def test_names_are_unique_per_node_and_against_overlays(api: Any) -> None:
    client, _ = api
    first = await _create(client, "node-0/loc")
    exists = {"message": "network with name loc already exists"}
    for name in ("node-0/loc", "ID0/loc", "loc"):  # the same node again, or an overlay
        status, doc, _ = await call(client, "POST", "/networks/create", json={"Name": name})
        assert (status, doc) == (409, exists), name
    second = await _create(client, "node-1/loc")  # another node: its own `loc`
    status, doc, _ = await call(client, "GET", "/networks/loc")
    assert (status, doc) == (
        404,
        {"message": "network loc is ambiguous (2 matches found based on name)"},
    )
    for ref, net_id in (("node-0/loc", first), ("node-1/loc", second)):
        status, doc, _ = await call(client, "GET", f"/networks/{ref}")
        assert doc["Id"] == net_id
    # An overlay network's name is taken on every node.
    status, _, _ = await call(client, "POST", "/networks/create", json={"Name": "ovl"})
    assert status == 201
    status, doc, _ = await call(client, "POST", "/networks/create", json={"Name": "node-0/ovl"})
    assert (status, doc) == (409, {"message": "network with name ovl already exists"})
    # `-d overlay node/NAME`: Swarm has that node's engine make a global network.
    status, doc, _ = await call(
        client, "POST", "/networks/create", json={"Name": "node-0/glob", "Driver": "overlay"}
    )
    assert status == 201
    _, doc, _ = await call(client, "GET", "/networks/glob")
    assert (doc["Scope"], doc["Driver"]) == ("global", "overlay")
    status, doc, _ = await call(client, "POST", "/networks/create", json={"Name": "node-0/a/b"})
    assert status == 400 and doc["message"].startswith("invalid name: node-0/a/b")


async def test_scope_local_bridge_goes_to_the_schedulers_node(api: Any) -> None:
    client, cluster = api
    net_id = await _create(client, "picked", Scope="local")
    rec = (await NetworkStore(cluster.kv, cluster.keys).get(net_id) or (None, 0))[0]
    assert rec is not None and rec.driver == "bridge" and rec.node_id in ("ID0", "ID1")
    _, doc, _ = await call(client, "GET", "/networks/picked")
    assert (doc["Scope"], doc["Driver"]) == ("local", "bridge")
    # Without the scope, the CLI's default `bridge` is the cluster's default: an overlay.
    net_id = await _create(client, "spanning")
    rec = (await NetworkStore(cluster.kv, cluster.keys).get(net_id) or (None, 0))[0]
    assert rec is not None and (rec.driver, rec.node_id) == ("overlay", "")


async def test_remove_and_prune(api: Any) -> None:
    client, cluster = api
    await _create(client, "node-0/gone")
    await _create(client, "node-1/gone")
    status, _, body = await call(client, "DELETE", "/v1.41/networks/node-0/gone")
    assert (status, body) == (204, b"")
    assert await cluster.kv.get(cluster.keys.network_name("gone", "ID0")) is None
    assert await names(client, {"type": ["custom"]}) == ["node-1/gone"]
    status, doc, _ = await call(client, "POST", "/networks/prune")
    assert (status, doc) == (200, {"NetworksDeleted": ["gone"]})
    assert await names(client, {"type": ["custom"]}) == []


async def test_connect_only_from_the_networks_node(api: Any) -> None:
    client, cluster = api
    here = await _create(client, "node-1/here")
    await _create(client, "node-0/there")
    status, _, _ = await call(
        client, "POST", "/networks/node-1/here/connect", json={"Container": "web"}
    )
    assert status == 200
    assert cluster.stubs["ID1"].calls == [("connect", here, {"Container": WEB})]
    status, doc, _ = await call(
        client, "POST", "/networks/node-0/there/disconnect", json={"Container": "web"}
    )
    message = "network node-0/there is local to node node-0: container web on node node-1 "
    assert (status, doc) == (403, {"message": message + "cannot disconnect it"})
    assert cluster.stubs["ID0"].calls == [] and len(cluster.stubs["ID1"].calls) == 1


async def test_container_create_body_names_the_bare_network_and_its_node(api: Any) -> None:
    client, cluster = api
    net_id = await _create(client, "node-1/loc")
    other = await _create(client, "node-0/other")
    ovl = (await call(client, "POST", "/networks/create", json={"Name": "ovl"}))[1]["Id"]
    records = await NetworkStore(cluster.kv, cluster.keys).all()
    body = {
        "Image": "busybox",
        "HostConfig": {"NetworkMode": "node-1/loc"},
        "NetworkingConfig": {
            "EndpointsConfig": {"ovl": {}, "node-1/loc": {"Aliases": ["db"]}, "bridge": {}}
        },
    }
    out, home = with_network_ids(body, records, cluster.node_name)
    assert home is not None and (home.node_id, home.ref) == ("ID1", "node-1/loc")
    assert out["HostConfig"] == {"NetworkMode": "loc"}
    endpoints = out["NetworkingConfig"]["EndpointsConfig"]
    assert list(endpoints) == ["ovl", "loc", "bridge"]  # connect order kept
    assert endpoints["loc"] == {"Aliases": ["db"], "NetworkID": net_id}
    assert endpoints["ovl"] == {"NetworkID": ovl} and endpoints["bridge"] == {}
    # The bare name while unambiguous, and by ID.
    for ref in ("loc", net_id):
        out, home = with_network_ids(
            {"HostConfig": {"NetworkMode": ref}}, records, cluster.node_name
        )
        assert home is not None and home.node_id == "ID1"
        assert out["NetworkingConfig"]["EndpointsConfig"] == {"loc": {"NetworkID": net_id}}
    both = {
        "HostConfig": {"NetworkMode": "node-1/loc"},
        "NetworkingConfig": {"EndpointsConfig": {"node-0/other": {}}},
    }
    with pytest.raises(InvalidParameter, match="local to different nodes"):
        with_network_ids(both, records, cluster.node_name)
    assert other
    with pytest.raises(NotFound, match="^network node-0/loc not found$"):
        with_network_ids({"HostConfig": {"NetworkMode": "node-0/loc"}}, records, cluster.node_name)


def test_soft_node_constraint_unless_a_hard_one() -> None:
    assert _prefer_node({"Env": ["A=1"]}, "node-1")["Env"] == ["A=1", "constraint:node==~node-1"]
    hard = {"Env": ["constraint:node==node-0"]}
    assert _prefer_node(hard, "node-1") is hard
    labelled = {"Labels": {"com.docker.swarm.constraints": '["node==node-0"]'}}
    assert _prefer_node(labelled, "node-1") is labelled
    soft = {"Env": ["constraint:node==~node-0"]}
    assert _prefer_node(soft, "node-1")["Env"][-1] == "constraint:node==~node-1"
    assert ls_filter({}) == {"filters": "{}"}
