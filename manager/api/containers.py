"""Container endpoints: create is scheduled onto a node; everything else goes to the node
that holds the container; `GET /containers/json` (manager/api/container_list.py) merges every
node's list."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

from aiohttp import web

from manager.api.container_list import PS_ROWS_KEY, list_containers
from manager.api.networks_local import BUILTIN
from manager.api.networks_overlay import overlay_refs, with_network_ids
from manager.api.node_ports import inspect_ports, node_ip
from manager.api.ps_rows import PsRows
from manager.api.system import CLUSTER_KEY, SETTINGS_KEY
from manager.api_types import CONFIG, CONTAINER_CREATE
from manager.cluster import CALL_TIMEOUT_S, Cluster, placement_from_body
from manager.cluster_records import conflict_message
from manager.create_intent import create_on_node
from manager.errors import bool_param, int_param, read_json
from manager.logical import with_generation
from manager.network_store import NetworkStore
from manager.placing import choose_node, scheduler_for, survey
from manager.scheduler import (
    SchedulingError,
    parse_placement,
)
from manager.scheduler.placement import split_hints
from manager.versioning import add_versioned_routes
from proto import agent_pb2 as pb
from proto.docker.errors import Conflict, DockerError, InvalidParameter
from proto.logical import FIRST_GENERATION
from proto.records_pb2 import NodeRecord

NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
HEX64_RE = re.compile(r"^[a-f0-9]{64}$")
_NO_BODY: dict[str, Any] = {}


def _check_name(cluster: Cluster, name: str) -> None:
    if not NAME_RE.match(name):
        raise InvalidParameter(
            f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    existing = cluster.name_holder(name)
    if existing is not None:
        raise Conflict(conflict_message(name, existing))
    if name in cluster.pending_names():
        raise Conflict(conflict_message(name, "(being created)"))


async def create(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    name = request.query.get("name", "").lstrip("/")
    body = await read_json(request, CONTAINER_CREATE, _NO_BODY)
    if body is _NO_BODY:
        raise InvalidParameter("invalid JSON: got EOF while reading request body")
    if not any(key in CONFIG.fields for key in body):
        # No field of the embedded *Config: Go leaves it nil.
        raise InvalidParameter("config cannot be empty in order to create a container")
    body = _network_on_node(cluster, body)
    home = None
    if overlay_refs(body):
        # Before anything is placed or written: a missing network is dockerd's 404 here.
        records = await NetworkStore(cluster.kv, cluster.keys).all()
        body, home = with_network_ids(body, records, cluster.node_name)
        if home is not None:
            body = _prefer_node(body, cluster.node_name(home.node_id))
    try:
        body = parse_placement(body)  # Swarm's hints into labels; its policy errors
    except SchedulingError as e:
        raise DockerError(e.message, e.status) from None
    # The agents are asked before the lock; under it only the choice and its reservation, so
    # a hung agent never holds up the creates of the whole cluster.
    seen = await survey(cluster, body)
    async with cluster.schedule_lock:
        if name:
            _check_name(cluster, name)
        rec = choose_node(cluster, scheduler_for(request.app[SETTINGS_KEY]), body, seen)
        if home is not None and rec.id != home.node_id:
            # Swarm's soft constraint lost (the node is full, gone or excluded by a hard
            # constraint): there the container could not join its network.
            raise DockerError(
                f"network {home.ref} is local to node {cluster.node_name(home.node_id)}, "
                "where this container cannot be placed",
                500,
            )
        body = cluster.with_swarm_id(cluster.dependencies_by_id(body))
        body = with_generation(body, FIRST_GENERATION)
        token = cluster.add_pending(placement_from_body(rec.id, name, body))
    # Shielded: a client that hangs up mid-create must not leave a container without records.
    try:
        cid, warnings = await asyncio.shield(create_on_node(cluster, rec.id, token, name, body))
    except DockerError as e:
        raise _swarm_create_error(e, str(body.get("Image") or "")) from None
    return web.json_response({"Id": cid, "Warnings": warnings}, status=201)


def _swarm_create_error(e: DockerError, image: str) -> DockerError:
    """A node's create refusal as classic Swarm answers it. A missing image stays a 404 (the
    CLI then asks for a pull, which we refuse with our own words), and so does a missing
    network; Swarm itself would pull the image, and that pull fails on a bare 64-hex
    reference in its parse (reference.ParseNormalizedNamed). Other 404s, such as an unknown
    volume driver, reach the client as Swarm's 500 with the engine's words: as a 404 the CLI
    would take them for a missing image and show its pull error instead."""
    if e.status != 404:
        return e
    if e.message.startswith("No such image"):
        if HEX64_RE.match(image):
            return DockerError(
                f"invalid repository name ({image}), cannot specify 64-byte hexadecimal strings",
                500,
            )
        return e
    if "error looking up volume plugin" in e.message:
        return DockerError(e.message, 500)
    return e


def _prefer_node(body: dict[str, Any], node: str) -> dict[str, Any]:
    """Swarm's soft `node==~NODE` for a container on a network of that node, unless the
    client placed it with a hard `node==` constraint."""
    constraints = split_hints(body)[1]["constraint"]
    if any(c.startswith("node==") and not c.startswith("node==~") for c in constraints):
        return body
    env = body.get("Env") if isinstance(body.get("Env"), list) else []
    return {**body, "Env": [*env, f"constraint:node==~{node}"]}


def _network_on_node(cluster: Cluster, body: dict[str, Any]) -> dict[str, Any]:
    """`--net node-1/bridge` (Swarm): the node's own built-in network, with a soft constraint
    to that node; the node keeps only the bare network name. (A node-local user network's
    `node/` is stripped by with_network_ids.)"""
    host = body.get("HostConfig")
    mode = str(host.get("NetworkMode") or "") if isinstance(host, dict) else ""
    node, sep, network = mode.partition("/")
    if not sep or network not in BUILTIN or cluster.node_by_name(node) is None:
        return body
    return {**_prefer_node(body, node), "HostConfig": {**host, "NetworkMode": network}}


def _timeout(request: web.Request) -> int | None:
    return int_param(request, "t") if "t" in request.query else int_param(request, "timeout")


async def start(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    await cluster.call(node_id, lambda s: s.ContainerStart(pb.ContainerStartRequest(id=cid)))
    await cluster.logical.set_start(cluster.swarm_id_of(cid), cid, True)
    return web.Response(status=204)


async def _stop_or_restart(request: web.Request, rpc: str, message: type) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    req = message(id=cid)
    t = _timeout(request)
    if t is not None:
        req.timeout = t
    # The node waits up to `t` seconds (default 10) before it kills: the deadline allows that.
    deadline = max(t if t is not None else 10, 0) + CALL_TIMEOUT_S
    await cluster.call(node_id, lambda s: getattr(s, rpc)(req), timeout=deadline)
    await cluster.logical.set_start(cluster.swarm_id_of(cid), cid, rpc == "ContainerRestart")
    return web.Response(status=204)


async def stop(request: web.Request) -> web.Response:
    return await _stop_or_restart(request, "ContainerStop", pb.ContainerStopRequest)


async def restart(request: web.Request) -> web.Response:
    return await _stop_or_restart(request, "ContainerRestart", pb.ContainerRestartRequest)


async def kill(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    sig = request.query.get("signal", "")
    # The agent returns from a SIGKILL once the container is down, as dockerd does.
    await cluster.call(
        node_id, lambda s: s.ContainerKill(pb.ContainerKillRequest(id=cid, signal=sig))
    )
    if sig in ("", "KILL", "SIGKILL", "9"):
        await cluster.logical.set_start(cluster.swarm_id_of(cid), cid, False)
    return web.Response(status=204)


async def pause(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    await cluster.call(node_id, lambda s: s.ContainerPause(pb.ContainerRef(id=cid)))
    return web.Response(status=204)


async def unpause(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    await cluster.call(node_id, lambda s: s.ContainerUnpause(pb.ContainerRef(id=cid)))
    return web.Response(status=204)


async def wait(request: web.Request) -> web.StreamResponse:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    condition = request.query.get("condition", "not-running")
    if condition not in ("not-running", "next-exit", "removed"):
        raise InvalidParameter(f"invalid condition: {condition!r}")
    # dockerd sends the headers at once: the CLI's ContainerWait blocks on them before `start`.
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    try:
        reply = await cluster.call(
            node_id,
            lambda s: s.ContainerWait(pb.ContainerWaitRequest(id=cid, condition=condition)),
            timeout=None,  # waits for the container, however long it runs
        )
        doc: dict[str, Any] = {
            "Error": {"Message": reply.error} if reply.error else None,
            "StatusCode": reply.status_code,
        }
    except DockerError as e:
        doc = {"Error": {"Message": e.message}, "StatusCode": -1}
    with contextlib.suppress(ConnectionResetError):
        await response.write(json.dumps(doc, separators=(",", ":")).encode() + b"\n")
        await response.write_eof()
    return response


async def rename(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    new = request.query.get("name", "").lstrip("/")
    async with cluster.schedule_lock:
        existing = cluster.name_holder(new)
        if new and existing is not None and existing != cid:
            raise Conflict("Error when allocating new name: " + conflict_message(new, existing))
        old = cluster.name_of(cid)
        await cluster.call(
            node_id, lambda s: s.ContainerRename(pb.ContainerRenameRequest(id=cid, name=new))
        )
        await cluster.record_renamed(cid, old, new)
        await cluster.logical.set_name(cluster.swarm_id_of(cid), cid, new)
        cluster.renamed(cid, new)
    return web.Response(status=204)


async def remove(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    req = pb.ContainerRemoveRequest(
        id=cid, force=bool_param(request, "force"), volumes=bool_param(request, "v")
    )
    name = cluster.name_of(cid)
    swarm_id = cluster.swarm_id_of(cid)
    await cluster.call(node_id, lambda s: s.ContainerRemove(req))
    cluster.forget(cid)
    await cluster.record_removed(cid, name, swarm_id)
    return web.Response(status=204)


def node_view(rec: NodeRecord) -> dict[str, Any]:
    """Classic Swarm's `Node` object in container inspect and events."""
    return {
        "ID": rec.id,
        "IP": node_ip(rec),
        "Addr": rec.addr,
        "Name": rec.name,
        "Cpus": rec.ncpu,
        "Memory": rec.memory_bytes,
        "Labels": dict(rec.labels),
    }


