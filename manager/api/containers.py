"""Container endpoints: create is scheduled onto a node; everything else goes to the node
that holds the container; `GET /containers/json` merges every node's list."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import re
from typing import Any

from aiohttp import web

from manager.api.filters import request_filters
from manager.api.node_ports import inspect_ports, list_row_ports, node_ip
from manager.api.system import CLUSTER_KEY, SETTINGS_KEY
from manager.cluster import CALL_TIMEOUT_S, Cluster, placement_from_body
from manager.cluster_records import conflict_message
from manager.errors import bool_param, int_param, read_json
from manager.logical import FIRST_GENERATION, PENDING, SWARM_ID_LABEL, with_generation
from manager.placing import choose_node, scheduler_for, survey
from manager.scheduler import (
    SchedulingError,
    parse_placement,
)
from manager.versioning import add_versioned_routes
from proto import agent_pb2 as pb
from proto.docker.errors import Conflict, DockerError, InvalidParameter
from proto.records_pb2 import NodeRecord

NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
EXITED_RE = re.compile(r"^Exited \((-?\d+)\)")
HEX64_RE = re.compile(r"^[a-f0-9]{64}$")
PENDING_STATUS = "Pending reschedule"


def _check_name(cluster: Cluster, name: str) -> None:
    if not NAME_RE.match(name):
        raise InvalidParameter(
            f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    existing = cluster.known_names().get(name)
    if existing is not None:
        raise Conflict(conflict_message(name, existing))
    if name in cluster.pending_names():
        raise Conflict(conflict_message(name, "(being created)"))


async def create(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    name = request.query.get("name", "").lstrip("/")
    body = await read_json(request)
    if not isinstance(body, dict) or not body:
        raise InvalidParameter("config cannot be empty in order to create a container")
    body = _network_on_node(cluster, body)
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
        body = cluster.with_swarm_id(cluster.dependencies_by_id(body))
        body = with_generation(body, FIRST_GENERATION)
        token = cluster.add_pending(placement_from_body(rec.id, name, body))
    # Shielded: a client that hangs up mid-create must not leave a container without records.
    try:
        cid, warnings = await asyncio.shield(_create_on(cluster, rec, token, name, body))
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


def _network_on_node(cluster: Cluster, body: dict[str, Any]) -> dict[str, Any]:
    """`--net node-1/bridge` (Swarm): the node's own network, with a soft constraint to that
    node; the node keeps only the bare network name."""
    host = body.get("HostConfig")
    mode = str(host.get("NetworkMode") or "") if isinstance(host, dict) else ""
    node, sep, network = mode.partition("/")
    if not sep or not network or cluster.node_by_name(node) is None:
        return body
    env = body.get("Env") if isinstance(body.get("Env"), list) else []
    return {
        **body,
        "Env": [*env, f"constraint:node==~{node}"],
        "HostConfig": {**host, "NetworkMode": network},
    }


async def _create_on(
    cluster: Cluster, rec: NodeRecord, token: int, name: str, body: dict[str, Any]
) -> tuple[str, list[str]]:
    try:
        if name:
            await cluster.claim_name(name)
        try:
            reply = await cluster.call(
                rec.id,
                lambda s: s.ContainerCreate(
                    pb.ContainerCreateRequest(json=json.dumps(body).encode(), name=name)
                ),
            )
        except BaseException:
            await cluster.release_name(name)
            raise
    finally:
        placement = cluster.pending.pop(token, None)
    assert placement is not None
    cluster.created(placement, reply.id)
    await cluster.record_created(reply.id, name, rec.id, body)
    await cluster.logical.record_create(reply.id, name, rec.id, body, cluster.is_known)
    return reply.id, list(reply.warnings)


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
        existing = cluster.known_names().get(new)
        if new and existing is not None and existing != cid:
            raise Conflict("Error when allocating new name: " + conflict_message(new, existing))
        old = cluster.name_of(cid)
        await cluster.call(
            node_id, lambda s: s.ContainerRename(pb.ContainerRenameRequest(id=cid, name=new))
        )
        await cluster.record_renamed(cid, old, new)
        await cluster.logical.set_name(cluster.swarm_id_of(cid), cid, new)
        placed = cluster.placements.get(cid)
        if placed is not None:
            placed.name = new
        st = cluster.statuses.get(cid)
        if st is not None:
            st.name = new
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


# ----------------------------------------------------------------------- list


LIST_FILTERS = {
    "status",
    "id",
    "name",
    "label",
    "node",
    "ancestor",
    "exited",
    "before",
    "since",
    "network",
    "volume",
    "health",
    "is-task",
}
TASK_LABEL = "com.docker.swarm.task"
STATES = {"created", "restarting", "running", "removing", "paused", "exited", "dead"}
HEALTH_STATES = {"starting", "healthy", "unhealthy", "none"}


def _names_of(row: dict[str, Any]) -> list[str]:
    return [n.lstrip("/") for n in row.get("Names") or []]


def label_ok(labels: dict[str, str], want: str) -> bool:
    """Docker's `label` filter value: `key` (present) or `key=value`."""
    key, sep, value = want.partition("=")
    if key not in labels:
        return False
    return not sep or labels[key] == value


def node_ok(rec: NodeRecord, want: str) -> bool:
    """The `node` filter: a node's name, ID or a glob over names."""
    return want in (rec.name, rec.id) or fnmatch.fnmatchcase(rec.name, want)


def _ancestor_ok(row: dict[str, Any], want: str) -> bool:
    image = str(row.get("Image", ""))
    image_id = str(row.get("ImageID", ""))
    if image == want or image == f"{want}:latest" or image.split(":")[0] == want:
        return True
    bare = image_id.removeprefix("sha256:")
    return bool(want) and (image_id == want or bare.startswith(want.removeprefix("sha256:")))


