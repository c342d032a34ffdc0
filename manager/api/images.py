"""Image endpoints across the cluster, as classic Swarm presents them.

`docker images` is the union of every node's list grouped by image ID, from the images records
the nodes publish (manager/node_images.py; `all=1` and the image named by `before`/`since` still
ask the nodes); inspect, history and
save answer from one node holding the image(s); tag and rmi act on every node holding it;
load and import stream the request body to every node at once; pulls from a registry run on
every node (manager/api/image_pull.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from manager.api import image_pull
from manager.api.filters import request_filters
from manager.api.system import CLUSTER_KEY
from manager.cluster import Cluster
from manager.errors import bool_param
from manager.node_images import merge_rows
from manager.versioning import add_versioned_routes
from proto import agent_pb2 as pb
from proto.agent_pb2_grpc import AgentStub
from proto.docker.errors import DockerError, InvalidParameter, NotFound
from proto.image_list import filter_listed

T = TypeVar("T")
CHUNK = 64 * 1024
QUEUE_CHUNKS = 8  # per node: what a slow node may lag behind the fastest, in chunks
LIST_FILTERS = ("reference", "dangling", "label", "before", "since", "node")


def _json_line(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode()


def _first_error(errors: list[BaseException], fallback: DockerError) -> DockerError:
    """The error to report when no node succeeded: a real failure beats 'not found'."""
    docker_errors = [e for e in errors if isinstance(e, DockerError)]
    for e in docker_errors:
        if not isinstance(e, NotFound) and e.status != 404:
            return e
    return docker_errors[0] if docker_errors else fallback


async def _from_any(
    cluster: Cluster, fn: Callable[[AgentStub], Awaitable[T]], missing: DockerError
) -> tuple[str, T]:
    """(node id, result) of the first node, in node order, where `fn` succeeds."""
    results = await cluster.fan_out(fn)
    for rec, result in results:
        if not isinstance(result, BaseException):
            return rec.id, result
    raise _first_error([r for _, r in results if isinstance(r, BaseException)], missing)


# --------------------------------------------------------------------------- views


async def list_images(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    filters = request_filters(request, LIST_FILTERS)
    wanted = filters.pop("node", [])
    # before/since name an image that may live on some nodes only: resolve it once here.
    bounds = {k: filters.pop(k) for k in ("before", "since") if k in filters}
    node_ids = [
        rec.id
        for rec in cluster.sorted_nodes()
        if not wanted or rec.name in wanted or rec.id in wanted
    ]
    if not node_ids:
        return web.json_response([])
    if bool_param(request, "all"):
        rows = await _listed_by_nodes(cluster, node_ids, filters)
    else:
        await cluster.node_images.catch_up()
        view = cluster.node_images
        rows = merge_rows(filter_listed(view.rows_of(n), filters) for n in node_ids)
    for key, refs in bounds.items():
        created = [await _created(cluster, ref) for ref in refs]
        if key == "before":
            rows = [r for r in rows if r["Created"] < min(created)]
        else:
            rows = [r for r in rows if r["Created"] > max(created)]
    rows.sort(key=lambda r: r["Created"], reverse=True)
    return web.json_response(rows)


async def _listed_by_nodes(
    cluster: Cluster, node_ids: list[str], filters: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """`docker images -a`: intermediate images are in no record, so the nodes are asked."""
    req = pb.ImageListRequest(all=True, filters=json.dumps(filters).encode() if filters else b"")
    results = await cluster.fan_out(lambda s: s.ImageList(req), node_ids)
    lists: list[list[dict[str, Any]]] = []
    for _, result in results:
        if isinstance(result, InvalidParameter):
            raise result
        if not isinstance(result, BaseException):  # an unreachable node hides its images
            lists.append(json.loads(result.json) or [])
    return merge_rows(lists)


async def _created(cluster: Cluster, ref: str) -> int:
    _, found = await _from_any(
        cluster, lambda s: s.ImageInspect(pb.ImageRef(ref=ref)), NotFound(f"No such image: {ref}")
    )
    image_id = json.loads(found.json)["Id"]
    for _, result in await cluster.fan_out(lambda s: s.ImageList(pb.ImageListRequest(all=True))):
        if not isinstance(result, BaseException):
            for row in json.loads(result.json) or []:
                if row["Id"] == image_id:
                    return int(row["Created"])
    raise NotFound(f"No such image: {ref}")


async def _json_from_any(request: web.Request, rpc: str) -> web.Response:
    """Inspect-like answers: from any node that has the image."""
    name = request.match_info["name"]
    _, reply = await _from_any(
        request.app[CLUSTER_KEY],
        lambda s: getattr(s, rpc)(pb.ImageRef(ref=name)),
        NotFound(f"No such image: {name}"),
    )
    return web.Response(body=reply.json, content_type="application/json")


async def inspect(request: web.Request) -> web.Response:
    return await _json_from_any(request, "ImageInspect")


async def history(request: web.Request) -> web.Response:
    return await _json_from_any(request, "ImageHistory")


# --------------------------------------------------------------------------- tag, rmi


async def tag(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    req = pb.ImageTagRequest(
        ref=name, repo=request.query.get("repo", ""), tag=request.query.get("tag", "")
    )
    results = await request.app[CLUSTER_KEY].fan_out(lambda s: s.ImageTag(req))
    errors = [r for _, r in results if isinstance(r, BaseException)]
    if len(errors) == len(results):
        raise _first_error(errors, NotFound(f"No such image: {name}"))
    return web.Response(status=201)


async def remove(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    name = request.match_info["name"]
    req = pb.ImageRemoveRequest(
        ref=name, force=bool_param(request, "force"), noprune=bool_param(request, "noprune")
    )
    # Nodes where a container uses the image go first: if one refuses (image in use), the
    # image is still intact everywhere else, so the conflict leaves the cluster as it was.
    found = await cluster.fan_out(lambda s: s.ImageInspect(pb.ImageRef(ref=name)))
    in_use: list[str] = []
    for rec, result in found:
        if not isinstance(result, BaseException):
            image_id = json.loads(result.json)["Id"]
            if any(
                st.node_id == rec.id and st.image_id == image_id for st in cluster.statuses.values()
            ):
                in_use.append(rec.id)
    results: list[tuple[Any, Any]] = []
    for node_ids in (in_use, [rec.id for rec, _ in found if rec.id not in in_use]):
        if not node_ids:
            continue
        batch = await cluster.fan_out(lambda s: s.ImageRemove(req), node_ids)
        results += batch
        errors = [r for _, r in results if isinstance(r, BaseException)]
        if any(not (isinstance(e, DockerError) and e.status == 404) for e in errors):
            # A conflict on any node (image in use) is the answer, as dockerd gives it.
            raise _first_error(errors, NotFound(f"No such image: {name}"))
    if all(isinstance(r, BaseException) for _, r in results):
        errors = [r for _, r in results if isinstance(r, BaseException)]
        raise _first_error(errors, NotFound(f"No such image: {name}"))
    records: list[dict[str, str]] = []
    for _, result in results:
        if not isinstance(result, BaseException):
            records += [r for r in json.loads(result.json) or [] if r not in records]
    return web.json_response(records)


# --------------------------------------------------------------------------- import, load


async def _tee(
    cluster: Cluster,
    chunks: AsyncIterator[bytes],
    node_ids: list[str],
    rpc: Callable[[AgentStub, AsyncIterator[bytes]], Awaitable[T]],
) -> list[tuple[str, T | BaseException]]:
    """Feed one byte stream to `rpc` on every node at once, through small bounded queues."""
    queues: dict[str, asyncio.Queue[bytes | None]] = {
        n: asyncio.Queue(QUEUE_CHUNKS) for n in node_ids
    }
    done: set[str] = set()

    async def feed(node_id: str) -> AsyncIterator[bytes]:
        queue = queues[node_id]
        while (data := await queue.get()) is not None:
            yield data

    async def one(node_id: str) -> T:
        try:
            return await cluster.call(node_id, lambda s: rpc(s, feed(node_id)), timeout=None)
        finally:
            # A node that failed early must not block the others: drop what it would get.
            done.add(node_id)
            queue = queues[node_id]
            while not queue.empty():
                queue.get_nowait()

    tasks = [asyncio.create_task(one(n)) for n in node_ids]
    try:
        async for data in chunks:
            if not data:
                continue
            for node_id in node_ids:
                if node_id not in done:
                    await queues[node_id].put(data)
        for node_id in node_ids:
            if node_id not in done:
                await queues[node_id].put(None)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:
            task.cancel()
    return list(zip(node_ids, results, strict=True))


async def _request_chunks(request: web.Request) -> AsyncIterator[bytes]:
    async for data in request.content.iter_chunked(CHUNK):
        yield data


def _failure_line(cluster: Cluster, node_id: str, error: BaseException) -> bytes:
    rec = cluster.nodes.get(node_id)
    text = f"{rec.name if rec else node_id}: {error}"
    return _json_line({"errorDetail": {"message": text}, "error": text})


async def _stream_lines(request: web.Request, lines: list[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    for line in lines:
        await response.write(line)
    await response.write_eof()
    return response


async def load(request: web.Request) -> web.StreamResponse:
    cluster = request.app[CLUSTER_KEY]
    node_ids = [rec.id for rec in cluster.sorted_nodes()]
    if not node_ids:
        raise DockerError("no node is available to load the images", 503)

    async def rpc(stub: AgentStub, data: AsyncIterator[bytes]) -> pb.ImageLoadReply:
        return await stub.ImageLoad(pb.DataChunk(data=d) async for d in data)

    results = await _tee(cluster, _request_chunks(request), node_ids, rpc)
    return await _load_answer(request, cluster, results)


async def _load_answer(
    request: web.Request, cluster: Cluster, results: list[tuple[str, Any]]
) -> web.StreamResponse:
    errors = [r for _, r in results if isinstance(r, BaseException)]
    if len(errors) == len(results):
        raise _first_error(errors, DockerError("image load failed"))
    lines: list[bytes] = []
    seen: set[str] = set()
    for node_id, result in results:
        if isinstance(result, BaseException):
            lines.append(_failure_line(cluster, node_id, result))
            continue
        for text in result.lines:
            if text not in seen:
                seen.add(text)
                lines.append(_json_line({"stream": text.rstrip("\n") + "\n"}))
    # Failures last: the CLI stops printing at the first error line.
    lines.sort(key=lambda line: line.startswith(b'{"errorDetail"'))
    return await _stream_lines(request, lines)


async def create(request: web.Request) -> web.StreamResponse:
    """POST /images/create: `fromImage` pulls on the nodes, `fromSrc=-` imports the body."""
    from_image = request.query.get("fromImage", "")
    from_src = request.query.get("fromSrc", "")
    if from_image or not from_src:
        return await image_pull.pull(request)
    if from_src != "-":
        raise DockerError(
            f"flotilla cannot import from {from_src}: only an uploaded tarball (fromSrc=-) "
            "is supported",
            501,
        )
    return await _import(request)


async def _import(request: web.Request) -> web.StreamResponse:
    cluster = request.app[CLUSTER_KEY]
    node_ids = [rec.id for rec in cluster.sorted_nodes()]
    if not node_ids:
        raise DockerError("no node is available to import the image", 503)
    repo, tag_ = request.query.get("repo", ""), request.query.get("tag", "")
    reference = f"{repo}:{tag_}" if repo and tag_ else repo
    opts = pb.ImageImportOptions(
        reference=reference,
        changes=request.query.getall("changes", []),
        message=request.query.get("message", ""),
        platform_os=request.query.get("platform", "").partition("/")[0],
    )
    # The node stamps the import time into the image config, so importing on every node would
    # give every node its own image ID. Import once, then replicate the saved image with load:
    # one ID across the cluster, still streamed and never held whole in memory.
    first = node_ids[0]

    async def import_rpc(stub: AgentStub) -> pb.ImageImportReply:
        async def messages() -> AsyncIterator[pb.ImageImportInput]:
            yield pb.ImageImportInput(options=opts)
            async for data in _request_chunks(request):
                yield pb.ImageImportInput(data=data)

        return await stub.ImageImport(messages())

    reply = await cluster.call(first, import_rpc, timeout=None)  # a client stream
    lines = [line.encode() + b"\n" for line in reply.progress] or [
        _json_line({"status": reply.image_id})
    ]
    others = node_ids[1:]
    if others:
        # By reference, so the copies carry the tag; an untagged import travels by ID.
        ref = reference if reference else reply.image_id
        results = await _replicate(cluster, first, ref, others)
        lines[:0] = [_failure_line(cluster, n, r) for n, r in results if isinstance(r, Exception)]
    return await _stream_lines(request, lines)


async def _replicate(
    cluster: Cluster, source: str, ref: str, targets: list[str]
) -> list[tuple[str, Any]]:
    async def chunks() -> AsyncIterator[bytes]:
        stream = cluster.stub(source).ImageSave(pb.ImageSaveRequest(refs=[ref]))
        async for msg in stream:
            yield msg.data

    async def rpc(stub: AgentStub, data: AsyncIterator[bytes]) -> pb.ImageLoadReply:
        return await stub.ImageLoad(pb.DataChunk(data=d) async for d in data)

    return await _tee(cluster, chunks(), targets, rpc)


# --------------------------------------------------------------------------- save


async def save(request: web.Request) -> web.StreamResponse:
    names = request.query.getall("names", [])
    if "name" in request.match_info:
        names = [request.match_info["name"]]
    if not names:
        raise InvalidParameter("no images to save: give names")
    cluster = request.app[CLUSTER_KEY]

    async def has_all(stub: AgentStub) -> bool:
        for name in names:
            await stub.ImageInspect(pb.ImageRef(ref=name))
        return True

    missing = NotFound(
        "Unable to find a healthy engine containing all images: [" + " ".join(names) + "]"
    )
    results = await cluster.fan_out(has_all)
    holder = next((rec.id for rec, r in results if r is True), None)
    if holder is None:
        if len(names) == 1:
            raise _first_error([r for _, r in results if isinstance(r, BaseException)], missing)
        raise missing
    stream = cluster.stub(holder).ImageSave(pb.ImageSaveRequest(refs=names))
    response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
    started = False
    try:
        async for msg in stream:
            if not started:
                await response.prepare(request)
                started = True
            await response.write(msg.data)
    except Exception:
        if not started:
            raise  # nothing sent yet: the middleware answers with Docker's error
        stream.cancel()
        raise
    if not started:
        await response.prepare(request)
    await response.write_eof()
    return response


def add_routes(app: web.Application) -> None:
    routes: list[tuple[str, str, Any]] = [
        ("GET", "/images/json", list_images),
        ("POST", "/images/create", create),
        ("POST", "/images/load", load),
        ("GET", "/images/get", save),
        ("GET", "/images/{name:.+}/json", inspect),
        ("GET", "/images/{name:.+}/history", history),
        ("GET", "/images/{name:.+}/get", save),
        ("POST", "/images/{name:.+}/tag", tag),
        ("DELETE", "/images/{name:.+}", remove),
    ]
    add_versioned_routes(app, routes)