async def inspect(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    reply = await cluster.call(node_id, lambda s: s.ContainerInspect(pb.ContainerRef(id=cid)))
    body = json.loads(reply.json)
    rec = cluster.nodes.get(node_id)
    if rec is not None:
        body["Node"] = node_view(rec)
        inspect_ports(body, node_ip(rec))
    return web.json_response(body)


def add_routes(app: web.Application) -> None:
    app[PS_ROWS_KEY] = PsRows()
    routes: list[tuple[str, str, Any]] = [
        ("POST", "/containers/create", create),
        ("GET", "/containers/json", list_containers),
        ("GET", "/containers/{ref:.+}/json", inspect),
        ("POST", "/containers/{ref:.+}/start", start),
        ("POST", "/containers/{ref:.+}/stop", stop),
        ("POST", "/containers/{ref:.+}/restart", restart),
        ("POST", "/containers/{ref:.+}/kill", kill),
        ("POST", "/containers/{ref:.+}/pause", pause),
        ("POST", "/containers/{ref:.+}/unpause", unpause),
        ("POST", "/containers/{ref:.+}/wait", wait),
        ("POST", "/containers/{ref:.+}/rename", rename),
        ("DELETE", "/containers/{ref:.+}", remove),
    ]
    add_versioned_routes(app, routes)
