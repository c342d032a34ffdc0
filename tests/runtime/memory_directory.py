"""An in-memory `NetworkDirectory` for runtime tests: the agent's etcd one in miniature.

Faithful where the runtime depends on it: names, IDs and unique ID prefixes resolve; addresses
are unique per network, from the subnet (never the network, gateway or broadcast address); a
taken `--ip` is refused in dockerd's words; the previous address is given back when free. It
records every call so tests can see what the runtime asked for.
"""

from __future__ import annotations

import ipaddress
import secrets

from proto.docker.errors import SystemError_
from runtime.net_directory import EndpointRequest, UserNetwork, address_in_use
from runtime.overlay import OverlaySpec


class MemoryDirectory:
    def __init__(self) -> None:
        self.networks: dict[str, UserNetwork] = {}
        self.claims: dict[tuple[str, str], EndpointRequest] = {}
        self.released: list[tuple[str, str]] = []
        self.joins: list[tuple[str, str, list[str]]] = []
        self.leaves: list[tuple[str, list[str]]] = []

    def add(
        self, name: str, subnet: str, vni: int, internal: bool = False, user_subnet: bool = True
    ) -> OverlaySpec:
        net = ipaddress.IPv4Network(subnet)
        spec = OverlaySpec(
            id=secrets.token_hex(32),
            name=name,
            vni=vni,
            subnet=subnet,
            gateway=str(net.network_address + 1),
            internal=internal,
        )
        self.networks[spec.id] = UserNetwork(spec=spec, user_subnet=user_subnet)
        return spec

    def held(self, spec: OverlaySpec) -> dict[str, str]:
        """{ip: container id} of the addresses held on the network."""
        return {ip: req.container_id for (nid, ip), req in self.claims.items() if nid == spec.id}

    async def lookup(self, name_or_id: str) -> UserNetwork | None:
        for net in self.networks.values():
            if name_or_id in (net.spec.name, net.spec.id):
                return net
        found = [n for n in self.networks.values() if n.spec.id.startswith(name_or_id)]
        return found[0] if len(found) == 1 and name_or_id else None

    async def claim(self, spec: OverlaySpec, request: EndpointRequest) -> str:
        taken = set(self.held(spec)) | {spec.gateway}
        subnet = ipaddress.IPv4Network(spec.subnet)
        if request.wanted_ip:
            if request.wanted_ip in taken:
                raise address_in_use()
            ip = request.wanted_ip
        elif request.previous_ip and request.previous_ip not in taken:
            ip = request.previous_ip
        else:
            free = (str(h) for h in subnet.hosts() if str(h) not in taken)
            ip = next(free, "")
            if not ip:
                raise SystemError_(
                    "no available IPv4 addresses on this network's address pools: "
                    f"{spec.name} ({spec.id})"
                )
        self.claims[(spec.id, ip)] = request
        return ip

    async def release(self, spec: OverlaySpec, ip: str) -> None:
        self.claims.pop((spec.id, ip), None)
        self.released.append((spec.id, ip))

    async def joined(self, container_id: str, netns_path: str, specs: list[OverlaySpec]) -> None:
        self.joins.append((container_id, netns_path, [s.name for s in specs]))

    async def left(self, container_id: str, specs: list[OverlaySpec]) -> None:
        self.leaves.append((container_id, [s.name for s in specs]))
