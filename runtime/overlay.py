"""The per-host data plane of overlay networks: bridge, VXLAN device, container veths, peers.

Per network with VNI V: bridge `fl-br-V` holding the gateway address, VXLAN device `fl-vx-V`
enslaved to it (learning off, proxy on) and, for every REMOTE endpoint, a permanent FDB entry
(its MAC -> its host's VTEP) and a permanent neighbour entry (its IP -> its MAC) on the VXLAN
device, so ARP is answered locally and no flooding is needed. Everything goes through netlink
(pyroute2); iptables rules are in runtime.overlay_rules.

A node-local network (`local`, Swarm's `node/NAME`) is the same bridge without the VXLAN device:
its containers reach each other on this node only, it has no peers, and its MTU is the
underlay's (nothing is encapsulated).

Every call opens its own netlink socket on the calling thread, so the plane acts in the network
namespace of the thread that calls it.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import threading
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import ndmsg

from proto.docker.errors import SystemError_
from runtime import overlay_rules
from runtime.netns import run_in_netns
from runtime.network import delete_link, write_sysctl

VXLAN_PORT = 4789
# Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers.
VXLAN_OVERHEAD = 50
BRIDGE_PREFIX = "fl-br-"
VXLAN_PREFIX = "fl-vx-"

_PERMANENT = ndmsg.states["permanent"]
_FDB_STATE = ndmsg.states["permanent"] | ndmsg.states["noarp"]
_FDB_SELF = ndmsg.flags["self"]


@dataclass(frozen=True)
class OverlaySpec:
    id: str  # network id (64 hex)
    name: str
    vni: int
    subnet: str  # "10.0.1.0/24"
    gateway: str  # "10.0.1.1"
    internal: bool = False
    local: bool = False  # a node-local network: bridge only, no VXLAN device, no peers

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen


def bridge_name(vni: int) -> str:
    return f"{BRIDGE_PREFIX}{vni}"


def vxlan_name(vni: int) -> str:
    return f"{VXLAN_PREFIX}{vni}"


def _failed(what: str, exc: NetlinkError) -> SystemError_:
    return SystemError_(f"{what}: {exc.args[1] if len(exc.args) > 1 else exc}")


def _link(ipr: IPRoute, name: str) -> Any | None:
    idx = ipr.link_lookup(ifname=name)
    return ipr.get_links(idx[0])[0] if idx else None


def _kind(link: Any) -> str | None:
    return link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))


def _vxlan_matches(link: Any, vni: int, local: str) -> bool:
    """Settings the kernel cannot change in place: a device that differs is recreated."""
    if _kind(link) != "vxlan":
        return False
    data = link.get(("IFLA_LINKINFO", "IFLA_INFO_DATA"))
    return (
        data.get("IFLA_VXLAN_ID") == vni
        and data.get("IFLA_VXLAN_LOCAL") == local
        and data.get("IFLA_VXLAN_PORT") == VXLAN_PORT
        and data.get("IFLA_VXLAN_LEARNING") == 0
        and data.get("IFLA_VXLAN_PROXY") == 1
    )


def _configure_container(ifname: str, ip: str, prefixlen: int, gateway: str | None) -> None:
    """Runs inside the container's netns: address, links up, default route."""
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        idx = ipr.link_lookup(ifname=ifname)[0]
        ipr.addr("replace", index=idx, address=ip, prefixlen=prefixlen)
        ipr.link("set", index=idx, state="up")
        # The first network that provides a default route keeps it (dockerd does the same).
        if gateway and not ipr.get_default_routes(family=socket.AF_INET):
            ipr.route("add", dst="0.0.0.0/0", gateway=gateway)


