"""Overlay networks in dockerd's shapes: the create body read into a NetworkRecord, a record
shown as dockerd shows a network (inspect, list), its endpoints as `Containers`."""

from __future__ import annotations

import ipaddress
from typing import Any

from manager.api.networks_local import BUILTIN
from manager.network_ipam import Ipam, user_ipam
from manager.network_store import find_in
from proto.docker.endpoints import endpoint_id
from proto.docker.errors import DockerError, InvalidParameter, NotFound
from proto.docker.streams import format_time
from proto.records_pb2 import EndpointRecord, NetworkRecord

OVERLAY = "overlay"
# libnetwork's scope of a network every node shares (classic Swarm with a cluster store).
SCOPE = "global"


def _str_map(doc: dict[str, Any], key: str) -> dict[str, str]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidParameter(f"{key} must be a JSON object")
    return {str(k): str(v) for k, v in value.items()}


def _ipam(body: dict[str, Any]) -> Ipam | None:
    """The client's IPAM block: default driver, at most one IPv4 subnet, no options."""
    doc = body.get("IPAM") or {}
    if not isinstance(doc, dict):
        raise InvalidParameter("IPAM must be a JSON object")
    driver = str(doc.get("Driver") or "default")
    if driver != "default":
        raise NotFound(f'plugin "{driver}" not found')
    if doc.get("Options"):
        raise DockerError("flotilla's overlay networks take no IPAM options", 501)
    configs = doc.get("Config") or []
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise InvalidParameter("IPAM.Config must be a list of objects")
    if len(configs) > 1:
        raise DockerError("flotilla's overlay networks take one subnet each", 501)
    if not configs:
        return None
    cfg = configs[0]
    if cfg.get("AuxiliaryAddresses"):
        raise DockerError("flotilla's overlay networks take no auxiliary addresses", 501)
    subnet = str(cfg.get("Subnet") or "")
    if not subnet:
        if cfg.get("Gateway") or cfg.get("IPRange"):
            raise InvalidParameter("Invalid Address SubPool")
        return None
    return user_ipam(subnet, str(cfg.get("Gateway") or ""), str(cfg.get("IPRange") or ""))


def parse_create(body: dict[str, Any]) -> tuple[NetworkRecord, Ipam | None]:
    """POST /networks/create's body (overlay driver) as a record template and the client's
    addresses (None: the store picks a free default subnet)."""
    if body.get("EnableIPv6"):
        raise DockerError("flotilla's overlay networks are IPv4 only: IPv6 is not supported", 501)
    if body.get("Ingress") or body.get("ConfigOnly") or body.get("ConfigFrom"):
        raise DockerError("ingress and config-only networks are swarm mode features", 501)
    rec = NetworkRecord(
        name=str(body["Name"]),
        driver=OVERLAY,
        options=_str_map(body, "Options"),
        labels=_str_map(body, "Labels"),
        internal=bool(body.get("Internal")),
        attachable=bool(body.get("Attachable")),
    )
    return rec, _ipam(body)


def _ipam_config(rec: NetworkRecord) -> dict[str, str]:
    cfg = {"Subnet": rec.subnet, "Gateway": rec.gateway}
    if rec.ip_range:
        cfg["IPRange"] = rec.ip_range
    return cfg


def container_entry(rec: NetworkRecord, ep: EndpointRecord) -> dict[str, str]:
    prefix = ipaddress.ip_network(rec.subnet).prefixlen
    return {
        "Name": ep.container_name,
        "EndpointID": endpoint_id(rec.id, ep.container_id),
        "MacAddress": ep.mac,
        "IPv4Address": f"{ep.ip}/{prefix}",
        "IPv6Address": "",
    }


def view(rec: NetworkRecord, endpoints: list[EndpointRecord] | None = None) -> dict[str, Any]:
    """dockerd's network object, key for key (list: no endpoints, `Containers` {} as dockerd)."""
    return {
        "Name": rec.name,
        "Id": rec.id,
        "Created": format_time(rec.created_at_ns),
        "Scope": SCOPE,
        "Driver": rec.driver,
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [_ipam_config(rec)]},
        "Internal": rec.internal,
        "Attachable": rec.attachable,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": {ep.container_id: container_entry(rec, ep) for ep in endpoints or []},
        "Options": dict(rec.options),
        "Labels": dict(rec.labels),
    }


def _node_local(mode: str) -> bool:
    """Network modes and names a node serves itself (its built-ins, `container:X`, Swarm's
    `node/name`); anything else names an overlay network."""
    return mode in ("", "default", *BUILTIN) or mode.startswith("container:") or "/" in mode


def _endpoints_config(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    networking = body.get("NetworkingConfig")
    networking = networking if isinstance(networking, dict) else {}
    endpoints = networking.get("EndpointsConfig")
    return networking, endpoints if isinstance(endpoints, dict) else {}


def overlay_refs(body: dict[str, Any]) -> list[str]:
    """The networks a container create body names that no node serves itself, each once."""
    host = body.get("HostConfig")
    mode = str(host.get("NetworkMode") or "") if isinstance(host, dict) else ""
    _, endpoints = _endpoints_config(body)
    return list(dict.fromkeys(n for n in (mode, *endpoints) if not _node_local(str(n))))


def with_network_ids(body: dict[str, Any], records: list[NetworkRecord]) -> dict[str, Any]:
    """A container create body whose `HostConfig.NetworkMode` or `EndpointsConfig` names
    overlay networks: each named one's `EndpointsConfig` entry (added for NetworkMode when
    missing) carries dockerd's `NetworkID` field, the network's full ID; the names stay as the
    client gave them. dockerd's 404 `network X not found` when one does not exist."""
    refs = overlay_refs(body)
    if not refs:
        return body
    networking, endpoints = _endpoints_config(body)
    filled = dict(endpoints)
    for ref in refs:
        rec = find_in(records, ref)
        if rec is None:
            raise NotFound(f"network {ref} not found")
        entry = filled.get(ref)
        filled[ref] = {**(entry if isinstance(entry, dict) else {}), "NetworkID": rec.id}
    return {**body, "NetworkingConfig": {**networking, "EndpointsConfig": filled}}
