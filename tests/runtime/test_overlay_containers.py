"""Real containers on user-defined (overlay) networks through the runtime: the real OverlayPlane
(its VTEP an address on a dummy link of the test session's netns) and the in-memory directory."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from proto.docker.errors import DockerError, InvalidParameter, NotFound, SystemError_
from runtime import image_transfer
from runtime.containers import Runtime
from runtime.network import mac_for_ip
from runtime.overlay import OverlayPlane, OverlaySpec, bridge_name
from runtime.record import ContainerRecord
from runtime.user_networks import UserNetworks
from runtime.views import inspect, summary
from tests.fixtures import SUBNET, remove_runtime
from tests.runtime.memory_directory import MemoryDirectory
from tests.runtime.test_containers import _read_tcp

VTEP = "10.249.0.1"
GOLDEN = "/work/shared/reference/dockerd-golden/container-inspect-running.json"
ENTRY_KEYS = [
    "IPAMConfig",
    "Links",
    "Aliases",
    "NetworkID",
    "EndpointID",
    "Gateway",
    "IPAddress",
    "IPPrefixLen",
    "IPv6Gateway",
    "GlobalIPv6Address",
    "GlobalIPv6PrefixLen",
    "MacAddress",
    "DriverOpts",
]


@dataclass
class Env:
    rt: Runtime
    directory: MemoryDirectory
    plane: OverlayPlane
    a: OverlaySpec
    b: OverlaySpec


def _sh(*argv: str) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True).stdout


@pytest.fixture
async def env(busybox_tar: str) -> AsyncIterator[Env]:
    underlay = f"fltul{secrets.token_hex(3)}"
    _sh("ip", "link", "add", underlay, "type", "bridge")  # no dummy module on the test hosts
    root = tempfile.mkdtemp(prefix="flt-rt-")
    try:
        _sh("ip", "addr", "add", f"{VTEP}/24", "dev", underlay)
        _sh("ip", "link", "set", underlay, "up")
        node = f"t{secrets.token_hex(3)}"
        directory = MemoryDirectory()
        plane = OverlayPlane(VTEP, default_bridge=f"flt{node}")
        a = directory.add("neta", "10.91.0.0/24", vni=4091)
        b = directory.add("netb", "10.92.0.0/24", vni=4092)
        rt = Runtime(
            root,
            node_name=node,
            bridge_name=f"flt{node}",
            bridge_subnet=SUBNET,
            directory=directory,
            plane=plane,
        )
        await rt.open()
        with open(busybox_tar, "rb") as f:
            image_transfer.import_tarball(rt.images, f, "busybox:latest", ['CMD ["sh"]'])
        try:
            yield Env(rt, directory, plane, a, b)
        finally:
            leaked = await remove_runtime(rt)
            present = await asyncio.to_thread(plane.present)
            for net in directory.networks.values():
                await asyncio.to_thread(plane.teardown, net.spec)
            assert leaked == []
            assert os.listdir(rt.paths.netns) == []
            assert directory.claims == {}
            assert present == []
    finally:
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["ip", "link", "del", underlay], check=False)


async def _create(rt: Runtime, network: str, cmd: list[str], **extra: Any) -> ContainerRecord:
    body: dict[str, Any] = {"Image": "busybox", "Cmd": cmd, "HostConfig": {"NetworkMode": network}}
    endpoint = extra.pop("endpoint", None)
    if endpoint is not None:
        body["NetworkingConfig"] = {"EndpointsConfig": {network: endpoint}}
    return await rt.create(body | extra)


async def _sleeper(rt: Runtime, network: str, name: str, **extra: Any) -> ContainerRecord:
    rec = await rt.create(
        {"Image": "busybox", "Cmd": ["sleep", "300"], "HostConfig": {"NetworkMode": network}}
        | ({"NetworkingConfig": {"EndpointsConfig": {network: extra}}} if extra else {}),
        name=name,
    )
    await rt.start(rec.id)
    return rec


def _addrs(rec: ContainerRecord) -> dict[str, str]:
    """{ifname: ip/prefix} inside the container's netns (lo left out)."""
    out = _sh("nsenter", f"--net={rec.net.netns_path}", "ip", "-4", "-o", "addr", "show")
    found = re.findall(r"^\d+: (\S+)\s+inet (\S+)", out, re.M)
    return {name: addr for name, addr in found if name != "lo"}


