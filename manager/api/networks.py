"""Network endpoints: overlay networks from etcd (manager/network_store.py), cluster-wide and
listed once, next to every node's built-in networks as classic Swarm shows them
(manager/api/networks_local.py).

Overlay is the default driver through the manager. The docker CLI always sends its own default
(`bridge`), so a plain `docker network create NAME` arrives as `bridge` and must give a network
spanning every node: `bridge` without a node is taken as that default. Swarm's `node/NAME`
makes a node-local network (driver bridge, scope local) on that node, listed as `node/NAME`;
`-d bridge --scope local NAME` makes one on the node the scheduler picks, as Swarm's `-d bridge`;
built-in networks keep dockerd's 403s. Connect and disconnect go to the agent of the
container's node with the network's full ID.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from manager.api.container_list import label_ok, node_ok
from manager.api.events import parse_time
from manager.api.filters import request_filters
from manager.api.networks_local import (
    BUILTIN,
    PREDEFINED,
    Candidate,
    Found,
    local_candidates,
    node_networks,
    not_yet,
    pick,
    predefined_create,
    predefined_remove,
    shown,
)
from manager.api.networks_overlay import (
    BRIDGE,
    LOCAL_SCOPE,
    OVERLAY,
    candidates,
    parse_create,
    shown_name,
    view,
)
from manager.api.system import CLUSTER_KEY, SETTINGS_KEY
from manager.api_types import NETWORK_CONNECT, NETWORK_CREATE, NETWORK_DISCONNECT
from manager.cluster import Cluster
from manager.errors import read_json
from manager.network_store import NetworkStore
from manager.placing import node_infos, scheduler_for
from manager.scheduler import SchedulingError
from manager.versioning import add_versioned_routes
from proto import agent_pb2 as pb
from proto import patterns
from proto.docker.errors import DockerError, InvalidParameter, NotFound
from proto.records_pb2 import NetworkRecord

LIST_FILTERS = ("type", "name", "id", "label", "driver", "node", "scope")
PRUNE_FILTERS = ("until", "label", "label!")
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
GO_DURATION_RE = re.compile(r"^(\d+(\.\d+)?(h|m|s|ms))+$")
Network = NetworkRecord | Found


def store_of(cluster: Cluster) -> NetworkStore:
    return NetworkStore(cluster.kv, cluster.keys)


async def resolve(cluster: Cluster, ref: str) -> Network:
    """A user network's record or a node's built-in network, in dockerd's order (full ID,
    name, ID prefix; Swarm's `node/name` is a name). A user network's exact ID or name needs
    no round to the nodes: no built-in network answers to it."""
    records: list[Candidate[Network]] = list(
        candidates(await store_of(cluster).all(), cluster.node_name)
    )
    if any(ref == net_id or ref in names for net_id, names, _ in records):
        return pick(ref, records)
    local: list[Candidate[Network]] = list(await local_candidates(cluster, ref))
    return pick(ref, [*records, *local])


# --------------------------------------------------------------------------- list


def _search(pattern: str, text: str) -> bool:
    """dockerd's filters Match: equal, or the value as a regular expression found in `text`."""
    return pattern == text or patterns.search(pattern, text)


def _matches(net: dict[str, Any], names: tuple[str, ...], filters: dict[str, list[str]]) -> bool:
    """Every filter but `node`, which picks the nodes to ask."""
    builtin = net["Scope"] == "local" and net["Name"] in BUILTIN
    checks: dict[str, Callable[[str], bool]] = {
        "type": lambda v: (v == "builtin") == builtin,
        "name": lambda v: any(_search(v, n) for n in names),
        "id": lambda v: _search(v, net["Id"]),
        "driver": lambda v: v == net["Driver"],
        "scope": lambda v: v == net["Scope"],
    }
    for key, check in checks.items():
        values = filters.get(key)
        if values and not any(check(v) for v in values):
            return False
    return all(label_ok(net.get("Labels") or {}, want) for want in filters.get("label", []))


