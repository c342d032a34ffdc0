"""Network endpoints as classic Swarm presents them: every node's built-in networks.

Each node has `bridge`, `host` and `none` (scope local). `docker network ls` shows them as
`node/name`; inspect takes a full ID, an ID prefix or `node/name` and answers with the node's own
view. A bare `bridge` names one network per node: ambiguous, so 404 as in Swarm.

Creating, connecting, disconnecting and removing need user-defined networks, which come with
overlay networking. Until then these answer dockerd's own error where one applies to a built-in
network (403), and otherwise a 501 saying what to use instead; an unknown network stays a 404.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from manager.api.container_list import label_ok, node_ok
from manager.api.filters import request_filters
from manager.api.system import CLUSTER_KEY
from manager.cluster import Cluster
from manager.errors import read_json
from manager.versioning import add_versioned_routes
from proto import agent_pb2 as pb
from proto.docker.errors import DockerError, InvalidParameter, NotFound
from proto.records_pb2 import NodeRecord

BUILTIN = ("bridge", "host", "none")
# dockerd also refuses to create `default`: the name of the daemon's default network mode.
PREDEFINED = (*BUILTIN, "default")
LIST_FILTERS = ("type", "name", "id", "label", "driver", "node")
PRUNE_FILTERS = ("until", "label", "label!")
NOT_YET = (
    "user-defined networks are not supported yet (they come with overlay networking); a "
    "container gets a built-in network when it is created: docker run --network "
    "bridge|host|none (compose: network_mode: bridge)"
)

Found = tuple[NodeRecord, dict[str, Any]]


def _not_yet(what: str) -> DockerError:
    # 501: a Docker endpoint flotilla knows and deliberately does not serve yet.
    return DockerError(f"flotilla cannot {what}: {NOT_YET}", 501)


async def _networks(cluster: Cluster, verbose: bool, node_ids: list[str] | None) -> list[Found]:
    """(node, network view) for every network of the given (default: all) nodes."""
    req = pb.NetworkListRequest(verbose=verbose)
    found: list[Found] = []
    for rec, result in await cluster.fan_out(lambda s: s.NetworkList(req), node_ids):
        if isinstance(result, BaseException):
            continue  # an unreachable node hides its networks, as in classic Swarm
        found += [(rec, net) for net in json.loads(result.json)]
    return found


# --------------------------------------------------------------------------- list


def _search(pattern: str, text: str) -> bool:
    """dockerd's filters Match: equal, or the value as a regular expression found in `text`."""
    if pattern == text:
        return True
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


def _shown(rec: NodeRecord, net: dict[str, Any]) -> str:
    """Swarm's name for a local network in `ls`: `node/name`."""
    return f"{rec.name}/{net['Name']}"


def _matches(rec: NodeRecord, net: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    """Every filter but `node`, which picks the nodes to ask."""
    checks: dict[str, Callable[[str], bool]] = {
        "type": lambda v: (v == "builtin") == (net["Name"] in BUILTIN),
        # The bare name as dockerd matches it, and the `node/name` that `ls` shows.
        "name": lambda v: _search(v, net["Name"]) or _search(v, _shown(rec, net)),
        "id": lambda v: _search(v, net["Id"]),
        "driver": lambda v: v == net["Driver"],
    }
    for key, check in checks.items():
        values = filters.get(key)
        if values and not any(check(v) for v in values):
            return False
    return all(label_ok(net.get("Labels") or {}, want) for want in filters.get("label", []))


async def list_networks(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    filters = request_filters(request, LIST_FILTERS)
    for kind in filters.get("type", []):
        if kind not in ("custom", "builtin"):
            raise InvalidParameter(f"Invalid filter: 'type'='{kind}'")
    wanted = filters.get("node", [])
    node_ids = [
        r.id for r in cluster.sorted_nodes() if not wanted or any(node_ok(r, w) for w in wanted)
    ]
    rows: list[dict[str, Any]] = []
    if node_ids:
        for rec, net in await _networks(cluster, False, node_ids):
            if _matches(rec, net, filters):
                # Swarm's list: local networks renamed `node/name`, nothing else added.
                rows.append({**net, "Name": _shown(rec, net)})
    return web.json_response(rows)


# --------------------------------------------------------------------------- one network


def _names(rec: NodeRecord, net: dict[str, Any]) -> tuple[str, ...]:
    """The network's own name, and Swarm's `node/name` by node name or node ID."""
    return (net["Name"], _shown(rec, net), f"{rec.id}/{net['Name']}")


def _pick(ref: str, found: list[Found]) -> Found:
    """dockerd's order: full ID, then name (Swarm adds `node/name`), then ID prefix."""
    rules: list[tuple[str, Callable[[NodeRecord, dict[str, Any]], bool]]] = [
        ("ID", lambda rec, net: net["Id"] == ref),
        ("name", lambda rec, net: ref in _names(rec, net)),
        ("ID prefix", lambda rec, net: net["Id"].startswith(ref)),
    ]
    for basis, match in rules:
        hits = [(rec, net) for rec, net in found if match(rec, net)]
        if len(hits) == 1:
            return hits[0]
        if hits:
            # dockerd's wording; classic Swarm answers an ambiguous reference with a 404.
            raise NotFound(
                f"network {ref} is ambiguous ({len(hits)} matches found based on {basis})"
            )
    raise NotFound(f"network {ref} not found")


async def _resolve(cluster: Cluster, ref: str) -> Found:
    node_ids = None
    if "/" in ref:
        rec = cluster.node_by_name(ref.partition("/")[0])
        if rec is None:
            raise NotFound(f"network {ref} not found")
        node_ids = [rec.id]
    return _pick(ref, await _networks(cluster, True, node_ids))


async def inspect(request: web.Request) -> web.Response:
    _, net = await _resolve(request.app[CLUSTER_KEY], request.match_info["id"])
    return web.json_response(net)  # the node's own view (bare name), as in Swarm


# --------------------------------------------------------------------------- changes


async def create(request: web.Request) -> web.Response:
    body = await read_json(request, {})
    if not isinstance(body, dict):
        raise InvalidParameter("network create body must be a JSON object")
    name = str(body.get("Name") or "")
    bare = name.rpartition("/")[2]  # Swarm's `node-1/name` creates on that node
    if bare in PREDEFINED:
        # dockerd's PredefinedNetworkError, trailing space included.
        raise DockerError(f"operation is not permitted on predefined {bare} network ", 403)
    raise _not_yet(f"create network {name}" if name else "create networks")


async def remove(request: web.Request) -> web.Response:
    _, net = await _resolve(request.app[CLUSTER_KEY], request.match_info["id"])
    if net["Name"] in BUILTIN:
        raise DockerError(f"{net['Name']} is a pre-defined network and cannot be removed", 403)
    raise _not_yet(f"remove network {net['Name']}")


async def connect(request: web.Request) -> web.Response:
    await _resolve(request.app[CLUSTER_KEY], request.match_info["id"])
    raise _not_yet("connect containers to networks")


async def disconnect(request: web.Request) -> web.Response:
    await _resolve(request.app[CLUSTER_KEY], request.match_info["id"])
    raise _not_yet("disconnect containers from networks")


async def prune(request: web.Request) -> web.Response:
    request_filters(request, PRUNE_FILTERS)
    # Nodes have only built-in networks, which dockerd never prunes: nothing to delete.
    return web.json_response({"NetworksDeleted": None})


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