async def _ping(rt: Runtime, network: str, ip: str) -> int:
    rec = await rt.create(
        {
            "Image": "busybox",
            "Cmd": ["ping", "-c", "1", "-W", "3", ip],
            "HostConfig": {"NetworkMode": network},
        }
    )
    try:
        await rt.start(rec.id)
        return int((await rt.wait(rec.id))["StatusCode"])
    finally:
        await rt.remove(rec.id, force=True)


def _ping_from(rt: Runtime, rec: ContainerRecord, ip: str) -> int:
    """Ping from the container's netns with the image's own (static) busybox."""
    busybox = next(
        os.path.join(d, "bin", "busybox")
        for d in rt.lowerdirs(rec)
        if os.path.exists(os.path.join(d, "bin", "busybox"))
    )
    argv = ["nsenter", f"--net={rec.net.netns_path}", busybox, "ping", "-c", "1", "-W", "3", ip]
    return subprocess.run(argv, capture_output=True).returncode


def _links() -> set[str]:
    return set(re.findall(r"^\d+: ([^:@]+)", _sh("ip", "-o", "link", "show"), re.M))


async def test_two_containers_on_one_network_reach_each_other(env: Env) -> None:
    rt = env.rt
    web = await _sleeper(rt, "neta", "web", Aliases=["www"])
    info = inspect(rt, web)
    entry = info["NetworkSettings"]["Networks"]["neta"]
    ip = entry["IPAddress"]
    assert _addrs(web) == {"eth0": f"{ip}/24"}
    assert await _ping(rt, "neta", ip) == 0
    # The shape of dockerd's endpoint on a user network (dockerd-golden, API 1.41).
    with open(GOLDEN) as f:
        golden = json.load(f)["NetworkSettings"]
    assert list(entry) == ENTRY_KEYS == list(golden["Networks"]["goldnet"])
    assert list(info["NetworkSettings"]) == list(golden)
    assert list(info["NetworkSettings"]["Networks"]) == ["neta"]
    assert entry["NetworkID"] == env.a.id
    assert re.fullmatch(r"[0-9a-f]{64}", entry["EndpointID"])
    assert (entry["Gateway"], entry["IPPrefixLen"]) == ("10.91.0.1", 24)
    assert entry["MacAddress"] == mac_for_ip(ip)
    assert entry["Aliases"] == ["www", web.id[:12]]
    assert entry["IPAMConfig"] is None
    # Top-level fields are the default bridge's: none here, as dockerd.
    top = info["NetworkSettings"]
    assert (top["IPAddress"], top["Gateway"], top["MacAddress"], top["EndpointID"]) == ("",) * 4
    assert top["SandboxKey"] == web.net.netns_path
    assert summary(rt, web)["NetworkSettings"]["Networks"]["neta"] == entry
    # The directory was asked for the address with the DNS names, and served the netns.
    request = env.directory.claims[(env.a.id, ip)]
    assert (request.container_name, request.aliases) == ("web", ("www", web.id[:12]))
    assert (web.id, web.net.netns_path, ["neta"]) in env.directory.joins
    with open(os.path.join(rt.paths.container(web.id), "resolv.conf")) as f:
        assert "nameserver 127.0.0.11" in f.read()
    with open(os.path.join(rt.paths.container(web.id), "hosts")) as f:
        assert f"{ip}\t{web.id[:12]}" in f.read()


