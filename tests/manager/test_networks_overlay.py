"""Overlay networks through manager/api/networks.py: the real aiohttp app on a real etcd, next to
the fake two-node cluster of test_networks.py (its fixtures)."""

from __future__ import annotations

import re
from ipaddress import IPv4Network
from typing import Any

import pytest

from manager.api.networks_overlay import with_network_ids
from manager.network_store import NetworkStore
from proto.docker.endpoints import endpoint_id
from proto.docker.errors import NotFound
from proto.records_pb2 import EndpointRecord
from tests.manager.test_networks import ALL, WEB, api, call, ls_filter, names

__all__ = ["api"]

RFC3339NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


async def _create(client: Any, body: dict[str, Any]) -> str:  # noqa: ANN401
    status, doc, raw = await call(client, "POST", "/v1.41/networks/create", json=body)
    assert status == 201, doc
    assert list(doc) == ["Id", "Warning"] and doc["Warning"] == ""
    assert raw.endswith(b"\n") or raw.endswith(b"}")
    return str(doc["Id"])


async def test_create_inspect_in_dockerds_shape(api: Any) -> None:
    client, cluster = api
    # docker-compose 1.29's body for a project network: no Driver (overlay by default).
    labels = {"com.docker.compose.project": "p", "team": "a"}
    body = {"Name": "p_default", "CheckDuplicate": True, "Labels": labels, "Attachable": True}
    net_id = await _create(client, body)
    status, doc, _ = await call(client, "GET", "/v1.41/networks/p_default")
    assert status == 200
    assert list(doc) == [
        "Name",
        "Id",
        "Created",
        "Scope",
        "Driver",
        "EnableIPv6",
        "IPAM",
        "Internal",
        "Attachable",
        "Ingress",
        "ConfigFrom",
        "ConfigOnly",
        "Containers",
        "Options",
        "Labels",
    ]
    assert (doc["Name"], doc["Id"], doc["Driver"], doc["Scope"]) == (
        "p_default",
        net_id,
        "overlay",
        "global",
    )
    assert RFC3339NANO.match(doc["Created"])
    subnet = IPv4Network(doc["IPAM"]["Config"][0]["Subnet"])
    assert subnet.subnet_of(IPv4Network("10.0.0.0/8")) and subnet.prefixlen == 24
    assert doc["IPAM"] == {
        "Driver": "default",
        "Options": {},
        "Config": [{"Subnet": str(subnet), "Gateway": str(subnet.network_address + 1)}],
    }
    assert (doc["Attachable"], doc["Internal"], doc["Labels"], doc["Options"]) == (
        True,
        False,
        labels,
        {},
    )
    assert doc["Containers"] == {}
    for ref in (net_id, net_id[:12]):
        assert (await call(client, "GET", f"/networks/{ref}"))[1] == doc
    status, doc, _ = await call(client, "POST", "/networks/create", json=body)
    assert (status, doc) == (409, {"message": "network with name p_default already exists"})