def _row_matches(row: dict[str, Any], rec: NodeRecord, filters: dict[str, list[str]]) -> bool:
    checks = {
        "id": lambda v: str(row["Id"]).startswith(v),
        "name": lambda v: any(re.search(v, n) for n in _names_of(row)),
        "status": lambda v: row.get("State") == v,
        "node": lambda v: node_ok(rec, v),
        "ancestor": lambda v: _ancestor_ok(row, v),
        "network": lambda v: v in ((row.get("NetworkSettings") or {}).get("Networks") or {}),
        "health": lambda v: (row.get("Health") or {}).get("Status", "none") == v,
        "volume": lambda v: any(
            v in (m.get("Name"), m.get("Source"), m.get("Destination"))
            for m in row.get("Mounts") or []
        ),
    }
    for key, fn in checks.items():
        values = filters.get(key)
        if values and not any(fn(v) for v in values):
            return False
    for want in filters.get("label", []):
        if not label_ok(row.get("Labels") or {}, want):
            return False
    exited = filters.get("exited")
    if exited:
        m = EXITED_RE.match(str(row.get("Status", "")))
        if row.get("State") != "exited" or not m or m.group(1) not in exited:
            return False
    return True


def _departed_rows(cluster: Cluster) -> list[tuple[dict[str, Any], NodeRecord]]:
    """Containers of nodes that left the cluster (agent gone, status records kept in etcd for
    its return), from those records: classic Swarm lists the containers of an engine it
    cannot reach with `-a` only, their Status "Host Down"."""
    rows: list[tuple[dict[str, Any], NodeRecord]] = []
    for cid, st in cluster.statuses.items():
        if st.node_id in cluster.nodes:
            continue
        rec = NodeRecord(id=st.node_id, name=cluster.node_names.get(st.node_id, st.node_id))
        row = {
            "Id": cid,
            "Names": [f"/{st.name}"] if st.name else [],
            "Image": st.image,
            "ImageID": st.image_id,
            "Command": "",
            "Created": st.started_at_ns // 1_000_000_000,
            "Ports": [],
            "Labels": dict(st.labels),
            "State": st.state,
            "Status": _down_status(cluster, st.labels.get(SWARM_ID_LABEL, "")),
            "HostConfig": {},
            "NetworkSettings": {"Networks": {}},
            "Mounts": [],
        }
        rows.append((row, rec))
    return rows


def _down_status(cluster: Cluster, swarm_id: str) -> str:
    """Swarm's `Host Down`; a reschedulable container that fits on no node now says so
    (docs/failover.md)."""
    return PENDING_STATUS if cluster.unsettled.get(swarm_id) == PENDING else "Host Down"


def _is_task_filter(values: list[str] | None) -> bool | None:
    """dockerd's `is-task`: true wins over false when both are given; anything else is
    refused with the values as Go prints a []string."""
    if values is None:
        return None
    if not values or "true" in values:  # Go's ExactMatch holds for a key without values
        return True
    if "false" in values:
        return False
    raise InvalidParameter(f"Invalid filter 'is-task=[{' '.join(values)}]'")


async def list_containers(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    filters = request_filters(request, LIST_FILTERS)
    for state in filters.get("status", []):
        if state not in STATES:
            raise InvalidParameter(f"Invalid filter 'status={state}'")  # dockerd's invalidFilter
    is_task = _is_task_filter(filters.get("is-task"))
    for value in filters.get("health", []):
        if value not in HEALTH_STATES:
            raise InvalidParameter(f"Unrecognised filter value for health: {value}")
    for code in filters.get("exited", []):
        if not code.lstrip("-").isdigit():
            raise InvalidParameter(f"invalid filter 'exited={code}'")
    limit = int_param(request, "limit") or 0
    all_ = bool_param(request, "all") or limit > 0 or "before" in filters or "since" in filters
    all_ = all_ or "status" in filters  # dockerd: a status filter implies --all
    if "exited" in filters:
        all_ = True
    size = bool_param(request, "size")
    results = await cluster.fan_out(lambda s: s.ContainerList(pb.ContainerListRequest(all=all_)))
    rows: list[tuple[dict[str, Any], NodeRecord]] = []
    for rec, result in results:
        if isinstance(result, BaseException):
            continue  # an unreachable node drops out of the list, as in classic Swarm
        for raw in result.rows:
            rows.append((json.loads(raw), rec))
    if all_:
        rows.extend(_departed_rows(cluster))
    # Newest first; the creation sequence breaks ties within Docker's one-second Created.
    rows.sort(
        key=lambda r: (r[0].get("Created", 0), cluster.creation_seq(r[0]["Id"]), r[0]["Id"]),
        reverse=True,
    )
    for key in ("before", "since"):
        for ref in filters.get(key, []):
            _, cid = await cluster.resolve(ref)
            index = next((i for i, r in enumerate(rows) if r[0]["Id"] == cid), None)
            if index is None:
                continue
            rows = rows[index + 1 :] if key == "before" else rows[:index]
    out = []
    for row, rec in rows:
        if not _row_matches(row, rec, filters):
            continue
        if is_task is not None and (TASK_LABEL in (row.get("Labels") or {})) != is_task:
            continue
        row["Names"] = [f"/{rec.name}/{n}" for n in _names_of(row)]
        row.pop("Health", None)  # the agent's API 1.52 field, for the filter only (we serve 1.41)
        list_row_ports(row, node_ip(rec))
        if size:
            row.setdefault("SizeRw", 0)
            row.setdefault("SizeRootFs", 0)
        out.append(row)
    if limit > 0:
        out = out[:limit]
    return web.json_response(out)


def add_routes(app: web.Application) -> None:
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
