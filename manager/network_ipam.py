"""Address and VNI choice for overlay networks, as dockerd's default IPAM makes it.

Pure functions over what etcd holds (manager/network_store.py reads it and commits the choice).
Errors carry libnetwork's wording: the docker CLI checks `--subnet/--gateway/--ip-range` itself
with its own words, so these reach API clients (docker-py, compose) only.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network

from proto.docker.errors import DockerError, InvalidParameter, NotFound

# dockerd's default pool for global-scope (overlay) networks: 10.0.0.0/8 in /24s
# (libnetwork ipamutils, swarm's default-addr-pool).
DEFAULT_POOL = IPv4Network("10.0.0.0/8")
DEFAULT_PREFIX_LEN = 24
# VNIs below 4096 are left to whatever else the hosts run (swarm mode starts at 4096 too).
FIRST_VNI = 4096
MAX_VNI = (1 << 24) - 1

POOL_OVERLAP = "Pool overlaps with other one on this address space"
NO_POOL = (
    "could not find an available, non-overlapping IPv4 address pool among the defaults to "
    "assign to the network"
)


@dataclass(frozen=True)
class Ipam:
    subnet: str
    gateway: str
    ip_range: str  # "" = the whole subnet


def _not_ipv4() -> DockerError:
    return DockerError("flotilla's overlay networks are IPv4 only: IPv6 is not supported", 501)


def user_ipam(subnet: str, gateway: str, ip_range: str) -> Ipam:
    """A client's `--subnet/--gateway/--ip-range`, checked as dockerd's IPAM does; the gateway
    defaults to the subnet's first address."""
    try:
        net = ip_network(subnet, strict=False)
    except ValueError:
        raise InvalidParameter("Invalid Address Pool") from None
    if net.version != 4:
        raise _not_ipv4()
    assert isinstance(net, IPv4Network)
    if net.prefixlen > 30:
        # No room for the network and broadcast addresses, a gateway and one container.
        raise InvalidParameter(f"subnet {subnet} is too small: flotilla needs at least a /30")
    rng = ""
    if ip_range:
        try:
            sub = ip_network(ip_range, strict=False)
        except ValueError:
            raise InvalidParameter("Invalid Address SubPool") from None
        if sub.version != 4 or not sub.subnet_of(net):  # type: ignore[arg-type]
            raise InvalidParameter("Invalid Address SubPool")
        rng = str(sub)
    if gateway:
        try:
            gw = ip_address(gateway)
        except ValueError:
            raise InvalidParameter(
                f"invalid gateway address {gateway} in Ipam configuration"
            ) from None
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise InvalidParameter(
                f"failed to allocate gateway ({gateway}): Requested address is out of range"
            )
    else:
        gw = net.network_address + 1
    return Ipam(subnet=str(net), gateway=str(gw), ip_range=rng)


def check_free(subnet: str, taken: Iterable[IPv4Network]) -> None:
    """dockerd's 403 when a requested subnet overlaps another network's."""
    net = IPv4Network(subnet)
    if any(net.overlaps(t) for t in taken):
        raise DockerError(POOL_OVERLAP, 403)


def free_subnet(avoid: Iterable[IPv4Network]) -> Ipam:
    """The first /24 of the default pool that overlaps nothing in `avoid` (other networks'
    subnets, the hosts' own networks), gateway .1."""
    blocked = [n for n in avoid if n.overlaps(DEFAULT_POOL)]
    for candidate in DEFAULT_POOL.subnets(new_prefix=DEFAULT_PREFIX_LEN):
        if not any(candidate.overlaps(b) for b in blocked):
            gateway = candidate.network_address + 1
            return Ipam(subnet=str(candidate), gateway=str(gateway), ip_range="")
    raise NotFound(NO_POOL)


def free_vni(taken: Iterable[int]) -> int:
    used = set(taken)
    vni = FIRST_VNI
    while vni in used:
        vni += 1
    if vni > MAX_VNI:
        raise DockerError("no free VXLAN network identifier left", 503)
    return vni


def host_address(addr: str) -> IPv4Network | None:
    """A node's advertise address (host part of its "ip:port") as a /32; None when it is no
    IPv4 address."""
    host = addr.rpartition(":")[0].strip("[]") if ":" in addr else addr
    try:
        ip = ip_address(host)
    except ValueError:
        return None
    return IPv4Network(ip) if isinstance(ip, IPv4Address) else None


def local_networks() -> list[IPv4Network]:
    """The IPv4 networks of this host's interfaces (blocking: netlink; run it in a thread)."""
    # Imported here: pyroute2 takes a tenth of a second to import, on every manager start.
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        out = []
        for msg in ipr.get_addr(family=socket.AF_INET):
            address = msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL")
            if address:
                out.append(IPv4Network(f"{address}/{msg['prefixlen']}", strict=False))
        return out
