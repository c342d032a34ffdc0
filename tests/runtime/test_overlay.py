"""runtime.overlay against the real kernel: two "hosts" joined by a veth underlay.

Each host is a network namespace of its own with one OverlayPlane; every plane call runs on a
throwaway thread inside that host's namespace (runtime.netns.run_in_netns), so its netlink
sockets, sysctls and iptables children all act there. Containers are namespaces too. Traffic is
real: ICMP echo from a raw socket inside a container's namespace (no ping binary needed), TCP for
published ports. Deleting the namespaces in the fixture takes every link and rule with them,
whatever the test did.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from pyroute2 import IPRoute

from proto.docker.errors import SystemError_
from runtime.netns import create_netns, delete_netns, run_in_netns
from runtime.network import Bridge, mac_for_ip
from runtime.overlay import OverlayPlane, OverlaySpec, bridge_name, vxlan_name
from runtime.ports import PortAllocatedError, PortMapper

T = TypeVar("T")

UNDERLAY_MTU = 1400  # not 1500, so a hard-coded 1450 would show
VTEP_A, VTEP_B = "192.0.2.1", "192.0.2.2"

NET1 = OverlaySpec("1" * 64, "net1", 100, "10.0.1.0/24", "10.0.1.1")
NET2 = OverlaySpec("2" * 64, "net2", 200, "10.0.2.0/24", "10.0.2.1")
NET3 = OverlaySpec("3" * 64, "net3", 300, "10.0.3.0/24", "10.0.3.1", internal=True)


@dataclass
class Container:
    path: str
    ip: str
    mac: str
    veth: str = ""

    def run(self, fn: Callable[[], T]) -> T:
        return run_in_netns(self.path, fn)

    def ping(self, dst: str) -> bool:
        return self.run(lambda: _echo(dst))


@dataclass
class Host:
    path: str
    vtep: str
    plane: OverlayPlane
    containers: list[Container] = field(default_factory=list)

    def run(self, fn: Callable[[], T]) -> T:
        return run_in_netns(self.path, fn)

    def call(self, method: str, *args: Any) -> Any:
        return self.run(lambda: getattr(self.plane, method)(*args))

    def sh(self, *argv: str) -> str:
        proc = self.run(lambda: subprocess.run(argv, capture_output=True, text=True, check=True))
        return proc.stdout

    def rules(self) -> str:
        return self.sh("iptables", "-S") + self.sh("iptables", "-t", "nat", "-S")

    def links(self) -> dict[str, Any]:
        def dump() -> dict[str, Any]:
            with IPRoute() as ipr:
                return {str(link.get("ifname")): link for link in ipr.get_links()}

        return self.run(dump)


@dataclass
class World:
    tmp: str
    a: Host
    b: Host
    extra: list[str] = field(default_factory=list)  # other netns files to delete

    def container(
        self, host: Host, spec: OverlaySpec, ip: str, default_route: bool = True
    ) -> Container:
        c = Container(os.path.join(self.tmp, f"c-{ip}"), ip, mac_for_ip(ip))
        create_netns(c.path)
        host.containers.append(c)
        c.veth = host.call("attach", spec, c.path, "eth0", ip, c.mac, default_route)
        return c

    def peers_of(self, spec: OverlaySpec, host: Host, *remote: Container) -> None:
        other = self.b if host is self.a else self.a
        host.call("set_peers", spec, {c.ip: (c.mac, other.vtep) for c in remote})


# ---- kernel helpers --------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo(dst: str, timeout: float = 2.0) -> bool:
    """One ICMP echo from the calling thread's netns; True if `dst` answered."""
    ident = threading.get_native_id() & 0xFFFF
    payload = b"flotilla-overlay"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, 1) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        try:
            s.sendto(packet, (dst, 0))
        except OSError:  # no route: unreachable
            return False
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                data, addr = s.recvfrom(2048)
            except TimeoutError:
                return False
            start = (data[0] & 0x0F) * 4
            kind, _, _, rid, _ = struct.unpack("!BBHHH", data[start : start + 8])
            if kind == 0 and rid == ident and addr[0] == dst:
                return True
    return False


