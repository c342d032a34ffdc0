"""Streaming endpoints: hijacked attach and exec start, and logs, bridged to the agents' gRPC
streams.

`docker run` attaches before it starts the container: such an attach waits here, and the `start`
that follows asks the agent to hold the container's first output for it (`hold_output`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web

from manager.api import containers
from manager.api.system import CLUSTER_KEY
from manager.api_types import EXEC_CREATE, EXEC_START
from manager.cluster import Cluster
from manager.errors import bool_param, int_param, read_json
from manager.versioning import VERSION_KEY, Handler, add_versioned_routes
from proto import agent_pb2 as pb
from proto.docker.errors import Conflict, DockerError, InvalidParameter, NotFound
from proto.docker.streams import format_timestamp, frame
from proto.rpc_errors import raise_for_rpc_error

RAW = "application/vnd.docker.raw-stream"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
# docker-py drops bytes that arrive in the same read as the 101 head (engine-api-clients.md 5.1).
HEAD_PAUSE_S = 0.05


class Hijacked(asyncio.Protocol):
    """Owns a connection taken over from aiohttp: client bytes go to a queue (None at EOF); a
    half-close only ends the input, so output still flows (`docker run -i` closes stdin first)."""

    def __init__(
        self, transport: asyncio.Transport, parent: asyncio.BaseProtocol, tail: bytes
    ) -> None:
        self.transport = transport
        self.parent = parent
        self.input: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.lost = asyncio.Event()
        self.stdin_eof = False  # the client half-closed: the container's stdin ends too
        self._writable = asyncio.Event()
        self._writable.set()
        if tail:
            self.input.put_nowait(tail)

    def data_received(self, data: bytes) -> None:
        self.input.put_nowait(data)

    def eof_received(self) -> bool:
        self.stdin_eof = True
        self.input.put_nowait(None)
        return True  # keep our side open

    def connection_lost(self, exc: Exception | None) -> None:
        # Not a stdin EOF: a client that detaches (ctrl-p ctrl-q) leaves the stdin open.
        self.input.put_nowait(None)
        self.lost.set()
        self._writable.set()
        # aiohttp's handler still counts the connection as its own: let it clean up.
        self.parent.connection_lost(exc)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def write(self, data: bytes) -> bool:
        """False once the client is gone."""
        if self.lost.is_set() or self.transport.is_closing():
            return False
        self.transport.write(data)
        await self._writable.wait()
        return not self.lost.is_set()

    def close(self) -> None:
        if not self.transport.is_closing():
            if self.transport.can_write_eof():
                with contextlib.suppress(OSError):
                    self.transport.write_eof()
            self.transport.close()


def stream_type(request: web.Request, tty: bool) -> str:
    # Below API 1.42 clients ignore the media type; dockerd sends raw-stream there.
    version = tuple(int(p) for p in request[VERSION_KEY].split("."))
    return MULTIPLEXED if version >= (1, 42) and not tty else RAW


async def hijack(request: web.Request, content_type: str) -> tuple[web.StreamResponse, Hijacked]:
    """Answer `101 UPGRADED` and take the raw connection over from aiohttp.

    Every client sends `Upgrade: tcp`; the SDK would also take a 200, the CLI only a 101.
    """
    headers = {"Content-Type": content_type, "Connection": "Upgrade", "Upgrade": "tcp"}
    resp = web.StreamResponse(status=101, reason="UPGRADED", headers=headers)
    await resp.prepare(request)
    await resp.drain()
    transport = request.transport
    protocol = request.protocol
    if transport is None:
        raise ConnectionResetError("client went away")
    assert isinstance(transport, asyncio.Transport)
    # Bytes the client sent right behind its request, which aiohttp keeps for an upgrade
    # parser; taken here so aiohttp does not parse them as a next request.
    tail = bytes(getattr(protocol, "_message_tail", b"") or b"")
    if tail:
        protocol._message_tail = b""  # type: ignore[attr-defined]
    conn = Hijacked(transport, protocol, tail)
    transport.set_protocol(conn)
    await asyncio.sleep(HEAD_PAUSE_S)
    return resp, conn


async def bridge(conn: Hijacked, call: Any) -> None:
    """Agent output to the client until the stream ends or the client goes away."""

    async def watch() -> None:
        await conn.lost.wait()
        call.cancel()  # a client that left must not keep a quiet stream open on the agent

    watcher = asyncio.create_task(watch())
    try:
        async for chunk in call:
            if not await conn.write(chunk.data):
                break
    except grpc.RpcError:
        pass  # the stream failed after the 101: all a client can see is the end of output
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # our own handler is being cancelled, not just the call
    finally:
        watcher.cancel()
        call.cancel()
        conn.close()


def stdin_messages(
    conn: Hijacked,
    first: Any,
    make: Callable[[bytes | None], Any],
    close_at_end: Callable[[], bool],
    detach_keys: bytes = b"",
) -> AsyncIterator[Any]:
    """The agent stream's input: `first`, the client's bytes, then a stdin close if wanted.
    Either way the input stream then ends; for an attach with stdin the agent ends the session
    at that point unless the stdin was closed (dockerd's rule), after every byte sent before
    has reached the container, so the input is never lost to a close racing it.

    The detach keys, as dockerd watches for them, end the session instead of reaching the
    container; a partial match is held back until the next byte decides."""

    async def gen() -> AsyncIterator[Any]:
        yield first
        held = b""
        while True:
            data = await conn.input.get()
            if data is None:
                if close_at_end():
                    yield make(None)
                return
            if detach_keys and (held or detach_keys[0] in data):
                data, held, detached = _scan_detach(held + data, detach_keys)
                if detached:
                    if data:
                        yield make(data)
                    conn.close()
                    return
                if not data:
                    continue
            yield make(data)

    return gen()


def _scan_detach(data: bytes, keys: bytes) -> tuple[bytes, bytes, bool]:
    """(bytes to forward, partial match held back, whether the full sequence was typed)."""
    index = data.find(keys)
    if index >= 0:
        return data[:index], b"", True
    for n in range(min(len(keys) - 1, len(data)), 0, -1):
        if data.endswith(keys[:n]):
            return data[:-n], data[-n:], False
    return data, b"", False


def parse_detach_keys(request: web.Request) -> bytes:
    """`detachKeys` (`ctrl-p,ctrl-q`, `a`, `ctrl-@`, ...) as bytes; invalid: the default."""
    out = bytearray()
    for key in (request.query.get("detachKeys") or "ctrl-p,ctrl-q").split(","):
        key = key.strip().lower()
        if len(key) == 1:
            out.append(ord(key))
        elif key.startswith("ctrl-") and len(key) == 6 and key[5] in CTRL_KEYS:
            out.append(CTRL_KEYS.index(key[5]))
        else:
            return DEFAULT_DETACH
    return bytes(out) or DEFAULT_DETACH


# ctrl-@ is 0, ctrl-a 1 ... ctrl-z 26, ctrl-[ 27, ctrl-\\ 28, ctrl-] 29, ctrl-^ 30, ctrl-_ 31
CTRL_KEYS = "@abcdefghijklmnopqrstuvwxyz[\\]^_"
DEFAULT_DETACH = b"\x10\x11"


def _attach_input(data: bytes | None) -> pb.AttachInput:
    return pb.AttachInput(close_stdin=True) if data is None else pb.AttachInput(stdin=data)


def _exec_input(data: bytes | None) -> pb.ExecInput:
    return pb.ExecInput(close_stdin=True) if data is None else pb.ExecInput(stdin=data)


# ------------------------------------------------------------------------ attach

# container id -> futures of attaches waiting for the container's start
PENDING_KEY = web.AppKey("pending_attaches", dict)


async def _inspect(cluster: Cluster, node_id: str, cid: str) -> dict[str, Any]:
    reply = await cluster.call(node_id, lambda s: s.ContainerInspect(pb.ContainerRef(id=cid)))
    doc: dict[str, Any] = json.loads(reply.json)
    return doc


async def attach(request: web.Request) -> web.StreamResponse:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    doc = await _inspect(cluster, node_id, cid)
    tty = bool((doc.get("Config") or {}).get("Tty"))
    state = doc.get("State") or {}
    if state.get("Paused"):
        # Said before the 101: after it a client could only see an empty stream.
        raise Conflict(f"container {cid} is paused, unpause the container before attach")
    opts = pb.AttachOptions(
        id=cid,
        stdin=bool_param(request, "stdin"),
        stdout=bool_param(request, "stdout"),
        stderr=bool_param(request, "stderr"),
        logs=bool_param(request, "logs"),
        stream=bool_param(request, "stream"),
    )
    waiter: asyncio.Future[None] | None = None
    pending: dict[str, list[asyncio.Future[None]]] = request.app[PENDING_KEY]
    if opts.stream and not state.get("Running"):
        # Registered before the 101 goes out: the client starts the container only after it.
        waiter = asyncio.get_running_loop().create_future()
        pending.setdefault(cid, []).append(waiter)
    try:
        resp, conn = await hijack(request, stream_type(request, tty))
        if waiter is not None:
            lost = asyncio.ensure_future(conn.lost.wait())
            await asyncio.wait([waiter, lost], return_when=asyncio.FIRST_COMPLETED)
            lost.cancel()
            if conn.lost.is_set():
                return resp
    finally:
        if waiter is not None:
            waiters = pending.get(cid, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                pending.pop(cid, None)
    # When the client's input ends, dockerd closes the container's stdin for StdinOnce,
    # non-TTY containers (`docker run -i`) and streams on; otherwise it ends the session and
    # leaves the stdin open (the agent does that when our input ends without a close): that
    # is how the CLI's detach (ctrl-p ctrl-q) and `echo x | docker attach` complete.
    config = doc.get("Config") or {}
    stdin_once = bool(config.get("StdinOnce")) and not tty
    first = pb.AttachInput(options=opts)
    keys = parse_detach_keys(request)
    inputs = stdin_messages(conn, first, _attach_input, lambda: stdin_once, keys)
    call = cluster.stub(node_id).ContainerAttach(inputs)
    await bridge(conn, call)
    return resp


@web.middleware
async def start_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`start` of a container with attaches waiting: the agent holds its first output for them."""
    if request.match_info.handler is not containers.start:
        return await handler(request)
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    waiters = request.app[PENDING_KEY].get(cid)
    if not waiters:
        return await handler(request)
    await cluster.call(
        node_id, lambda s: s.ContainerStart(pb.ContainerStartRequest(id=cid, hold_output=True))
    )
    for w in list(waiters):
        if not w.done():
            w.set_result(None)
    return web.Response(status=204)


async def resize(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    req = pb.ResizeRequest(
        id=cid, height=int_param(request, "h") or 0, width=int_param(request, "w") or 0
    )
    await cluster.call(node_id, lambda s: s.ContainerResize(req))
    return web.Response(status=200)


# ------------------------------------------------------------------------ logs


def _since(request: web.Request, name: str) -> int:
    """`since`/`until`: Unix seconds with an optional fraction -> ns (0: unset)."""
    value = request.query.get(name, "")
    if not value:
        return 0
    try:
        secs, _, frac = value.partition(".")
        return int(secs) * 1_000_000_000 + int(frac.ljust(9, "0")[:9] or 0)
    except ValueError:
        raise InvalidParameter(f"invalid value for {name}: {value!r}") from None


async def container_logs(request: web.Request) -> web.StreamResponse:
    cluster = request.app[CLUSTER_KEY]
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    stdout, stderr = bool_param(request, "stdout"), bool_param(request, "stderr")
    if not (stdout or stderr):
        raise InvalidParameter("Bad parameters: you must choose at least one stream")
    req = pb.ContainerLogsRequest(
        id=cid,
        follow=bool_param(request, "follow"),
        since_ns=_since(request, "since"),
        until_ns=_since(request, "until"),
        timestamps=bool_param(request, "timestamps"),
        stdout=stdout,
        stderr=stderr,
    )
    tail = request.query.get("tail", "all")
    if tail not in ("", "all"):
        try:
            req.tail = int(tail)
        except ValueError:
            raise InvalidParameter(f"invalid value for tail: {tail!r}") from None
    doc = await _inspect(cluster, node_id, cid)
    tty = bool((doc.get("Config") or {}).get("Tty"))
    call = cluster.stub(node_id).ContainerLogs(req)
    response = web.StreamResponse(status=200, headers={"Content-Type": stream_type(request, tty)})
    try:
        # The first chunk (or the error) before any header: a bad request still gets its status.
        chunks = call.__aiter__()
        first = await _first_chunk(chunks)
        await response.prepare(request)
        while first is not None:
            data = first.data
            if req.timestamps:
                data = format_timestamp(first.time_ns).encode() + b" " + data
            await response.write(data if tty else frame(first.stream, data))
            first = await _first_chunk(chunks)
        await response.write_eof()
    except grpc.RpcError:
        if response.prepared:
            return response
        raise
    finally:
        call.cancel()
    return response


async def _first_chunk(chunks: AsyncIterator[pb.LogChunk]) -> pb.LogChunk | None:
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return None


# ------------------------------------------------------------------------ exec

# exec id -> node id
EXECS_KEY = web.AppKey("exec_nodes", dict)


async def exec_create(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    body = await read_json(request, EXEC_CREATE, {})  # dockerd decodes before it looks
    node_id, cid = await cluster.resolve(request.match_info["ref"])
    reply = await cluster.call(
        node_id,
        lambda s: s.ExecCreate(pb.ExecCreateRequest(id=cid, json=json.dumps(body).encode())),
    )
    request.app[EXECS_KEY][reply.id] = node_id
    return web.json_response({"Id": reply.id}, status=201)


async def _exec_node(request: web.Request, eid: str) -> tuple[str, dict[str, Any]]:
    """(node id, exec inspect); the manager forgets execs on restart, so it asks the agents."""
    cluster = request.app[CLUSTER_KEY]
    execs: dict[str, str] = request.app[EXECS_KEY]
    node_id = execs.get(eid)
    if node_id is not None:
        reply = await cluster.call(node_id, lambda s: s.ExecInspect(pb.ExecRef(id=eid)))
        return node_id, json.loads(reply.json)
    for rec, result in await cluster.fan_out(lambda s: s.ExecInspect(pb.ExecRef(id=eid))):
        if not isinstance(result, BaseException):
            execs[eid] = rec.id
            return rec.id, json.loads(result.json)
    raise NotFound(f"No such exec instance: {eid}")


async def exec_inspect(request: web.Request) -> web.Response:
    _, doc = await _exec_node(request, request.match_info["eid"])
    return web.json_response(doc)


async def exec_start(request: web.Request) -> web.StreamResponse:
    cluster = request.app[CLUSTER_KEY]
    eid = request.match_info["eid"]
    body = await read_json(request, EXEC_START, {})
    node_id, doc = await _exec_node(request, eid)
    opts = pb.ExecStartOptions(id=eid, detach=bool(body.get("Detach")), tty=bool(body.get("Tty")))
    if doc.get("Running") or doc.get("ExitCode") is not None:
        raise DockerError(f"Error: Exec command {eid} is already running", 409)
    first = pb.ExecInput(options=opts)
    if opts.detach:
        call = cluster.stub(node_id).ExecStart(_one(first))
        try:
            async for _ in call:
                pass
        except grpc.RpcError as e:
            raise raise_for_rpc_error(e) from None
        return web.Response(status=200)
    tty = bool((doc.get("ProcessConfig") or {}).get("tty"))
    resp, conn = await hijack(request, stream_type(request, tty))
    # An exec's stdin ends with the client's (half-close); a client that leaves abruptly
    # leaves it open, as dockerd does on a detach.
    inputs = stdin_messages(conn, first, _exec_input, lambda: conn.stdin_eof)
    call = cluster.stub(node_id).ExecStart(inputs)
    await bridge(conn, call)
    return resp


async def _one(first: pb.ExecInput) -> AsyncIterator[pb.ExecInput]:
    yield first


async def exec_resize(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    eid = request.match_info["eid"]
    node_id, _ = await _exec_node(request, eid)
    req = pb.ResizeRequest(
        id=eid, height=int_param(request, "h") or 0, width=int_param(request, "w") or 0
    )
    await cluster.call(node_id, lambda s: s.ExecResize(req))
    return web.Response(status=200)


def add_routes(app: web.Application) -> None:
    app[PENDING_KEY] = {}
    app[EXECS_KEY] = {}
    app.middlewares.append(start_middleware)
    routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
        ("POST", "/containers/{ref:.+}/attach", attach),
        ("POST", "/containers/{ref:.+}/resize", resize),
        ("GET", "/containers/{ref:.+}/logs", container_logs),
        ("POST", "/containers/{ref:.+}/exec", exec_create),
        ("POST", "/exec/{eid}/start", exec_start),
        ("POST", "/exec/{eid}/resize", exec_resize),
        ("GET", "/exec/{eid}/json", exec_inspect),
    ]
    add_versioned_routes(app, routes)