def _list_filters(request: web.Request) -> dict[str, list[str]]:
    filters = request_filters(request, LIST_FILTERS)
    for key, allowed in (("type", ("custom", "builtin")), ("scope", ("local", "global", "swarm"))):
        for value in filters.get(key, []):
            if value not in allowed:
                raise InvalidParameter(f"Invalid filter: '{key}'='{value}'")
    return filters


async def list_networks(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    filters = _list_filters(request)
    wanted = filters.get("node", [])
    node_ids = [
        r.id for r in cluster.sorted_nodes() if not wanted or any(node_ok(r, w) for w in wanted)
    ]
    rows: list[dict[str, Any]] = []
    if node_ids:  # overlay networks are on every node: shown once, with their bare name
        for rec in await store_of(cluster).all():
            if rec.node_id and rec.node_id not in node_ids:
                continue  # a node-local network of a node not listed
            row = {**view(rec), "Name": shown_name(rec, cluster.node_name)}
            if _matches(row, (rec.name, row["Name"]), filters):
                rows.append(row)
        for node, net in await node_networks(cluster, False, node_ids):
            # Swarm's list: local networks renamed `node/name`, nothing else added.
            if _matches(net, (net["Name"], shown(node, net)), filters):
                rows.append({**net, "Name": shown(node, net)})
    return web.json_response(rows)


# --------------------------------------------------------------------------- one network


async def inspect(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    found = await resolve(cluster, request.match_info["id"])
    if isinstance(found, NetworkRecord):
        endpoints = await store_of(cluster).endpoints(found.id)
        return web.json_response(view(found, endpoints))
    return web.json_response(found[1])  # the node's own view (bare name), as in Swarm


async def create(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    body = await read_json(request, NETWORK_CREATE, {})
    name = str(body.get("Name") or "")
    node, sep, bare = name.partition("/")  # Swarm's `node-1/name` creates on that node
    if not sep:
        node, bare = "", name
    if bare in PREDEFINED:
        raise predefined_create(bare)
    driver = str(body.get("Driver") or OVERLAY)
    # The CLI's default driver, which cannot be told from `-d bridge`, means overlay; asking for
    # scope local (`--scope local`) is what says "one node's bridge".
    local = driver == BRIDGE and (bool(sep) or body.get("Scope") == LOCAL_SCOPE)
    if driver == BRIDGE and not local:
        driver = OVERLAY
    if driver in ("host", "null"):
        raise DockerError(f'only one instance of "{driver}" network is allowed', 403)
    if driver not in (OVERLAY, BRIDGE):
        raise NotFound(f'plugin "{driver}" not found')
    if not NAME_RE.match(bare):
        raise InvalidParameter(
            f'invalid name: {name} includes invalid characters, only "[a-zA-Z0-9]'
            '[a-zA-Z0-9_.-]" are allowed'
        )
    # `-d overlay node/NAME`: Swarm asks that node's engine, which makes a global network.
    node_id = _node_for(request, node) if sep or local else ""
    template, ipam = parse_create({**body, "Name": bare}, node_id if local else "")
    rec = await store_of(cluster).create(template, ipam)
    return web.json_response({"Id": rec.id, "Warning": ""}, status=201)


def _node_for(request: web.Request, node: str) -> str:
    """The node of a node-local network, chosen as Swarm's CreateNetwork does: for `node/NAME`
    the scheduler with a `node==NODE` constraint (an unknown node is its error), else the
    scheduler's first choice for an empty container."""
    config = {"Env": [f"constraint:node=={node}"]} if node else {}
    scheduler = scheduler_for(request.app[SETTINGS_KEY])
    try:
        # No image lists: a network's placement does not depend on them.
        return scheduler.select(node_infos(request.app[CLUSTER_KEY]), config).id
    except SchedulingError as e:
        raise DockerError(e.message, e.status) from None


async def remove(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    found = await resolve(cluster, request.match_info["id"])
    if isinstance(found, NetworkRecord):
        await store_of(cluster).remove(found.id)
        return web.Response(status=204)
    name = found[1]["Name"]
    if name in BUILTIN:
        raise predefined_remove(name)
    raise not_yet(f"remove network {name}")


async def _attach(request: web.Request, verb: str) -> web.Response:
    """connect/disconnect: the agent of the container's node does it, told the network's
    full ID and the client's body with `Container` as the node's own container ID."""
    cluster = request.app[CLUSTER_KEY]
    ref = request.match_info["id"]
    schema = NETWORK_CONNECT if verb == "connect" else NETWORK_DISCONNECT
    body = await read_json(request, schema, {})  # dockerd decodes before it looks
    found = await resolve(cluster, ref)
    if not isinstance(found, NetworkRecord):
        raise not_yet(f"{verb} containers to the nodes' built-in networks")
    container = str(body.get("Container") or "")
    node_id, cid = await cluster.resolve(container)
    if found.node_id and found.node_id != node_id:
        raise DockerError(
            f"network {ref} is local to node {cluster.node_name(found.node_id)}: container "
            f"{container} on node {cluster.node_name(node_id)} cannot {verb} it",
            403,
        )
    payload = json.dumps({**body, "Container": cid}).encode()
    if verb == "connect":
        req = pb.NetworkConnectRequest(network_id=found.id, json=payload)
        await cluster.call(node_id, lambda s: s.NetworkConnect(req))
    else:
        dreq = pb.NetworkDisconnectRequest(network_id=found.id, json=payload)
        await cluster.call(node_id, lambda s: s.NetworkDisconnect(dreq))
    return web.Response(status=200)


async def connect(request: web.Request) -> web.Response:
    return await _attach(request, "connect")


async def disconnect(request: web.Request) -> web.Response:
    return await _attach(request, "disconnect")


def _until_ns(values: list[str]) -> int:
    """Docker's `until`: a Go duration before now, a Unix time or an RFC 3339 time."""
    if len(values) > 1:
        raise InvalidParameter("more than one until filter specified")
    if not values:
        return 0
    value = values[0]
    if GO_DURATION_RE.match(value):
        scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
        parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
        seconds = sum(float(n) * scale[unit] for n, unit in parts)
        return time.time_ns() - int(seconds * 1e9)
    return parse_time(value, "until")


async def prune(request: web.Request) -> web.Response:
    """User networks with no endpoint (built-in ones are never pruned), as dockerd."""
    cluster = request.app[CLUSTER_KEY]
    filters = request_filters(request, PRUNE_FILTERS)
    until = _until_ns(filters.get("until", []))
    store = store_of(cluster)
    deleted = []
    for rec in await store.all():
        labels = dict(rec.labels)
        if until and rec.created_at_ns >= until:
            continue
        if not all(label_ok(labels, want) for want in filters.get("label", [])):
            continue
        if any(label_ok(labels, want) for want in filters.get("label!", [])):
            continue
        try:
            await store.remove(rec.id)
        except DockerError as e:
            if e.status not in (403, 404):  # in use, or removed meanwhile: not pruned here
                raise
            continue
        deleted.append(rec.name)
    return web.json_response({"NetworksDeleted": deleted or None})


def add_routes(app: web.Application) -> None:
    routes: list[tuple[str, str, Any]] = [
        ("GET", "/networks", list_networks),
        ("POST", "/networks/create", create),
        ("POST", "/networks/prune", prune),
        ("POST", "/networks/{id:.+}/connect", connect),
        ("POST", "/networks/{id:.+}/disconnect", disconnect),
        ("GET", "/networks/{id:.+}", inspect),
        ("DELETE", "/networks/{id:.+}", remove),
    ]
    add_versioned_routes(app, routes)