def _netlink(call: Callable[[IPRoute], T]) -> Callable[[], T]:
    """`call` with a netlink socket of the calling thread's netns, closed afterwards."""

    def body() -> T:
        with IPRoute() as ipr:
            return call(ipr)

    return body


def _setup_host(ifname: str, vtep: str) -> None:
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        idx = ipr.link_lookup(ifname=ifname)[0]
        ipr.addr("add", index=idx, address=vtep, prefixlen=24)
        ipr.link("set", index=idx, mtu=UNDERLAY_MTU, state="up")
    # As on a host running dockerd: only what our rules accept is forwarded.
    subprocess.run(["iptables", "-P", "FORWARD", "DROP"], check=True)


@pytest.fixture
def world(tmp_path: Any) -> Iterator[World]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    tmp = str(tmp_path)
    paths = [os.path.join(tmp, "host-a"), os.path.join(tmp, "host-b")]
    w: World | None = None
    try:
        for path in paths:
            create_netns(path)
        fds = [os.open(p, os.O_RDONLY) for p in paths]
        try:
            with IPRoute() as ipr:
                ipr.link("add", ifname="flt-ul-a", kind="veth", peer="flt-ul-b")
                ipr.link("set", index=ipr.link_lookup(ifname="flt-ul-a")[0], net_ns_fd=fds[0])
                ipr.link("set", index=ipr.link_lookup(ifname="flt-ul-b")[0], net_ns_fd=fds[1])
        finally:
            for fd in fds:
                os.close(fd)
        run_in_netns(paths[0], lambda: _setup_host("flt-ul-a", VTEP_A))
        run_in_netns(paths[1], lambda: _setup_host("flt-ul-b", VTEP_B))
        w = World(
            tmp,
            Host(paths[0], VTEP_A, OverlayPlane(VTEP_A)),
            Host(paths[1], VTEP_B, OverlayPlane(VTEP_B)),
        )
        yield w
    finally:
        containers = [c.path for h in (w.a, w.b) for c in h.containers] if w else []
        for path in containers + (w.extra if w else []) + paths:
            delete_netns(path)
        # Left in the session netns only if a step failed before the move.
        with IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname="flt-ul-a"):
                with contextlib.suppress(Exception):
                    ipr.link("del", index=idx)


def _two_way(w: World, spec: OverlaySpec) -> tuple[Container, Container]:
    """The network on both hosts with one container each, peers programmed both ways."""
    for host in (w.a, w.b):
        host.call("ensure", spec)
    net = spec.subnet.rsplit(".", 1)[0]
    ca = w.container(w.a, spec, f"{net}.2")
    cb = w.container(w.b, spec, f"{net}.3")
    w.peers_of(spec, w.a, cb)
    w.peers_of(spec, w.b, ca)
    return ca, cb


# ---- tests -----------------------------------------------------------------------------------


