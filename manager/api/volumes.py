"""Volume endpoints across the cluster, as classic Swarm presents them.

A volume is created on every node (same name everywhere) unless its name says `node/name` or
its labels carry Swarm's whitelists/constraints (then on the nodes the scheduler's filters pass);
`docker volume ls` shows each node's local volumes as `node/name`; inspect and rm accept both
forms, rm acting on every node holding the volume.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from aiohttp import web

from manager.api.filters import request_filters
from manager.api.system import CLUSTER_KEY, SETTINGS_KEY
from manager.api_types import VOLUME_CREATE
from manager.cluster import Cluster
from manager.errors import bool_param, read_json
from manager.placing import node_infos, scheduler_for
from manager.scheduler import SchedulingError
from manager.scheduler.placement import HINT_LABELS
from manager.versioning import add_versioned_routes
from proto import agent_pb2 as pb
from proto.docker.errors import DockerError, InvalidParameter, NotFound

LIST_FILTERS = ("name", "node", "label", "driver", "dangling")
# The create labels that place a volume (Swarm read only the whitelists; constraints as well).
PLACEMENT_LABELS = (HINT_LABELS["whitelist"], HINT_LABELS["constraint"])


def _split(cluster: Cluster, name: str) -> tuple[list[str] | None, str]:
    """(node ids or None for all, bare name) for `name` or `node/name`."""
    if "/" not in name:
        return None, name
    node_name, _, bare = name.partition("/")
    rec = cluster.node_by_name(node_name)
    if rec is None or not bare:
        raise NotFound(f"No such volume: {name}")
    return [rec.id], bare


def _raise_first(errors: list[BaseException], missing: DockerError) -> None:
    for e in errors:
        if isinstance(e, DockerError) and e.status != 404:
            raise e
    raise missing


async def _placement(request: web.Request, node: str, labels: object) -> list[str] | None:
    """The nodes a volume goes to (None: all), chosen as Swarm's CreateVolume does: a `node/`
    prefix is a `node==` constraint, the whitelists (and constraints) labels are the create's,
    and the scheduler's filters pick every node that passes."""
    config: dict[str, Any] = {"Env": [f"constraint:node=={node}"] if node else []}
    if isinstance(labels, dict):
        config["Labels"] = {k: str(labels[k]) for k in PLACEMENT_LABELS if k in labels}
    if not config["Env"] and not config.get("Labels"):
        return None
    cluster = request.app[CLUSTER_KEY]
    scheduler = scheduler_for(request.app[SETTINGS_KEY])
    try:
        return [n.id for n in scheduler.eligible(node_infos(cluster), config)]
    except SchedulingError as e:
        raise DockerError(e.message, e.status) from None


async def create(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    body = await read_json(request, VOLUME_CREATE, {})
    node, sep, bare = str(body.get("Name") or "").partition("/")
    if not sep:
        node, bare = "", node
    node_ids = await _placement(request, node, body.get("Labels"))
    # One random name for all nodes, so the volume is the same volume cluster-wide.
    body["Name"] = bare or secrets.token_hex(32)
    req = pb.VolumeCreateRequest(json=json.dumps(body).encode())
    results = await cluster.fan_out(lambda s: s.VolumeCreate(req), node_ids)
    views = [r for _, r in results if not isinstance(r, BaseException)]
    if not views:
        # Every node refused: the engine's own words, as Swarm returns them (an unknown driver
        # is dockerd's 404 `error looking up volume plugin`, not a missing volume).
        refusals = [r for _, r in results if isinstance(r, DockerError)]
        raise (
            refusals[0]
            if refusals
            else DockerError("no node is available to create the volume", 503)
        )
    return web.Response(body=views[0].json, status=201, content_type="application/json")


async def list_volumes(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    filters = request_filters(request, LIST_FILTERS)
    wanted = filters.pop("node", [])
    names = filters.pop("name", [])  # matched against the shown `node/name` too
    node_ids = [
        rec.id
        for rec in cluster.sorted_nodes()
        if not wanted or rec.name in wanted or rec.id in wanted
    ]
    rows: list[dict[str, Any]] = []
    if node_ids:
        req = pb.VolumeListRequest(filters=json.dumps(filters).encode() if filters else b"")
        for rec, result in await cluster.fan_out(lambda s: s.VolumeList(req), node_ids):
            if isinstance(result, InvalidParameter):
                raise result
            if isinstance(result, BaseException):
                continue
            for vol in json.loads(result.json).get("Volumes") or []:
                if vol.get("Driver", "local") == "local":
                    vol["Name"] = f"{rec.name}/{vol['Name']}"
                if names and not any(n in vol["Name"] for n in names):
                    continue
                rows.append(vol)
    return web.json_response({"Volumes": rows, "Warnings": None})


async def inspect(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    name = request.match_info["name"]
    node_ids, bare = _split(cluster, name)
    results = await cluster.fan_out(lambda s: s.VolumeInspect(pb.VolumeRef(name=bare)), node_ids)
    for _, result in results:
        if not isinstance(result, BaseException):
            return web.Response(body=result.json, content_type="application/json")
    _raise_first(
        [r for _, r in results if isinstance(r, BaseException)],
        NotFound(f"get {name}: no such volume"),
    )
    raise AssertionError("unreachable")


async def remove(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    name = request.match_info["name"]
    node_ids, bare = _split(cluster, name)
    req = pb.VolumeRemoveRequest(name=bare, force=bool_param(request, "force"))
    # Only the nodes that hold it: the agent's remove of a missing volume may well succeed.
    holders = [
        rec.id
        for rec, r in await cluster.fan_out(
            lambda s: s.VolumeInspect(pb.VolumeRef(name=bare)), node_ids
        )
        if not isinstance(r, BaseException)
    ]
    if not holders:
        raise NotFound(f"get {name}: no such volume")
    results = await cluster.fan_out(lambda s: s.VolumeRemove(req), holders)
    errors = [r for _, r in results if isinstance(r, BaseException)]
    if errors:
        _raise_first(errors, NotFound(f"get {name}: no such volume"))
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    routes: list[tuple[str, str, Any]] = [
        ("POST", "/volumes/create", create),
        ("GET", "/volumes", list_volumes),
        ("GET", "/volumes/{name:.+}", inspect),
        ("DELETE", "/volumes/{name:.+}", remove),
    ]
    add_versioned_routes(app, routes)
