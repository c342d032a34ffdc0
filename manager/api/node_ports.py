"""Published ports as classic Swarm reports them: where the node's dockerd would say 0.0.0.0
(every interface), the node's own address, so a client can connect to what it reads."""

from __future__ import annotations

import ipaddress
from typing import Any

from proto.records_pb2 import NodeRecord


def node_ip(rec: NodeRecord) -> str:
    """The node's address: the host part of the address its agent registered (Swarm's
    Engine.IP, the host part of the engine address)."""
    return rec.addr.rpartition(":")[0].strip("[]")


def _unspecified(ip: str) -> bool | None:
    """True for 0.0.0.0 / ::, False for other addresses, None when `ip` is no address."""
    try:
        return ipaddress.ip_address(ip).is_unspecified
    except ValueError:
        return None


def list_row_ports(row: dict[str, Any], ip: str) -> None:
    """`docker ps`: `Ports[].IP` 0.0.0.0 or :: becomes the node's address (an empty IP is an
    unpublished port and stays)."""
    for port in row.get("Ports") or []:
        if isinstance(port, dict) and _unspecified(str(port.get("IP") or "")):
            port["IP"] = ip


def inspect_ports(body: dict[str, Any], ip: str) -> None:
    """`docker inspect` / `docker port`: every `NetworkSettings.Ports` binding whose HostIp is
    empty, not an address or unspecified becomes the node's address."""
    settings = body.get("NetworkSettings")
    ports = settings.get("Ports") if isinstance(settings, dict) else None
    if not isinstance(ports, dict):
        return
    for bindings in ports.values():
        for binding in bindings or []:
            if not isinstance(binding, dict):
                continue
            if _unspecified(str(binding.get("HostIp") or "")) is not False:
                binding["HostIp"] = ip