def test_devices_mtu_and_vxlan_settings(world: World) -> None:
    ca, _ = _two_way(world, NET1)
    want = UNDERLAY_MTU - 50
    assert world.a.call("mtu") == want
    links = world.a.links()
    for name in (bridge_name(NET1.vni), vxlan_name(NET1.vni), ca.veth):
        assert links[name].get("mtu") == want, name
        assert links[name].get("state") == "up", name
    bridge = links[bridge_name(NET1.vni)]["index"]
    assert links[vxlan_name(NET1.vni)].get("master") == bridge
    assert links[ca.veth].get("master") == bridge
    data = links[vxlan_name(NET1.vni)].get(("IFLA_LINKINFO", "IFLA_INFO_DATA"))
    assert data.get("IFLA_VXLAN_ID") == NET1.vni
    assert data.get("IFLA_VXLAN_LOCAL") == VTEP_A
    assert data.get("IFLA_VXLAN_PORT") == 4789
    assert data.get("IFLA_VXLAN_LEARNING") == 0
    assert data.get("IFLA_VXLAN_PROXY") == 1

    def inside() -> tuple[Any, list[Any], list[Any], Any]:
        with IPRoute() as ipr:
            eth0 = ipr.get_links(ipr.link_lookup(ifname="eth0")[0])[0]
            addrs = ipr.get_addr(index=eth0["index"], family=socket.AF_INET)
            routes = ipr.get_default_routes(family=socket.AF_INET)
            lo = ipr.get_links(ipr.link_lookup(ifname="lo")[0])[0]
            return eth0, addrs, routes, lo

    eth0, addrs, routes, lo = ca.run(inside)
    assert eth0.get("mtu") == want
    assert eth0.get("IFLA_ADDRESS") == ca.mac
    assert eth0.get("state") == "up" and lo.get("state") == "up"
    assert [(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in addrs] == [(ca.ip, 24)]
    assert [r.get("RTA_GATEWAY") for r in routes] == [NET1.gateway]
    assert world.a.call("present") == [NET1.vni]


def test_same_network_across_hosts_and_peer_reconcile(world: World) -> None:
    ca, cb = _two_way(world, NET1)
    assert ca.ping(cb.ip) and cb.ping(ca.ip)
    assert world.a.call("peers", NET1) == {cb.ip: (cb.mac, VTEP_B)}

    # Stale entry removed, changed VTEP replaced: exactly what was asked for, and it breaks.
    world.a.call("set_peers", NET1, {"10.0.1.99": ("02:42:0a:00:01:63", VTEP_B)})
    world.a.call("set_peers", NET1, {cb.ip: (cb.mac, "192.0.2.77")})
    assert world.a.call("peers", NET1) == {cb.ip: (cb.mac, "192.0.2.77")}
    assert not ca.ping(cb.ip)
    # A changed MAC replaces the neighbour entry too.
    world.a.call("set_peers", NET1, {cb.ip: ("02:42:0a:00:01:64", VTEP_B)})
    assert world.a.call("peers", NET1) == {cb.ip: ("02:42:0a:00:01:64", VTEP_B)}
    world.peers_of(NET1, world.a, cb)
    assert world.a.call("peers", NET1) == {cb.ip: (cb.mac, VTEP_B)}
    assert ca.ping(cb.ip)

    # Removing the peer breaks reachability.
    world.a.call("set_peers", NET1, {})
    assert world.a.call("peers", NET1) == {}
    assert not ca.ping(cb.ip)


def test_isolation_between_networks_and_default_bridge(world: World) -> None:
    a1, b1 = _two_way(world, NET1)
    a2, b2 = _two_way(world, NET2)
    assert a2.ping(b2.ip)
    # Another VNI, on this host or the other one: dropped (a1 can route, to the underlay).
    assert a1.ping(VTEP_B)
    assert not a1.ping(a2.ip) and not a1.ping(b2.ip) and not a2.ping(a1.ip)

    # The node's default bridge on host A, with one container on it.
    bridge = Bridge(os.path.join(world.tmp, "bridge"), "flotilla0", "172.30.0.0/24")
    world.a.run(bridge.ensure)
    d = Container(os.path.join(world.tmp, "c-default"), "172.30.0.2", mac_for_ip("172.30.0.2"))
    create_netns(d.path)
    world.extra.append(d.path)
    world.a.run(lambda: bridge.attach("d", d.path, d.ip, d.mac))

    def configure() -> None:
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=idx, address=d.ip, prefixlen=24)
            ipr.link("set", index=idx, state="up")
            ipr.route("add", dst="0.0.0.0/0", gateway=bridge.gateway)

    d.run(configure)
    assert d.ping(VTEP_B)  # the default bridge itself works
    assert not d.ping(a1.ip) and not a1.ping(d.ip)


