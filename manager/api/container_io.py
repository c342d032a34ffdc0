"""Per-container views and file I/O, each forwarded to the node that holds the container: top,
stats, changes, update, export, archive (`docker cp`) and commit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web

from manager.api.system import CLUSTER_KEY
from manager.api_types import CONTAINER_CREATE, CONTAINER_UPDATE
from manager.errors import bool_param, read_json
from manager.versioning import add_versioned_routes
from proto import agent_pb2 as pb
from proto.docker.archive import encode_stat_header
from proto.docker.errors import InvalidParameter
from proto.rpc_errors import raise_for_rpc_error

CHUNK = 1 << 16
STAT_HEADER = "X-Docker-Container-Path-Stat"
COMMIT_TIMEOUT_S = 600.0  # a commit copies the container's whole upper layer


async def _first(stream: AsyncIterator[Any]) -> Any | None:
    """The stream's first message, or None when it is empty; agent errors as Docker errors."""
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None
    except grpc.RpcError as e:
        raise raise_for_rpc_error(e) from None


async def _relay(
    request: web.Request,
    response: web.StreamResponse,
    first: Any | None,
    rest: AsyncIterator[Any],
    payload: Callable[[Any], bytes],
) -> web.StreamResponse:
    """Headers are out once the first message came: later failures can only cut the body."""
    await response.prepare(request)
    try:
        if first is not None:
            await response.write(payload(first))
            async for msg in rest:
                await response.write(payload(msg))
        await response.write_eof()
    except grpc.RpcError:
        pass
    return response


async def top(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    req = pb.ContainerTopRequest(id=cid, ps_args=request.query.get("ps_args", ""))
    reply = await cluster.call(node_id, lambda s: s.ContainerTop(req))
    return web.json_response(json.loads(reply.json))


async def stats(request: web.Request) -> web.StreamResponse:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    req = pb.ContainerStatsRequest(
        id=cid,
        stream=bool_param(request, "stream", default=True),
        one_shot=bool_param(request, "one-shot"),
    )
    call = cluster.stub(node_id).ContainerStats(req)
    try:
        stream = call.__aiter__()
        first = await _first(stream)
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        return await _relay(request, response, first, stream, lambda m: bytes(m.json) + b"\n")
    finally:
        call.cancel()


async def changes(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    reply = await cluster.call(node_id, lambda s: s.ContainerChanges(pb.ContainerRef(id=cid)))
    return web.json_response(json.loads(reply.json))


async def update(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    body = await read_json(request, CONTAINER_UPDATE, {})  # dockerd decodes before it looks
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    req = pb.ContainerUpdateRequest(id=cid, json=json.dumps(body).encode())
    reply = await cluster.call(node_id, lambda s: s.ContainerUpdate(req))
    return web.json_response({"Warnings": list(reply.warnings)})


async def export(request: web.Request) -> web.StreamResponse:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    call = cluster.stub(node_id).ContainerExport(pb.ContainerRef(id=cid))
    try:
        stream = call.__aiter__()
        first = await _first(stream)
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/x-tar"})
        return await _relay(request, response, first, stream, lambda m: bytes(m.data))
    finally:
        call.cancel()


def _path(request: web.Request) -> str:
    path = request.query.get("path", "")
    if not path:
        raise InvalidParameter("path must not be empty")
    return path


async def archive_head(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    req = pb.ArchiveRequest(id=cid, path=_path(request))
    reply = await cluster.call(node_id, lambda s: s.ArchiveStat(req))
    return web.Response(
        status=200, headers={STAT_HEADER: encode_stat_header(json.loads(reply.json))}
    )


async def archive_get(request: web.Request) -> web.StreamResponse:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    call = cluster.stub(node_id).ArchiveGet(pb.ArchiveRequest(id=cid, path=_path(request)))
    try:
        stream = call.__aiter__()
        first = await _first(stream)
        headers = {"Content-Type": "application/x-tar"}
        if first is not None and first.stat_json:
            headers[STAT_HEADER] = encode_stat_header(json.loads(first.stat_json))
        response = web.StreamResponse(status=200, headers=headers)
        return await _relay(request, response, first, stream, lambda m: bytes(m.data))
    finally:
        call.cancel()


async def archive_put(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    opts = pb.ArchivePutOptions(
        id=cid,
        path=_path(request),
        no_overwrite_dir_non_dir=bool_param(request, "noOverwriteDirNonDir"),
    )

    async def inputs() -> AsyncIterator[pb.ArchivePutInput]:
        yield pb.ArchivePutInput(options=opts)
        async for data in request.content.iter_chunked(CHUNK):
            yield pb.ArchivePutInput(data=data)

    await cluster.call(node_id, lambda s: s.ArchivePut(inputs()), timeout=None)  # a stream
    return web.Response(status=200)


async def commit(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    ref = request.query.get("container", "")
    if not ref:
        raise InvalidParameter("No container specified")  # dockerd needs one too
    node_id, cid = await cluster.resolve(ref)
    config = await read_json(request, CONTAINER_CREATE)
    repo, tag = request.query.get("repo", ""), request.query.get("tag", "")
    reference = f"{repo}:{tag}" if repo and tag else repo
    req = pb.ContainerCommitRequest(
        id=cid,
        config=json.dumps(config).encode() if config else b"",
        comment=request.query.get("comment", ""),
        author=request.query.get("author", ""),
        reference=reference,
        changes=request.query.getall("changes", []),
        pause=bool_param(request, "pause", default=True),
    )
    reply = await cluster.call(node_id, lambda s: s.ContainerCommit(req), timeout=COMMIT_TIMEOUT_S)
    return web.json_response({"Id": reply.image_id}, status=201)


def add_routes(app: web.Application) -> None:
    routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
        ("GET", "/containers/{ref:.+}/top", top),
        ("GET", "/containers/{ref:.+}/stats", stats),
        ("GET", "/containers/{ref:.+}/changes", changes),
        ("POST", "/containers/{ref:.+}/update", update),
        ("GET", "/containers/{ref:.+}/export", export),
        ("HEAD", "/containers/{ref:.+}/archive", archive_head),
        ("GET", "/containers/{ref:.+}/archive", archive_get),
        ("PUT", "/containers/{ref:.+}/archive", archive_put),
        ("POST", "/commit", commit),
    ]
    add_versioned_routes(app, routes)
