"""Unit tests: Swarm's node address in reported ports, host-mode exposed ports as placements,
and `com.docker.swarm.id` generation and resolution in the manager's cluster view."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from manager.api.node_ports import inspect_ports, list_row_ports, node_ip
from manager.cluster import Cluster, Placement, placement_from_body
from proto.docker.errors import NotFound
from proto.keys import Keys
from proto.kv import WatchEvent
from proto.logical import SWARM_ID_LABEL
from proto.records_pb2 import ContainerStatus, NodeRecord


def test_node_ip() -> None:
    assert node_ip(NodeRecord(addr="10.99.0.2:7001")) == "10.99.0.2"
    assert node_ip(NodeRecord(addr="[fd00::2]:7001")) == "fd00::2"


def test_ps_ports_get_the_node_address() -> None:
    row: dict[str, Any] = {
        "Ports": [
            {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"IP": "127.0.0.1", "PrivatePort": 81, "PublicPort": 8081, "Type": "tcp"},
            {"PrivatePort": 82, "Type": "tcp"},  # exposed, not published
        ]
    }
    list_row_ports(row, "10.99.0.2")
    assert [p.get("IP") for p in row["Ports"]] == ["10.99.0.2", "10.99.0.2", "127.0.0.1", None]
    list_row_ports({"Ports": None}, "10.99.0.2")


def test_inspect_ports_get_the_node_address() -> None:
    body: dict[str, Any] = {
        "NetworkSettings": {
            "Ports": {
                "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
                "81/tcp": [{"HostIp": "", "HostPort": "8081"}],
                "82/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8082"}],
                "83/tcp": None,
            }
        }
    }
    inspect_ports(body, "10.99.0.2")
    ports = body["NetworkSettings"]["Ports"]
    assert ports["80/tcp"][0]["HostIp"] == "10.99.0.2"
    assert ports["81/tcp"][0]["HostIp"] == "10.99.0.2"
    assert ports["82/tcp"][0]["HostIp"] == "127.0.0.1"
    assert ports["83/tcp"] is None
    inspect_ports({"NetworkSettings": None}, "10.99.0.2")


def test_host_mode_exposed_ports_are_host_ports() -> None:
    body = {
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}, "bogus": {}},
        "HostConfig": {"NetworkMode": "host"},
    }
    assert placement_from_body("n", "", body).host_ports == [("", 80, "tcp"), ("", 53, "udp")]
    body["HostConfig"] = {"NetworkMode": "bridge"}  # exposed only: the node's port stays free
    assert placement_from_body("n", "", body).host_ports == []


def _cluster() -> Cluster:
    cluster = Cluster(kv=None, keys=Keys("/flotilla"))  # type: ignore[arg-type]
    cluster.nodes["node-a"] = NodeRecord(id="node-a", name="node-1", addr="10.99.0.2:7001")
    return cluster


def test_status_keeps_the_exposed_ports_of_a_host_mode_container() -> None:
    cluster = _cluster()
    cid = "a" * 64
    body = {"ExposedPorts": {"80/tcp": {}}, "HostConfig": {"NetworkMode": "host"}}
    cluster.created(placement_from_body("node-a", "web", body), cid)
    status = ContainerStatus(
        id=cid, node_id="node-a", name="web", host_config_json=b'{"NetworkMode": "host"}'
    )
    key = cluster.keys.status("node-a", cid)
    cluster._apply_status(WatchEvent("put", key, status.SerializeToString(), 2))
    assert cluster.placements[cid].host_ports == [("", 80, "tcp")]


def test_swarm_id_is_generated_kept_and_resolved() -> None:
    cluster = _cluster()
    body = cluster.with_swarm_id({"Image": "busybox", "Labels": None})
    sid = body["Labels"][SWARM_ID_LABEL]
    assert re.fullmatch(r"[0-9a-f]{64}", sid)
    other = cluster.with_swarm_id({"Image": "busybox"})["Labels"][SWARM_ID_LABEL]
    assert other != sid
    mine = {"Labels": {SWARM_ID_LABEL: "x" * 64, "a": "b"}}
    assert cluster.with_swarm_id(mine) is mine  # Swarm keeps a client's ID
    empty = cluster.with_swarm_id({"Labels": {SWARM_ID_LABEL: ""}})
    assert len(empty["Labels"][SWARM_ID_LABEL]) == 64  # ... unless it is empty

    cid = "f" * 64
    cluster.created(placement_from_body("node-a", "web", body), cid)
    resolve = cluster.resolve
    assert asyncio.run(resolve(sid)) == ("node-a", cid)
    assert asyncio.run(resolve(sid[:12])) == ("node-a", cid)
    # Once the node's status record is in, its labels are the word.
    cluster.statuses[cid] = ContainerStatus(
        id=cid, node_id="node-a", name="web", labels={SWARM_ID_LABEL: sid}
    )
    assert asyncio.run(resolve(sid)) == ("node-a", cid)
    # The same ID on two containers is no reference (and asks the agents, here none).
    twin = Placement(node_id="node-a", name="twin", image="", labels={SWARM_ID_LABEL: sid})
    cluster.created(twin, "e" * 64)
    cluster.nodes.clear()
    with pytest.raises(NotFound):
        asyncio.run(resolve(sid))


def test_dependencies_named_by_swarm_id_go_to_the_node_as_ids() -> None:
    cluster = _cluster()
    body = cluster.with_swarm_id({"Image": "busybox"})
    sid = body["Labels"][SWARM_ID_LABEL]
    cid = "d" * 64
    cluster.created(placement_from_body("node-a", "db", body), cid)
    create = {
        "Image": "busybox",
        "HostConfig": {
            "Links": [f"{sid}:peer", "db:db2"],
            "VolumesFrom": [f"{sid[:12]}:ro", "other"],
            "NetworkMode": f"container:{sid}",
        },
    }
    host = cluster.dependencies_by_id(create)["HostConfig"]
    assert host["Links"] == [f"{cid}:peer", "db:db2"]
    assert host["VolumesFrom"] == [f"{cid}:ro", "other"]
    assert host["NetworkMode"] == f"container:{cid}"
    plain = {"HostConfig": {"Links": ["db:db2"], "NetworkMode": "bridge"}}
    assert cluster.dependencies_by_id(plain) is plain