def test_internal_network_stays_inside(world: World) -> None:
    # A host that forwards by default: what stops the traffic must be the network's own rules.
    world.a.sh("iptables", "-P", "FORWARD", "ACCEPT")
    a1, _ = _two_way(world, NET1)
    a3, b3 = _two_way(world, NET3)
    assert a3.ping(b3.ip)
    assert a3.run(_netlink(lambda ipr: list(ipr.get_default_routes(family=socket.AF_INET)))) == []
    # Even with a route out, the host forwards nothing in or out of an internal bridge.
    a3.run(_netlink(lambda ipr: ipr.route("add", dst="0.0.0.0/0", gateway=NET3.gateway)))
    assert not a3.ping(VTEP_B) and not a3.ping(a1.ip)
    assert a1.ping(VTEP_B)  # non-internal goes out through NAT
    assert "-A FLOTILLA-POSTROUTING -s 10.0.1.0/24 ! -o fl-br-100 -j MASQUERADE" in world.a.rules()
    assert "10.0.3.0/24" not in world.a.rules()


def test_published_port_on_overlay_bridge(world: World) -> None:
    a1, _ = _two_way(world, NET1)
    listener = a1.run(lambda: socket.create_server(("0.0.0.0", 80)))
    listener.settimeout(5)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, addr = listener.accept()
            with conn:
                conn.sendall(f"hello {addr[0]}".encode())

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    mapper = PortMapper(os.path.join(world.tmp, "ports"), bridge_name(NET1.vni))
    try:
        world.a.run(lambda: mapper.publish("c1", a1.ip, {"80/tcp": [{"HostPort": "8080"}]}))

        def fetch() -> bytes:
            with socket.create_connection((VTEP_A, 8080), timeout=5) as s:
                return s.recv(100)

        assert world.b.run(fetch) == f"hello {VTEP_B}".encode()
        # The host port is the node's, whichever bridge holds it.
        default = PortMapper(mapper.data_dir, "flotilla0")
        with pytest.raises(PortAllocatedError, match="port is already allocated"):
            world.a.run(
                lambda: default.publish("c2", "172.30.0.2", {"80/tcp": [{"HostPort": "8080"}]})
            )
    finally:
        server.join(timeout=5)
        listener.close()


def test_ensure_is_idempotent_order_safe_and_repairs(world: World) -> None:
    a = world.a
    # The default bridge's generic ACCEPTs already there: our isolation must still come first.
    a.run(Bridge(os.path.join(world.tmp, "bridge"), "flotilla0", "172.30.0.0/24").ensure)
    a.call("ensure", NET1)
    first = a.rules()
    a.call("ensure", NET1)
    assert a.rules() == first

    a.sh(
        "iptables", "-D", "FLOTILLA-ISOLATION", "-i", "fl-br-100", "-o", "fl-br-100", "-j", "RETURN"
    )
    a.sh("iptables", "-D", "FLOTILLA-FORWARD", "-j", "FLOTILLA-ISOLATION")
    vx = a.links()["fl-vx-100"]["index"]
    br = a.links()["fl-br-100"]["index"]
    a.run(_netlink(lambda ipr: ipr.link("set", index=vx, state="down")))
    a.run(_netlink(lambda ipr: ipr.addr("del", index=br, address=NET1.gateway, prefixlen=24)))
    a.call("ensure", NET1)
    assert sorted(a.rules().splitlines()) == sorted(first.splitlines())
    isolation = a.sh("iptables", "-S", "FLOTILLA-ISOLATION").splitlines()
    assert isolation[1] == "-A FLOTILLA-ISOLATION -i fl-br-100 -o fl-br-100 -j RETURN"
    forward = a.sh("iptables", "-S", "FLOTILLA-FORWARD").splitlines()
    assert forward[1] == "-A FLOTILLA-FORWARD -j FLOTILLA-ISOLATION"
    assert a.links()["fl-vx-100"].get("state") == "up"

    # A flip to internal leaves no NAT or outward ACCEPT behind.
    a.call("ensure", OverlaySpec(NET1.id, NET1.name, 100, NET1.subnet, NET1.gateway, True))
    rules = a.rules()
    assert "MASQUERADE" not in rules.replace("172.30.0.0/24 ! -o flotilla0 -j MASQUERADE", "")
    assert "-A FLOTILLA-FORWARD -i fl-br-100 ! -o fl-br-100 -j ACCEPT" not in rules