async def test_user_ipam_flags_and_errors(api: Any) -> None:
    client, _ = api
    body = {
        "Name": "u",
        "Driver": "overlay",
        "Internal": True,
        "Options": {"com.example.x": "1"},
        "IPAM": {
            "Driver": "default",
            "Config": [
                {"Subnet": "10.50.0.0/16", "Gateway": "10.50.0.254", "IPRange": "10.50.1.0/24"}
            ],
        },
    }
    await _create(client, body)
    _, doc, _ = await call(client, "GET", "/networks/u")
    assert doc["IPAM"]["Config"] == [
        {"Subnet": "10.50.0.0/16", "Gateway": "10.50.0.254", "IPRange": "10.50.1.0/24"}
    ]
    assert (doc["Internal"], doc["Options"]) == (True, {"com.example.x": "1"})
    cases: list[tuple[dict[str, Any], int, str]] = [
        (
            {"IPAM": {"Config": [{"Subnet": "10.50.7.0/24"}]}},
            403,
            "Pool overlaps with other one on this address space",
        ),
        (
            {"IPAM": {"Config": [{"Subnet": "10.60.0.0/24", "Gateway": "10.61.0.1"}]}},
            400,
            "failed to allocate gateway (10.61.0.1): Requested address is out of range",
        ),
        (
            {"IPAM": {"Config": [{"Subnet": "10.60.0.0/24", "IPRange": "10.61.0.0/25"}]}},
            400,
            "Invalid Address SubPool",
        ),
        ({"IPAM": {"Config": [{"Subnet": "bogus"}]}}, 400, "Invalid Address Pool"),
        (
            {"EnableIPv6": True},
            501,
            "flotilla's overlay networks are IPv4 only: IPv6 is not supported",
        ),
        ({"Driver": "weave"}, 404, 'plugin "weave" not found'),
        ({"Driver": "host"}, 403, 'only one instance of "host" network is allowed'),
        ({"IPAM": {"Driver": "x"}}, 404, 'plugin "x" not found'),
    ]
    for extra, status, message in cases:
        got = await call(client, "POST", "/networks/create", json={"Name": "v", **extra})
        assert got[:2] == (status, {"message": message}), extra
    assert await names(client, {"name": ["^v$"]}) == []
    # The docker CLI's own body for `docker network create w`: its default driver is bridge.
    cli = {
        "Driver": "bridge",
        "Scope": "",
        "IPAM": {"Driver": "default", "Options": {}, "Config": []},
        "Internal": False,
        "Attachable": False,
        "Ingress": False,
        "ConfigOnly": False,
        "ConfigFrom": None,
        "Options": {},
        "Labels": {},
        "Name": "w",
        "CheckDuplicate": True,
    }
    await _create(client, cli)
    _, doc, _ = await call(client, "GET", "/networks/w")
    assert (doc["Driver"], doc["Scope"]) == ("overlay", "global")


async def test_list_once_next_to_builtins_with_filters(api: Any) -> None:
    client, _ = api
    a = await _create(client, {"Name": "alpha", "Labels": {"tier": "web"}})
    await _create(client, {"Name": "beta"})
    assert await names(client, {}) == sorted([*ALL, "alpha", "beta"])
    assert await names(client, {"type": ["custom"]}) == ["alpha", "beta"]
    assert await names(client, {"type": ["builtin"]}) == ALL
    assert await names(client, {"driver": ["overlay"]}) == ["alpha", "beta"]
    assert await names(client, {"scope": ["global"]}) == ["alpha", "beta"]
    assert await names(client, {"scope": ["local"]}) == ALL
    assert await names(client, {"label": ["tier=web"]}) == ["alpha"]
    assert await names(client, {"name": ["alp"]}) == ["alpha"]
    assert await names(client, {"id": [a[:10]]}) == ["alpha"]
    assert await names(client, {"node": ["node-1"]}) == sorted([*ALL[3:], "alpha", "beta"])
    status, rows, _ = await call(client, "GET", "/networks")
    assert all(r["Containers"] == {} for r in rows)
    status, doc, _ = await call(client, "GET", "/networks", params=ls_filter({"scope": ["x"]}))
    assert (status, doc) == (400, {"message": "Invalid filter: 'scope'='x'"})


async def test_containers_from_endpoints_and_remove_refused(api: Any) -> None:
    client, cluster = api
    net_id = await _create(client, {"Name": "busy"})
    _, doc, _ = await call(client, "GET", "/networks/busy")
    ip = str(IPv4Network(doc["IPAM"]["Config"][0]["Subnet"]).network_address + 2)
    ep = EndpointRecord(
        network_id=net_id, ip=ip, mac="02:42:0a:00:00:02", container_id=WEB, container_name="web"
    )
    key = cluster.keys.endpoint(net_id, ip)
    await cluster.kv.put(key, ep.SerializeToString())
    try:
        _, doc, _ = await call(client, "GET", f"/networks/{net_id}")
        assert doc["Containers"] == {
            WEB: {
                "Name": "web",
                "EndpointID": endpoint_id(net_id, WEB),
                "MacAddress": "02:42:0a:00:00:02",
                "IPv4Address": f"{ip}/24",
                "IPv6Address": "",
            }
        }
        status, doc, _ = await call(client, "DELETE", "/v1.41/networks/busy")
        message = f"error while removing network: network busy id {net_id} has active endpoints"
        assert (status, doc) == (403, {"message": message})
        status, doc, _ = await call(client, "POST", "/networks/prune")
        assert (status, doc) == (200, {"NetworksDeleted": None})
    finally:
        await cluster.kv.delete(key)
    status, _, body = await call(client, "DELETE", "/v1.41/networks/busy")
    assert (status, body) == (204, b"")
    status, doc, _ = await call(client, "DELETE", "/v1.41/networks/busy")
    assert (status, doc) == (404, {"message": "network busy not found"})


