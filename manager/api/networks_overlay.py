"""User networks (overlay, and node-local ones from `node/NAME`) in dockerd's shapes: the create
body read into a NetworkRecord, a record shown as dockerd shows a network (inspect, list), its
endpoints as `Containers`, and the networks a container create body names."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from manager.api.networks_local import BUILTIN, Candidate, pick
from manager.network_ipam import Ipam, user_ipam
from proto.docker.endpoints import endpoint_id
from proto.docker.errors import DockerError, InvalidParameter, NotFound
from proto.docker.streams import format_time
from proto.records_pb2 import EndpointRecord, NetworkRecord

OVERLAY = "overlay"
# A node-local network's driver and scope, as dockerd shows a user bridge network.
BRIDGE = "bridge"
# libnetwork's scope of a network every node shares (classic Swarm with a cluster store).
SCOPE = "global"
LOCAL_SCOPE = "local"
NodeName = Callable[[str], str]  # node ID -> its name


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


def parse_create(body: dict[str, Any], node_id: str = "") -> tuple[NetworkRecord, Ipam | None]:
    """POST /networks/create's body as a record template (an overlay network, or a bridge
    network on `node_id`) and the client's addresses (None: the store picks a free default
    subnet)."""
    if body.get("EnableIPv6"):
        raise DockerError("flotilla's overlay networks are IPv4 only: IPv6 is not supported", 501)
    if body.get("Ingress") or body.get("ConfigOnly") or body.get("ConfigFrom"):
        raise DockerError("ingress and config-only networks are swarm mode features", 501)
    rec = NetworkRecord(
        name=str(body["Name"]),
        driver=BRIDGE if node_id else OVERLAY,
        node_id=node_id,
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
    """dockerd's network object, key for key (list: no endpoints, `Containers` {} as dockerd).
    A node-local network's name is bare, as its node's dockerd shows it."""
    return {
        "Name": rec.name,
        "Id": rec.id,
        "Created": format_time(rec.created_at_ns),
        "Scope": LOCAL_SCOPE if rec.node_id else SCOPE,
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


def shown_name(rec: NetworkRecord, node_name: NodeName) -> str:
    """The name `docker network ls` shows: Swarm's `node/name` for a node-local network."""
    return f"{node_name(rec.node_id)}/{rec.name}" if rec.node_id else rec.name


def candidates(records: list[NetworkRecord], node_name: NodeName) -> list[Candidate[NetworkRecord]]:
    """Each record with the names it answers to: its own, and a node-local one's `node/name`
    by node name or node ID (a bare name on several nodes is then ambiguous, as in Swarm)."""
    out: list[Candidate[NetworkRecord]] = []
    for rec in records:
        names: tuple[str, ...] = (rec.name,)
        if rec.node_id:
            names += (shown_name(rec, node_name), f"{rec.node_id}/{rec.name}")
        out.append((rec.id, names, rec))
    return out


def _node_local(mode: str) -> bool:
    """Network modes and names a node serves itself (its built-ins, `container:X`, Swarm's
    `node/bridge`); anything else names a user network."""
    builtin_on_node = mode.partition("/")[2] in BUILTIN
    return mode in ("", "default", *BUILTIN) or mode.startswith("container:") or builtin_on_node


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


@dataclass(frozen=True)
class Home:
    """The node a container must be created on because it joins a node-local network there."""

    node_id: str
    ref: str  # the network as the client named it


def with_network_ids(
    body: dict[str, Any], records: list[NetworkRecord], node_name: NodeName
) -> tuple[dict[str, Any], Home | None]:
    """A container create body whose `HostConfig.NetworkMode` or `EndpointsConfig` names user
    networks: each named one's `EndpointsConfig` entry (added for NetworkMode when missing)
    carries dockerd's `NetworkID` field, the network's full ID. Overlay networks keep the
    names the client gave; a node-local network's `node/` prefix is stripped (its node knows
    it by its bare name) and the node it lives on is returned. dockerd's 404 `network X not
    found` when one does not exist; 400 when they live on different nodes."""
    refs = overlay_refs(body)
    if not refs:
        return body, None
    found = candidates(records, node_name)
    home: Home | None = None
    named: dict[str, tuple[str, NetworkRecord]] = {}  # ref -> (name for the node, record)
    for ref in refs:
        rec = pick(ref, found)
        if rec.node_id and home is not None and home.node_id != rec.node_id:
            raise InvalidParameter(
                f"networks {home.ref} and {ref} are local to different nodes: a container "
                "cannot be on both"
            )
        if rec.node_id:
            home = Home(rec.node_id, ref)
        named[ref] = (rec.name if rec.node_id else ref, rec)
    networking, endpoints = _endpoints_config(body)
    filled: dict[str, Any] = {}
    for key in [*endpoints, *(r for r in refs if r not in endpoints)]:  # connect order kept
        entry = endpoints.get(key)
        if key not in named:
            filled[key] = entry
            continue
        name, rec = named[key]
        filled[name] = {**(entry if isinstance(entry, dict) else {}), "NetworkID": rec.id}
    out = {**body, "NetworkingConfig": {**networking, "EndpointsConfig": filled}}
    host = body.get("HostConfig")
    mode = str(host.get("NetworkMode") or "") if isinstance(host, dict) else ""
    if isinstance(host, dict) and mode in named:
        out["HostConfig"] = {**host, "NetworkMode": named[mode][0]}
    return out, home