def test_teardown_leaves_nothing(world: World) -> None:
    baseline = {h.path: (h.rules(), set(h.links())) for h in (world.a, world.b)}
    _two_way(world, NET1)
    _two_way(world, NET3)
    for host in (world.a, world.b):
        assert host.call("present") == [NET1.vni, NET3.vni]
        for c in host.containers:
            host.call("detach", c.veth)
            host.call("detach", c.veth)  # missing is fine
        for spec in (NET1, NET3):
            host.call("teardown", spec)
            host.call("teardown", spec)  # idempotent
        assert host.call("present") == []
        rules, links = baseline[host.path]
        assert host.rules() == rules
        assert set(host.links()) == links


def test_attach_failures_leave_nothing(world: World) -> None:
    ca, _ = _two_way(world, NET1)
    before = set(world.a.links())
    with pytest.raises(SystemError_, match="network net2 is not set up on this node"):
        world.a.call("attach", NET2, ca.path, "eth1", "10.0.2.9", mac_for_ip("10.0.2.9"), False)
    with pytest.raises(SystemError_, match="connecting to network net1"):
        world.a.call("attach", NET1, ca.path, "eth0", "10.0.1.9", mac_for_ip("10.0.1.9"), False)
    assert set(world.a.links()) == before
    # Hot-plug of a second interface into the same (running) namespace works.
    world.a.call("ensure", NET2)
    world.a.call("attach", NET2, ca.path, "eth1", "10.0.2.9", mac_for_ip("10.0.2.9"), True)
    routes = ca.run(_netlink(lambda ipr: list(ipr.get_default_routes(family=socket.AF_INET))))
    assert [r.get("RTA_GATEWAY") for r in routes] == [NET1.gateway]  # the first one stays
    assert ca.ping("10.0.2.1")


def test_node_local_network_is_a_bridge_without_vxlan_device(world: World) -> None:
    host = world.a
    baseline = (host.rules(), set(host.links()))
    local = OverlaySpec("4" * 64, "loc", 400, "10.0.4.0/24", "10.0.4.1", local=True)
    # A VXLAN device left with this VNI by an earlier overlay network goes: it would carry the
    # local network's traffic to other nodes.
    old = OverlaySpec("5" * 64, "old", 400, "10.0.5.0/24", "10.0.5.1")
    host.call("ensure", old)
    host.call("ensure", local)
    c1 = world.container(host, local, "10.0.4.2")
    c2 = world.container(host, local, "10.0.4.3")
    links = host.links()
    assert vxlan_name(local.vni) not in links
    for name in (bridge_name(local.vni), c1.veth, c2.veth):
        # Nothing is encapsulated: the underlay's MTU.
        assert links[name].get("mtu") == UNDERLAY_MTU, name
    assert links[c1.veth].get("master") == links[bridge_name(local.vni)]["index"]
    assert c1.ping(c2.ip) and c2.ping(c1.ip) and c1.ping(local.gateway)
    host.call("set_peers", local, {"10.0.4.9": ("02:42:0a:00:04:09", VTEP_B)})  # no peers
    assert host.call("peers", local) == {} and vxlan_name(local.vni) not in host.links()
    assert host.call("present") == [local.vni]
    # Isolated from an overlay network on the same node, as two overlay networks are.
    o1, _ = _two_way(world, NET1)
    assert not c1.ping(o1.ip) and not o1.ping(c1.ip)
    assert host.call("present") == [NET1.vni, local.vni]
    for c in host.containers:
        host.call("detach", c.veth)
    for spec in (NET1, old, local, local):
        host.call("teardown", spec)
    assert host.call("present") == []
    assert (host.rules(), set(host.links())) == baseline