async def test_two_networks_and_a_fixed_address(env: Env) -> None:
    rt = env.rt
    rec = await _create(
        rt, "neta", ["sleep", "300"], endpoint={"IPAMConfig": {"IPv4Address": "10.91.0.50"}}
    )
    await rt.connect(rec.id, "netb", {"Aliases": ["bee"]})
    created = inspect(rt, rec)["NetworkSettings"]["Networks"]
    assert list(created) == ["neta", "netb"]
    assert created["neta"]["IPAMConfig"] == {"IPv4Address": "10.91.0.50"}
    assert created["neta"]["NetworkID"] == "" and created["neta"]["IPAddress"] == ""
    await rt.start(rec.id)
    nets = inspect(rt, rec)["NetworkSettings"]["Networks"]
    assert nets["neta"]["IPAddress"] == "10.91.0.50"
    ip_b = nets["netb"]["IPAddress"]
    assert ip_b.startswith("10.92.0.")
    assert _addrs(rec) == {"eth0": "10.91.0.50/24", "eth1": f"{ip_b}/24"}
    route = _sh("nsenter", f"--net={rec.net.netns_path}", "ip", "-4", "route", "show", "default")
    assert route.split()[:5] == ["default", "via", "10.91.0.1", "dev", "eth0"]
    assert await _ping(rt, "netb", ip_b) == 0
    # The fixed address is refused to a second container, and that start leaves nothing.
    other = await _create(
        rt, "neta", ["sleep", "300"], endpoint={"IPAMConfig": {"IPv4Address": "10.91.0.50"}}
    )
    with pytest.raises(DockerError, match="^Address already in use$") as err:
        await rt.start(other.id)
    assert err.value.status == 403
    assert set(env.directory.held(env.a).values()) == {rec.id}
    await rt.remove(other.id)


async def test_connect_and_disconnect_a_running_container(env: Env) -> None:
    rt = env.rt
    peer = await _sleeper(rt, "netb", "peer")
    peer_ip = inspect(rt, peer)["NetworkSettings"]["Networks"]["netb"]["IPAddress"]
    # A container on the default bridge joins an overlay network while it runs.
    rec = await rt.create({"Image": "busybox", "Cmd": ["sleep", "300"]}, name="hot")
    await rt.start(rec.id)
    await rt.connect("hot", "netb", {})
    nets = inspect(rt, rec)["NetworkSettings"]["Networks"]
    assert list(nets) == ["bridge", "netb"]
    ip = nets["netb"]["IPAddress"]
    assert _addrs(rec)["eth1"] == f"{ip}/24"
    with pytest.raises(
        DockerError, match="^endpoint with name hot already exists in network netb$"
    ):
        await rt.connect("hot", "netb", {})
    assert _ping_from(rt, rec, peer_ip) == 0
    assert (rec.id, rec.net.netns_path, ["netb"]) in env.directory.joins
    await rt.disconnect("hot", "netb")
    assert "eth1" not in _addrs(rec)
    assert (env.b.id, ip) in env.directory.released
    assert (rec.id, ["netb"]) in env.directory.leaves
    assert list(inspect(rt, rec)["NetworkSettings"]["Networks"]) == ["bridge"]
    with pytest.raises(
        SystemError_, match=f"^container {rec.id} is not connected to network netb$"
    ):
        await rt.disconnect("hot", "netb")
    # The network stays while `peer` uses it, and goes with its last user.
    assert bridge_name(env.b.vni) in _links()
    await rt.stop(peer.id, timeout=0)
    assert bridge_name(env.b.vni) not in _links()
    assert await asyncio.to_thread(env.plane.present) == []


async def test_stop_releases_and_restart_keeps_the_address(env: Env) -> None:
    rt = env.rt
    rec = await _sleeper(rt, "neta", "keeper")
    ip = inspect(rt, rec)["NetworkSettings"]["Networks"]["neta"]["IPAddress"]
    assert await asyncio.to_thread(env.plane.present) == [env.a.vni]
    await rt.stop(rec.id, timeout=0)
    assert env.directory.held(env.a) == {}
    assert (env.a.id, ip) in env.directory.released
    assert await asyncio.to_thread(env.plane.present) == []
    stopped = inspect(rt, rec)["NetworkSettings"]["Networks"]["neta"]
    assert (stopped["IPAddress"], stopped["EndpointID"], stopped["NetworkID"]) == ("", "", env.a.id)
    await rt.start(rec.id)
    assert inspect(rt, rec)["NetworkSettings"]["Networks"]["neta"]["IPAddress"] == ip
    # A restarted runtime re-adopts it and has the directory serve it again.
    again = Runtime(
        rt.paths.root,
        node_name=rt.node_name,
        bridge_name=rt.bridge.name,
        bridge_subnet=SUBNET,
        directory=env.directory,
        plane=env.plane,
    )
    joins = len(env.directory.joins)
    await again.open()
    await again.close()
    assert env.directory.joins[joins:] == [(rec.id, rec.net.netns_path, ["neta"])]
    assert await asyncio.to_thread(env.plane.present) == [env.a.vni]


