"""runtime.networks: the node's built-in networks as dockerd shows them, from real containers."""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from runtime.containers import Runtime
from runtime.network import Bridge
from runtime.networks import BuiltinNetworks
from runtime.views import inspect
from tests.fixtures import SUBNET, runtime_for_tests

ID = re.compile(r"[0-9a-f]{64}")
GOLDEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden")


def golden(name: str) -> Any:
    with open(os.path.join(GOLDEN, name)) as f:
        return json.load(f)


def shape(value: Any) -> Any:
    """Keys (in order) and value types, recursively: what must match dockerd's JSON.
    Container IDs used as keys count as one key."""
    if isinstance(value, dict):
        return [("<id>" if ID.fullmatch(k) else k, shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


@pytest.fixture
async def rt(busybox_tar: str) -> AsyncIterator[Runtime]:
    async with runtime_for_tests(busybox_tar) as runtime:
        yield runtime


def by_name(views: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {v["Name"]: v for v in views}


def test_identities_are_made_once_and_kept(tmp_path: Any) -> None:
    bridge = Bridge(str(tmp_path), "fltx0", SUBNET)
    first = by_name(BuiltinNetworks(str(tmp_path), bridge).views([], verbose=False))
    again = by_name(BuiltinNetworks(str(tmp_path), bridge).views([], verbose=False))
    assert list(first) == ["bridge", "host", "none"]
    for name, view in first.items():
        assert ID.fullmatch(view["Id"])
        assert (view["Id"], view["Created"]) == (again[name]["Id"], again[name]["Created"])
    assert len({v["Id"] for v in first.values()}) == 3
    other = by_name(BuiltinNetworks(str(tmp_path / "other"), bridge).views([], verbose=False))
    assert other["bridge"]["Id"] != first["bridge"]["Id"]  # another node, another ID


def test_list_shapes_match_dockerd(tmp_path: Any) -> None:
    bridge = Bridge(str(tmp_path), "fltx0", SUBNET)
    views = by_name(BuiltinNetworks(str(tmp_path), bridge).views([], verbose=False))
    gold = by_name(golden("networks.json"))
    for name in ("bridge", "host", "none"):
        assert shape(views[name]) == shape(gold[name]), name
        for key in ("Scope", "Driver", "EnableIPv6", "Internal", "ConfigFrom", "Labels"):
            assert views[name][key] == gold[name][key], (name, key)
    assert views["bridge"]["IPAM"]["Config"] == [{"Subnet": SUBNET}]
    options = views["bridge"]["Options"]
    assert options["com.docker.network.bridge.name"] == "fltx0"
    assert {k: v for k, v in options.items() if not k.endswith(".name")} == {
        k: v for k, v in gold["bridge"]["Options"].items() if not k.endswith(".name")
    }
    assert views["host"]["Options"] == views["none"]["Options"] == {}


async def test_containers_on_each_network(rt: Runtime) -> None:
    recs = {}
    for mode in ("bridge", "host", "none"):
        recs[mode] = await rt.create(
            {"Image": "busybox", "Cmd": ["sleep", "60"], "HostConfig": {"NetworkMode": mode}},
            name=f"on-{mode}",
        )
        await rt.start(recs[mode].id)
    shared = await rt.create(
        {
            "Image": "busybox",
            "Cmd": ["sleep", "60"],
            "HostConfig": {"NetworkMode": "container:on-bridge"},
        }
    )
    await rt.start(shared.id)
    stopped = await rt.create({"Image": "busybox", "Cmd": ["true"]}, name="never-started")

    listed = by_name(rt.networks.views(rt.list(), verbose=False))
    assert all(v["Containers"] == {} for v in listed.values())  # dockerd's list leaves it empty

    views = by_name(rt.networks.views(rt.list(), verbose=True))
    bridge = recs["bridge"]
    settings = inspect(rt, bridge)["NetworkSettings"]
    ep = views["bridge"]["Containers"]
    assert list(ep) == [bridge.id]  # neither the container: one nor the stopped one
    assert ep[bridge.id] == {
        "Name": "on-bridge",
        "EndpointID": settings["EndpointID"],
        "MacAddress": settings["MacAddress"],
        "IPv4Address": f"{settings['IPAddress']}/{settings['IPPrefixLen']}",
        "IPv6Address": "",
    }
    gold = golden("network-inspect-bridge.json")
    assert shape(views["bridge"]) == shape(gold)
    for mode in ("host", "none"):
        assert views[mode]["Containers"] == {
            recs[mode].id: {
                "Name": f"on-{mode}",
                "EndpointID": recs[mode].id,
                "MacAddress": "",
                "IPv4Address": "",
                "IPv6Address": "",
            }
        }
    assert shared.id not in json.dumps(views) and stopped.id not in json.dumps(views)

    await rt.stop(bridge.id, timeout=0)
    after = by_name(rt.networks.views(rt.list(), verbose=True))
    assert after["bridge"]["Containers"] == {}