async def test_prune_honours_label_filters(api: Any) -> None:
    client, _ = api
    await _create(client, {"Name": "keep", "Labels": {"keep": "1"}})
    await _create(client, {"Name": "drop"})
    status, doc, _ = await call(
        client, "POST", "/networks/prune", params=ls_filter({"label!": ["keep"]})
    )
    assert (status, doc) == (200, {"NetworksDeleted": ["drop"]})
    status, doc, _ = await call(
        client, "POST", "/networks/prune", params=ls_filter({"until": ["1000"]})
    )
    assert (status, doc) == (200, {"NetworksDeleted": None})  # created after 1970 + 1000 s
    status, doc, _ = await call(client, "POST", "/networks/prune")
    assert (status, doc) == (200, {"NetworksDeleted": ["keep"]})


async def test_connect_and_disconnect_go_to_the_containers_node(api: Any) -> None:
    client, cluster = api
    net_id = await _create(client, {"Name": "app"})
    body = {"Container": "web", "EndpointConfig": {"Aliases": ["w"], "IPAMConfig": {}}}
    status, _, raw = await call(client, "POST", "/v1.41/networks/app/connect", json=body)
    assert (status, raw) == (200, b"")
    status, _, _ = await call(
        client,
        "POST",
        f"/networks/{net_id[:8]}/disconnect",
        json={"Container": WEB, "Force": False},
    )
    assert status == 200
    assert cluster.stubs["ID1"].calls == [
        ("connect", net_id, {**body, "Container": WEB}),
        ("disconnect", net_id, {"Container": WEB, "Force": False}),
    ]
    assert cluster.stubs["ID0"].calls == []
    # The agent's refusal reaches the client as it is.
    cluster.stubs["ID1"].refuse = NotFound(f"container {WEB} is not connected to network app")
    status, doc, _ = await call(
        client, "POST", "/networks/app/disconnect", json={"Container": "web"}
    )
    assert (status, doc) == (404, {"message": f"container {WEB} is not connected to network app"})
    status, doc, _ = await call(client, "POST", "/networks/app/connect", json={"Container": "x"})
    assert (status, doc) == (404, {"message": "No such container: x"})


async def test_container_create_body_gets_network_ids(api: Any) -> None:
    client, cluster = api
    net_id = await _create(client, {"Name": "front"})
    records = await NetworkStore(cluster.kv, cluster.keys).all()
    body = {
        "Image": "busybox",
        "HostConfig": {"NetworkMode": "front"},
        "NetworkingConfig": {"EndpointsConfig": {"front": {"Aliases": ["web"]}}},
    }

    def ids(body: dict[str, Any]) -> dict[str, Any]:
        out, home = with_network_ids(body, records, cluster.node_name)
        assert home is None  # an overlay network places nothing
        return out

    out = ids(body)
    assert out["HostConfig"] == {"NetworkMode": "front"}
    assert out["NetworkingConfig"]["EndpointsConfig"] == {
        "front": {"Aliases": ["web"], "NetworkID": net_id}
    }
    by_prefix = ids({"HostConfig": {"NetworkMode": net_id[:12]}})
    assert by_prefix["NetworkingConfig"] == {
        "EndpointsConfig": {net_id[:12]: {"NetworkID": net_id}}
    }
    for mode in ("default", "bridge", "host", "none", "container:abc", "node-1/bridge"):
        plain = {"HostConfig": {"NetworkMode": mode}}
        assert ids(plain) is plain
    with pytest.raises(NotFound, match="^network nosuch not found$"):
        ids({"HostConfig": {"NetworkMode": "nosuch"}})
    with pytest.raises(NotFound, match="^network other not found$"):
        ids({"NetworkingConfig": {"EndpointsConfig": {"other": {}}}})