async def test_failed_start_leaks_nothing(env: Env) -> None:
    rt = env.rt
    veths = {n for n in _links() if n.startswith("veth")}
    rec = await _create(rt, "neta", ["nosuchcmd"])
    await rt.connect(rec.id, "netb", {})
    with pytest.raises(DockerError, match="executable file not found"):
        await rt.start(rec.id)
    assert env.directory.claims == {}
    assert await asyncio.to_thread(env.plane.present) == []
    assert {n for n in _links() if n.startswith("veth")} == veths
    assert os.listdir(rt.paths.netns) == []
    assert all(ep.ip == ep.host_veth == "" for ep in rec.networks)


async def test_errors_worded_like_dockerd(env: Env) -> None:
    rt = env.rt
    with pytest.raises(NotFound, match="^network nope not found$"):
        await _create(rt, "nope", ["true"])
    with pytest.raises(
        InvalidParameter, match="^no configured subnet or ip-range contain the IP address 10.1.1.1$"
    ):
        await _create(rt, "neta", ["true"], endpoint={"IPAMConfig": {"IPv4Address": "10.1.1.1"}})
    env.directory.add("auto", "10.93.0.0/24", vni=4093, user_subnet=False)
    with pytest.raises(InvalidParameter, match="^user specified IP address is supported only"):
        await _create(rt, "auto", ["true"], endpoint={"IPAMConfig": {"IPv4Address": "10.93.0.9"}})
    with pytest.raises(InvalidParameter, match="^network-scoped alias is supported only for"):
        await _create(rt, "bridge", ["true"], endpoint={"Aliases": ["x"]})
    host = await _create(rt, "host", ["true"])
    with pytest.raises(InvalidParameter, match="^container sharing network namespace with"):
        await rt.connect(host.id, "neta", {})
    none = await _create(rt, "none", ["true"])
    with pytest.raises(InvalidParameter, match=r"one of the networks in private \(none\) mode$"):
        await rt.connect(none.id, "neta", {})
    stopped = await _create(rt, "neta", ["true"])
    with pytest.raises(
        SystemError_, match=f"^container {stopped.id} is not connected to the network netb$"
    ):
        await rt.disconnect(stopped.id, "netb")
    await rt.disconnect(stopped.id, env.a.id[:10])
    assert inspect(rt, stopped)["NetworkSettings"]["Networks"] == {}
    # Without a directory and a plane there are no user networks.
    bare = UserNetworks(rt, None, None, rt.paths.root)
    with pytest.raises(NotFound, match="^network neta not found$"):
        await bare.lookup("neta")


async def test_published_port_reaches_the_overlay_address(env: Env) -> None:
    rt = env.rt
    rec = await rt.create(
        {
            "Image": "busybox",
            "Cmd": ["sh", "-c", "while true; do echo hello | nc -l -p 80; done"],
            "ExposedPorts": {"80/tcp": {}},
            "HostConfig": {
                "NetworkMode": "neta",
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": ""}]},
            },
        }
    )
    await rt.start(rec.id)
    info = inspect(rt, rec)["NetworkSettings"]
    port = int(info["Ports"]["80/tcp"][0]["HostPort"])
    ip = info["Networks"]["neta"]["IPAddress"]
    nat = _sh("iptables-save", "-t", "nat")
    assert f"--dport {port} -j DNAT --to-destination {ip}:80" in nat
    forward = _sh("iptables-save", "-t", "filter")
    assert f"-d {ip}/32 ! -i {bridge_name(env.a.vni)} -o {bridge_name(env.a.vni)}" in forward
    assert await _read_tcp(VTEP, port) == b"hello\n"
    await rt.remove(rec.id, force=True)
    assert f"--dport {port} " not in _sh("iptables-save", "-t", "nat")