class OverlayPlane:
    """One per node. Blocking and thread-safe (callers use asyncio.to_thread)."""

    def __init__(self, vtep_ip: str, default_bridge: str = "flotilla0") -> None:
        self.vtep_ip = vtep_ip
        self.default_bridge = default_bridge
        # iptables check-then-insert and netlink dump-then-modify are not atomic.
        self._lock = threading.Lock()

    # ---- devices -----------------------------------------------------------------------------

    def mtu(self) -> int:
        with IPRoute() as ipr:
            return self._mtu(ipr)

    def _mtu(self, ipr: IPRoute, local: bool = False) -> int:
        addrs = ipr.get_addr(family=socket.AF_INET, address=self.vtep_ip)
        if not addrs:
            raise SystemError_(f"no interface holds the node's address {self.vtep_ip}")
        underlay = int(ipr.get_links(addrs[0]["index"])[0].get("mtu"))
        return underlay if local else underlay - VXLAN_OVERHEAD

    def ensure(self, spec: OverlaySpec) -> None:
        """Create or repair the network's devices and rules; idempotent."""
        with self._lock:
            try:
                with IPRoute() as ipr:
                    mtu = self._mtu(ipr, spec.local)
                    bridge = self._ensure_bridge(ipr, spec, mtu)
                    if spec.local:
                        self._remove_vxlan(ipr, spec)
                    else:
                        self._ensure_vxlan(ipr, spec, bridge, mtu)
            except NetlinkError as exc:
                raise _failed(f"setting up overlay network {spec.name}", exc) from None
            write_sysctl("net.ipv4.ip_forward", "1")
            overlay_rules.ensure(
                bridge_name(spec.vni), spec.subnet, self.default_bridge, spec.internal
            )

    def _ensure_bridge(self, ipr: IPRoute, spec: OverlaySpec, mtu: int) -> int:
        name = bridge_name(spec.vni)
        link = _link(ipr, name)
        if link is not None and _kind(link) != "bridge":
            ipr.link("del", index=link["index"])
            link = None
        if link is None:
            ipr.link("add", ifname=name, kind="bridge", mtu=mtu)
            link = _link(ipr, name)
        idx = link["index"]
        ipr.link("set", index=idx, mtu=mtu, state="up")
        want = (spec.gateway, spec.prefixlen)
        have = set()
        for addr in ipr.get_addr(index=idx, family=socket.AF_INET):
            got = (addr.get("IFA_ADDRESS"), addr["prefixlen"])
            if got != want:
                ipr.addr("del", index=idx, address=got[0], prefixlen=got[1])
            have.add(got)
        if want not in have:
            ipr.addr("add", index=idx, address=spec.gateway, prefixlen=spec.prefixlen)
        return idx

    def _ensure_vxlan(self, ipr: IPRoute, spec: OverlaySpec, bridge: int, mtu: int) -> None:
        name = vxlan_name(spec.vni)
        link = _link(ipr, name)
        if link is not None and not _vxlan_matches(link, spec.vni, self.vtep_ip):
            # Its FDB goes with it: callers run set_peers after ensure.
            ipr.link("del", index=link["index"])
            link = None
        if link is None:
            ipr.link(
                "add",
                ifname=name,
                kind="vxlan",
                vxlan_id=spec.vni,
                vxlan_local=self.vtep_ip,
                vxlan_port=VXLAN_PORT,
                vxlan_learning=0,
                vxlan_proxy=1,
                master=bridge,
                mtu=mtu,
                state="up",
            )
        else:
            ipr.link("set", index=link["index"], mtu=mtu, master=bridge, state="up")

    def _remove_vxlan(self, ipr: IPRoute, spec: OverlaySpec) -> None:
        """A node-local network has none: one left by an earlier network of this VNI whose
        teardown failed would carry its traffic to other nodes."""
        link = _link(ipr, vxlan_name(spec.vni))
        if link is not None:
            ipr.link("del", index=link["index"])

    def teardown(self, spec: OverlaySpec) -> None:
        """Remove the network's bridge, VXLAN device and rules; idempotent.

        Container veths are their owners' (detach); the kernel un-enslaves any still there.
        """
        with self._lock:
            delete_link(vxlan_name(spec.vni))
            delete_link(bridge_name(spec.vni))
            overlay_rules.delete(bridge_name(spec.vni), spec.subnet, self.default_bridge)

    def present(self) -> list[int]:
        """VNIs that have a VXLAN device or a bridge of ours on this host (a node-local
        network has only the bridge)."""
        with IPRoute() as ipr:
            names = [str(link.get("ifname")) for link in ipr.get_links()]
        suffixes = {
            n.removeprefix(prefix)
            for n in names
            for prefix in (VXLAN_PREFIX, BRIDGE_PREFIX)
            if n.startswith(prefix)
        }
        return sorted(int(s) for s in suffixes if s.isdigit())

    # ---- containers --------------------------------------------------------------------------

    def attach(
        self,
        spec: OverlaySpec,
        netns_path: str,
        ifname: str,
        ip: str,
        mac: str,
        default_route: bool,
    ) -> str:
        """Plug a (possibly running) container's netns into the network; returns the host veth."""
        host_if = "veth" + secrets.token_hex(4)[:7]
        with self._lock:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                with IPRoute() as ipr:
                    mtu = self._mtu(ipr, spec.local)
                    bridge = ipr.link_lookup(ifname=bridge_name(spec.vni))
                    if not bridge:
                        raise SystemError_(f"network {spec.name} is not set up on this node")
                    # The peer is born inside the netns under its final name: a name already
                    # taken there fails here and nothing is left behind.
                    ipr.link(
                        "add",
                        ifname=host_if,
                        kind="veth",
                        master=bridge[0],
                        mtu=mtu,
                        state="up",
                        peer={"ifname": ifname, "net_ns_fd": fd, "address": mac, "mtu": mtu},
                    )
            except NetlinkError as exc:
                raise _failed(f"connecting to network {spec.name}", exc) from None
            finally:
                os.close(fd)
        gateway = spec.gateway if default_route and not spec.internal else None
        try:
            run_in_netns(
                netns_path,
                lambda: _configure_container(ifname, ip, spec.prefixlen, gateway),
            )
        except NetlinkError as exc:
            delete_link(host_if)
            raise _failed(f"configuring {ifname} on network {spec.name}", exc) from None
        except BaseException:
            delete_link(host_if)
            raise
        return host_if

    def detach(self, host_veth: str) -> None:
        """Delete a container's veth pair by its host end; a missing link is fine."""
        delete_link(host_veth)

    # ---- remote endpoints --------------------------------------------------------------------

    def set_peers(self, spec: OverlaySpec, peers: dict[str, tuple[str, str]]) -> None:
        """Make the kernel's remote endpoints exactly `peers` ({ip: (mac, vtep_ip)}). A
        node-local network has no remote endpoints: nothing to do."""
        if spec.local:
            return
        want_fdb = {mac.lower(): vtep for mac, vtep in peers.values()}
        want_neigh = {ip: mac.lower() for ip, (mac, _) in peers.items()}
        with self._lock:
            try:
                with IPRoute() as ipr:
                    vx = ipr.link_lookup(ifname=vxlan_name(spec.vni))
                    if not vx:
                        raise SystemError_(f"network {spec.name} is not set up on this node")
                    self._reconcile(ipr, vx[0], want_fdb, want_neigh)
            except NetlinkError as exc:
                raise _failed(f"programming peers of network {spec.name}", exc) from None

    def _reconcile(
        self, ipr: IPRoute, vx: int, want_fdb: dict[str, str], want_neigh: dict[str, str]
    ) -> None:
        fdb, neigh = _fdb(ipr, vx), _neigh(ipr, vx)
        for ip, mac in neigh.items():
            if ip not in want_neigh:
                ipr.neigh("del", ifindex=vx, dst=ip, lladdr=mac)
        for mac, dst in fdb.items():
            if mac not in want_fdb:
                ipr.fdb("del", ifindex=vx, lladdr=mac, dst=dst)
        for mac, vtep in want_fdb.items():
            if fdb.get(mac) != vtep:
                ipr.fdb(
                    "replace",
                    ifindex=vx,
                    lladdr=mac,
                    dst=vtep,
                    state=_FDB_STATE,
                    flags=_FDB_SELF,
                )
        for ip, mac in want_neigh.items():
            if neigh.get(ip) != mac:
                ipr.neigh("replace", ifindex=vx, dst=ip, lladdr=mac, state=_PERMANENT)

    def peers(self, spec: OverlaySpec) -> dict[str, tuple[str, str]]:
        """Remote endpoints the kernel has: neighbour entries whose MAC has an FDB entry."""
        with IPRoute() as ipr:
            vx = ipr.link_lookup(ifname=vxlan_name(spec.vni))
            if not vx:
                return {}
            fdb, neigh = _fdb(ipr, vx[0]), _neigh(ipr, vx[0])
        return {ip: (mac, fdb[mac]) for ip, mac in neigh.items() if mac in fdb}


def _fdb(ipr: IPRoute, vx: int) -> dict[str, str]:
    """{mac: vtep} of the unicast remotes on the VXLAN device (not the bridge's own entries)."""
    out: dict[str, str] = {}
    for entry in ipr.fdb("dump", ifindex=vx):
        dst = entry.get("NDA_DST")
        if dst and entry.get("flags", 0) & _FDB_SELF:
            out[str(entry.get("NDA_LLADDR")).lower()] = dst
    return out


def _neigh(ipr: IPRoute, vx: int) -> dict[str, str]:
    """{ip: mac} of the permanent IPv4 neighbour entries on the VXLAN device."""
    out: dict[str, str] = {}
    for entry in ipr.neigh("dump", ifindex=vx, family=socket.AF_INET):
        mac = entry.get("NDA_LLADDR")
        if mac and entry.get("state", 0) & _PERMANENT:
            out[entry.get("NDA_DST")] = str(mac).lower()
    return out
