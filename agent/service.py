"""The agent's gRPC service: the manager's calls, served by this node's runtime.

Docker-shaped payloads pass through as JSON bytes. Every runtime DockerError ends the RPC with
its HTTP status and exact message (proto/rpc_errors.py). Blocking work (tar streams, image import,
load and save) runs in worker threads and is streamed in CHUNK-sized pieces with backpressure,
so no image or archive is ever held in memory whole.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import io
import json
import logging
import os
import platform
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata
from typing import Any, BinaryIO, TypeVar

import grpc

from agent.events import EventBus
from proto import agent_pb2 as pb
from proto import agent_pb2_grpc
from proto import rpc_errors as errors
from proto.docker.errors import Conflict, DockerError, InvalidParameter
from proto.docker.streams import frame
from runtime import views
from runtime.containers import Runtime

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
# Chunks buffered between a worker thread and the gRPC stream: bounds memory per stream.
QUEUE_CHUNKS = 4
STATS_INTERVAL = 1.0
EXEC_EXIT_GRACE = 5.0

T = TypeVar("T")


def _version() -> str:
    try:
        return metadata.version("flotilla")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _loads(data: bytes, default: Any) -> Any:
    if not data:
        return default
    try:
        return json.loads(data)
    except ValueError as err:
        raise InvalidParameter(f"invalid JSON: {err}") from None


def _rpc(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn DockerErrors (and unexpected failures, as 500) into the RPC's error status."""
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def stream(self: AgentService, request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for item in fn(self, request, context):
                    yield item
            except DockerError as err:
                await errors.abort(context, err)
            except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit):
                raise
            except Exception as err:
                log.exception("%s failed", fn.__name__)
                await errors.abort(context, DockerError(str(err) or type(err).__name__, 500))

        return stream

    @functools.wraps(fn)
    async def unary(self: AgentService, request: Any, context: Any) -> Any:
        try:
            return await fn(self, request, context)
        except DockerError as err:
            await errors.abort(context, err)
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as err:
            log.exception("%s failed", fn.__name__)
            await errors.abort(context, DockerError(str(err) or type(err).__name__, 500))

    return unary


# --------------------------------------------------------------------- thread <-> stream bridges


class _Bridge:
    """Runs loop-side coroutines for a worker thread; `abort()` unblocks the thread for good.

    Both sides of the check (`_put`/`_next` and `abort`) run on the loop, so there is no race
    between a thread starting a new wait and the stream going away.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.aborted = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def call(self, coro_fn: Callable[[], Awaitable[T]]) -> T:
        """From the worker thread: run `coro_fn()` on the loop and wait for its result."""

        async def guarded() -> T:
            if self.aborted:
                raise BrokenPipeError("stream closed")
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                return await coro_fn()
            finally:
                self._tasks.discard(task)

        try:
            return asyncio.run_coroutine_threadsafe(guarded(), self.loop).result()
        except concurrent.futures.CancelledError:
            raise BrokenPipeError("stream closed") from None

    def abort(self) -> None:
        """From the loop: fail the thread's current and future waits."""
        self.aborted = True
        for task in list(self._tasks):
            task.cancel()


class _Sink(io.RawIOBase):
    """A writable file for a worker thread; what it writes comes out of `chunks()` on the loop.

    It coalesces writes into CHUNK-sized pieces itself rather than through io.BufferedWriter,
    whose flush on close or garbage collection could run on the loop thread and deadlock.
    """

    def __init__(self, bridge: _Bridge) -> None:
        self._bridge = bridge
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_CHUNKS)
        self._buf = bytearray()
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self._buf += b
        n = len(memoryview(b).cast("B"))
        self._pos += n
        while len(self._buf) >= CHUNK:
            self._send(bytes(self._buf[:CHUNK]))
            del self._buf[:CHUNK]
        return n

    def tell(self) -> int:
        return self._pos

    def send_rest(self) -> None:
        """From the worker thread, once the producer is done."""
        if self._buf:
            self._send(bytes(self._buf))
            self._buf.clear()

    def _send(self, data: bytes) -> None:
        self._bridge.call(lambda: self._queue.put(data))

    async def finish(self) -> None:
        """On the loop, after the producer is done: end `chunks()`."""
        await self._queue.put(None)

    async def chunks(self) -> AsyncIterator[bytes]:
        while (data := await self._queue.get()) is not None:
            yield data


async def _stream_out(produce: Callable[[BinaryIO], Awaitable[Any]]) -> AsyncIterator[bytes]:
    """Chunks of what `produce(out)` writes to `out` (from its worker threads).

    A failure of `produce` is raised after the chunks written before it; if the consumer goes
    away, the producer's next write fails with BrokenPipeError so it cleans up and ends.
    """
    bridge = _Bridge(asyncio.get_running_loop())
    sink = _Sink(bridge)

    async def run() -> None:
        try:
            await produce(sink)  # type: ignore[arg-type]
            await asyncio.to_thread(sink.send_rest)
        finally:
            if not bridge.aborted:
                await sink.finish()

    task = asyncio.create_task(run())
    try:
        async for data in sink.chunks():
            yield data
        await task  # re-raises the producer's error
    finally:
        if not task.done():
            bridge.abort()
            task.add_done_callback(_consume_exception)


def _consume_exception(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class _Source(io.RawIOBase):
    """A readable file for a worker thread, fed by an async iterator of chunks on the loop."""

    def __init__(self, bridge: _Bridge, chunks: AsyncIterator[bytes]) -> None:
        self._bridge = bridge
        self._chunks = chunks
        self._buf = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    async def _next(self) -> bytes | None:
        async for data in self._chunks:
            if data:
                return data
        return None

    def readinto(self, b: Any) -> int:
        if not self._buf and not self._eof:
            data = self._bridge.call(self._next)
            if data is None:
                self._eof = True
            else:
                self._buf = data
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


async def _feed_in(chunks: AsyncIterator[bytes], consume: Callable[[BinaryIO], Awaitable[T]]) -> T:
    """Run `consume(src)`, whose worker threads read `chunks` as a file, pulled on demand."""
    bridge = _Bridge(asyncio.get_running_loop())
    src = io.BufferedReader(_Source(bridge, chunks), CHUNK)
    try:
        return await consume(src)  # type: ignore[arg-type]
    finally:
        # A cancelled RPC: the thread's next read fails instead of seeing a truncated stream.
        bridge.abort()


async def _data_chunks(requests: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    async for msg in requests:
        yield msg.data


async def _first(requests: AsyncIterator[Any], what: str) -> Any:
    try:
        msg = await anext(requests)
    except StopAsyncIteration:
        raise InvalidParameter(f"{what}: missing options message") from None
    if msg.WhichOneof("input") != "options":
        raise InvalidParameter(f"{what}: the first message must carry the options")
    return msg.options


# --------------------------------------------------------------------- the service


class AgentService(agent_pb2_grpc.AgentServicer):
    """gRPC front of one node's Runtime; image and volume operations publish events here."""

    def __init__(
        self, runtime: Runtime, events: EventBus, info_extra: dict[str, Any] | None = None
    ) -> None:
        self.rt = runtime
        self.events = events
        self.info_extra = dict(info_extra or {})

    # ----------------------------------------------------------------- node

    @_rpc
    async def Ping(self, request: pb.PingRequest, context: Any) -> pb.PingReply:
        return pb.PingReply(version=_version())

    @_rpc
    async def Info(self, request: pb.InfoRequest, context: Any) -> pb.JsonReply:
        return pb.JsonReply(json=_dumps(await asyncio.to_thread(self._info)))

    def _info(self) -> dict[str, Any]:
        recs = self.rt.list()
        counts = {"running": 0, "paused": 0}
        for rec in recs:
            if rec.status in counts:
                counts[rec.status] += 1
        uname = os.uname()
        info = {
            "Name": self.rt.node_name,
            "Containers": len(recs),
            "ContainersRunning": counts["running"],
            "ContainersPaused": counts["paused"],
            "ContainersStopped": len(recs) - counts["running"] - counts["paused"],
            "Images": len(self.rt.images.list_images()),
            "Driver": "overlay2",
            "KernelVersion": uname.release,
            "OperatingSystem": _os_name(),
            "OSType": "linux",
            "Architecture": platform.machine(),
            "NCPU": len(os.sched_getaffinity(0)),
            "MemTotal": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "DockerRootDir": self.rt.paths.root,
            "ServerVersion": _version(),
        }
        info.update(self.info_extra)
        return info

    @_rpc
    async def Events(self, request: pb.EventsRequest, context: Any) -> AsyncIterator[pb.Event]:
        async for event in self.events.subscribe(request.since_ns, request.until_ns):
            yield pb.Event(json=_dumps(event))

    # ----------------------------------------------------------------- lifecycle

    @_rpc
    async def ContainerCreate(
        self, request: pb.ContainerCreateRequest, context: Any
    ) -> pb.ContainerCreateReply:
        body = _loads(request.json, {})
        if not isinstance(body, dict):
            raise InvalidParameter("container create body must be a JSON object")
        rec = await self.rt.create(body, request.name or None)
        return pb.ContainerCreateReply(id=rec.id, warnings=[])

    @_rpc
    async def ContainerStart(self, request: pb.ContainerStartRequest, context: Any) -> pb.Empty:
        await self.rt.start(request.id, hold_output=request.hold_output)
        return pb.Empty()

    @_rpc
    async def ContainerStop(self, request: pb.ContainerStopRequest, context: Any) -> pb.Empty:
        timeout = request.timeout if request.HasField("timeout") else None
        await self.rt.stop(request.id, timeout)
        return pb.Empty()

    @_rpc
    async def ContainerKill(self, request: pb.ContainerKillRequest, context: Any) -> pb.Empty:
        await self.rt.kill(request.id, request.signal or "SIGKILL")
        return pb.Empty()

    @_rpc
    async def ContainerRestart(self, request: pb.ContainerRestartRequest, context: Any) -> pb.Empty:
        timeout = request.timeout if request.HasField("timeout") else None
        await self.rt.restart(request.id, timeout)
        return pb.Empty()

    @_rpc
    async def ContainerPause(self, request: pb.ContainerRef, context: Any) -> pb.Empty:
        await self.rt.pause(request.id)
        return pb.Empty()

    @_rpc
    async def ContainerUnpause(self, request: pb.ContainerRef, context: Any) -> pb.Empty:
        await self.rt.unpause(request.id)
        return pb.Empty()

    @_rpc
    async def ContainerRemove(self, request: pb.ContainerRemoveRequest, context: Any) -> pb.Empty:
        await self.rt.remove(request.id, force=request.force, volumes=request.volumes)
        return pb.Empty()

    @_rpc
    async def ContainerRename(self, request: pb.ContainerRenameRequest, context: Any) -> pb.Empty:
        await self.rt.rename(request.id, request.name)
        return pb.Empty()

    @_rpc
    async def ContainerUpdate(
        self, request: pb.ContainerUpdateRequest, context: Any
    ) -> pb.ContainerUpdateReply:
        body = _loads(request.json, {})
        if not isinstance(body, dict):
            raise InvalidParameter("update body must be a JSON object")
        warnings = await self.rt.update(request.id, body)
        return pb.ContainerUpdateReply(warnings=warnings)

    @_rpc
    async def ContainerWait(
        self, request: pb.ContainerWaitRequest, context: Any
    ) -> pb.ContainerWaitReply:
        result = await self.rt.wait(request.id, request.condition or "not-running")
        code = result.get("StatusCode")
        error = result.get("Error")
        message = error.get("Message", "") if isinstance(error, dict) else (error or "")
        return pb.ContainerWaitReply(status_code=int(code or 0), error=message)

    # ----------------------------------------------------------------- views

    @_rpc
    async def ContainerInspect(self, request: pb.ContainerRef, context: Any) -> pb.JsonReply:
        rec = self.rt.get(request.id)
        return pb.JsonReply(json=_dumps(views.inspect(self.rt, rec)))

    @_rpc
    async def ContainerList(
        self, request: pb.ContainerListRequest, context: Any
    ) -> pb.ContainerListReply:
        rows = [
            _dumps(views.summary(self.rt, rec))
            for rec in self.rt.list()
            if request.all or rec.status in ("running", "paused", "restarting")
        ]
        return pb.ContainerListReply(rows=rows)

    @_rpc
    async def ContainerTop(self, request: pb.ContainerTopRequest, context: Any) -> pb.JsonReply:
        result = await self.rt.top(request.id, request.ps_args or "-ef")
        return pb.JsonReply(json=_dumps(result))

    @_rpc
    async def ContainerStats(
        self, request: pb.ContainerStatsRequest, context: Any
    ) -> AsyncIterator[pb.JsonReply]:
        # dockerd's rules: `stream` samples every second; stream=false waits for a second
        # sample so CPU usage can be computed; one_shot answers at once without precpu.
        prev = await self.rt.stats(request.id)
        if not request.stream and request.one_shot:
            yield pb.JsonReply(json=_dumps(_with_pre(prev, None)))
            return
        if request.stream:
            yield pb.JsonReply(json=_dumps(_with_pre(prev, None)))
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            try:
                sample = await self.rt.stats(request.id)
            except DockerError:
                if request.stream:
                    return  # the container went away while we streamed: end quietly
                raise
            yield pb.JsonReply(json=_dumps(_with_pre(sample, prev)))
            if not request.stream:
                return
            prev = sample

    @_rpc
    async def ContainerChanges(self, request: pb.ContainerRef, context: Any) -> pb.JsonReply:
        return pb.JsonReply(json=_dumps(await self.rt.changes(request.id)))

    # ----------------------------------------------------------------- I/O

    @_rpc
    async def ContainerLogs(
        self, request: pb.ContainerLogsRequest, context: Any
    ) -> AsyncIterator[pb.LogChunk]:
        tail = request.tail if request.HasField("tail") and request.tail >= 0 else None
        entries = self.rt.logs(
            request.id,
            stdout=request.stdout,
            stderr=request.stderr,
            follow=request.follow,
            tail=tail,
            since=request.since_ns / 1e9 if request.since_ns else None,
            until=request.until_ns / 1e9 if request.until_ns else None,
        )
        async for entry in entries:
            yield pb.LogChunk(stream=entry.stream, data=entry.data, time_ns=entry.time)

    @_rpc
    async def ContainerAttach(
        self, request_iterator: AsyncIterator[pb.AttachInput], context: Any
    ) -> AsyncIterator[pb.OutputChunk]:
        opts = await _first(request_iterator, "attach")
        rec = self.rt.get(opts.id)
        if rec.status == "paused":
            raise Conflict(f"container {opts.id} is paused, unpause the container before attach")
        tty = self.rt.spec(rec).tty
        if opts.logs:
            entries = self.rt.logs(rec.id, stdout=opts.stdout, stderr=opts.stderr)
            async for entry in entries:
                data = entry.data if tty else frame(entry.stream, entry.data)
                yield pb.OutputChunk(data=data)
        if not opts.stream or not rec.running:
            return  # dockerd too ends the stream of a stopped container without an error
        reader, writer = await self.rt.attach(rec.id, opts.stdin, opts.stdout, opts.stderr)

        async def resize(r: pb.ResizeRequest) -> None:
            await self.rt.resize(rec.id, r.height, r.width)

        async for chunk in _pump(request_iterator, reader, writer, resize):
            yield chunk

    @_rpc
    async def ContainerResize(self, request: pb.ResizeRequest, context: Any) -> pb.Empty:
        await self.rt.resize(request.id, request.height, request.width)
        return pb.Empty()

    # ----------------------------------------------------------------- exec

    @_rpc
    async def ExecCreate(self, request: pb.ExecCreateRequest, context: Any) -> pb.ExecCreateReply:
        body = _loads(request.json, {})
        if not isinstance(body, dict):
            raise InvalidParameter("exec body must be a JSON object")
        return pb.ExecCreateReply(id=self.rt.exec_create(request.id, body))

    @_rpc
    async def ExecStart(
        self, request_iterator: AsyncIterator[pb.ExecInput], context: Any
    ) -> AsyncIterator[pb.OutputChunk]:
        opts = await _first(request_iterator, "exec start")
        ex = self.rt.get_exec(opts.id)
        streams = await self.rt.exec_start(opts.id, detach=opts.detach)
        if streams is None:
            return
        reader, writer = streams

        async def resize(r: pb.ResizeRequest) -> None:
            await self.rt.exec_resize(opts.id, r.height, r.width)

        async for chunk in _pump(request_iterator, reader, writer, resize):
            yield chunk
        # Output ends when the process closes its stdio; its exit is noticed a moment later.
        # Waiting here lets a client inspect the exit code as soon as the stream ends.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ex.done.wait(), EXEC_EXIT_GRACE)

    @_rpc
    async def ExecInspect(self, request: pb.ExecRef, context: Any) -> pb.JsonReply:
        ex = self.rt.get_exec(request.id)
        view = {
            "CanRemove": False,
            "ContainerID": ex.container_id,
            "DetachKeys": "",
            "ExitCode": ex.exit_code,
            "ID": ex.id,
            "OpenStderr": ex.attach_stderr,
            "OpenStdin": ex.attach_stdin,
            "OpenStdout": ex.attach_stdout,
            "ProcessConfig": {
                "arguments": ex.args[1:],
                "entrypoint": ex.args[0] if ex.args else "",
                "privileged": ex.privileged,
                "tty": ex.tty,
                "user": ex.user,
            },
            "Running": ex.running,
            "Pid": ex.pid,
        }
        return pb.JsonReply(json=_dumps(view))

    @_rpc
    async def ExecResize(self, request: pb.ResizeRequest, context: Any) -> pb.Empty:
        await self.rt.exec_resize(request.id, request.height, request.width)
        return pb.Empty()

    # ----------------------------------------------------------------- filesystem

    @_rpc
    async def ArchiveStat(self, request: pb.ArchiveRequest, context: Any) -> pb.JsonReply:
        return pb.JsonReply(json=_dumps(await self.rt.archive_stat(request.id, request.path)))

    @_rpc
    async def ArchiveGet(
        self, request: pb.ArchiveRequest, context: Any
    ) -> AsyncIterator[pb.ArchiveChunk]:
        # Stat first, as dockerd does, so the client has its header before the body.
        stat = await self.rt.archive_stat(request.id, request.path)
        yield pb.ArchiveChunk(stat_json=_dumps(stat))
        async for data in _stream_out(
            lambda out: self.rt.archive_get(request.id, request.path, out)
        ):
            yield pb.ArchiveChunk(data=data)

    @_rpc
    async def ArchivePut(
        self, request_iterator: AsyncIterator[pb.ArchivePutInput], context: Any
    ) -> pb.Empty:
        opts = await _first(request_iterator, "archive put")
        await _feed_in(
            _data_chunks(request_iterator),
            lambda src: self.rt.archive_put(opts.id, opts.path, src, opts.no_overwrite_dir_non_dir),
        )
        return pb.Empty()

    @_rpc
    async def ContainerExport(
        self, request: pb.ContainerRef, context: Any
    ) -> AsyncIterator[pb.DataChunk]:
        self.rt.get(request.id)  # a missing container fails before the stream starts
        async for data in _stream_out(lambda out: self.rt.export(request.id, out)):
            yield pb.DataChunk(data=data)

    @_rpc
    async def ContainerCommit(
        self, request: pb.ContainerCommitRequest, context: Any
    ) -> pb.ContainerCommitReply:
        config = _loads(request.config, None)
        image_id = await self.rt.commit(
            request.id,
            config=config,
            comment=request.comment,
            author=request.author,
            reference=request.reference or None,
            changes=list(request.changes),
            pause=request.pause,
        )
        return pb.ContainerCommitReply(image_id=image_id)

    # ----------------------------------------------------------------- images

    @_rpc
    async def ImageImport(
        self, request_iterator: AsyncIterator[pb.ImageImportInput], context: Any
    ) -> pb.ImageImportReply:
        opts = await _first(request_iterator, "image import")
        images = self.rt.images

        async def consume(src: BinaryIO) -> str:
            return await asyncio.to_thread(
                images.import_tarball,
                src,
                opts.reference or None,
                list(opts.changes),
                opts.message,
                opts.platform_os or "linux",
            )

        image_id = await _feed_in(_data_chunks(request_iterator), consume)
        self.events.publish("image", "import", image_id, {"name": image_id})
        return pb.ImageImportReply(image_id=image_id, progress=[json.dumps({"status": image_id})])

    @_rpc
    async def ImageLoad(
        self, request_iterator: AsyncIterator[pb.DataChunk], context: Any
    ) -> pb.ImageLoadReply:
        images = self.rt.images

        async def consume(src: BinaryIO) -> list[str]:
            return await asyncio.to_thread(images.load, src)

        lines = await _feed_in(_data_chunks(request_iterator), consume)
        for line in lines:
            name = line.split(": ", 1)[1] if ": " in line else ""
            if name:
                with contextlib.suppress(DockerError):
                    self.events.publish("image", "load", images.resolve(name), {"name": name})
        return pb.ImageLoadReply(lines=lines)

    @_rpc
    async def ImageSave(
        self, request: pb.ImageSaveRequest, context: Any
    ) -> AsyncIterator[pb.DataChunk]:
        refs = list(request.refs)
        images = self.rt.images
        ids = {ref: images.resolve(ref) for ref in refs}  # missing images fail up front

        async def produce(out: BinaryIO) -> None:
            await asyncio.to_thread(images.save, refs, out)

        async for data in _stream_out(produce):
            yield pb.DataChunk(data=data)
        for ref, image_id in ids.items():
            self.events.publish("image", "save", image_id, {"name": ref})

    @_rpc
    async def ImageList(self, request: pb.ImageListRequest, context: Any) -> pb.JsonReply:
        filters = _loads(request.filters, None)
        rows = await asyncio.to_thread(self.rt.images.list_images, request.all, filters)
        return pb.JsonReply(json=_dumps(rows))

    @_rpc
    async def ImageInspect(self, request: pb.ImageRef, context: Any) -> pb.JsonReply:
        return pb.JsonReply(
            json=_dumps(await asyncio.to_thread(self.rt.images.inspect, request.ref))
        )

    @_rpc
    async def ImageHistory(self, request: pb.ImageRef, context: Any) -> pb.JsonReply:
        return pb.JsonReply(
            json=_dumps(await asyncio.to_thread(self.rt.images.history, request.ref))
        )

    @_rpc
    async def ImageTag(self, request: pb.ImageTagRequest, context: Any) -> pb.ImageTagReply:
        images = self.rt.images
        name = await asyncio.to_thread(images.tag, request.ref, request.repo, request.tag)
        self.events.publish("image", "tag", images.resolve(name), {"name": name})
        return pb.ImageTagReply(name=name)

    @_rpc
    async def ImageRemove(self, request: pb.ImageRemoveRequest, context: Any) -> pb.JsonReply:
        images = self.rt.images
        image_id = images.resolve(request.ref)
        records = await asyncio.to_thread(
            self.rt.remove_image, request.ref, request.force, request.noprune
        )
        for record in records:
            if "Untagged" in record:
                self.events.publish("image", "untag", image_id, {"name": record["Untagged"]})
            elif "Deleted" in record:
                deleted = record["Deleted"]
                self.events.publish("image", "delete", deleted, {"name": deleted})
        return pb.JsonReply(json=_dumps(records))

    # ----------------------------------------------------------------- volumes

    @_rpc
    async def VolumeCreate(self, request: pb.VolumeCreateRequest, context: Any) -> pb.JsonReply:
        body = _loads(request.json, {})
        if not isinstance(body, dict):
            raise InvalidParameter("volume create body must be a JSON object")
        volumes = self.rt.volumes
        existed = bool(body.get("Name")) and volumes.exists(body["Name"])
        view = await asyncio.to_thread(
            volumes.create,
            body.get("Name") or None,
            body.get("Driver") or "local",
            body.get("DriverOpts") or {},
            body.get("Labels") or {},
        )
        if not existed:
            self.events.publish("volume", "create", view["Name"], {"driver": view["Driver"]})
        return pb.JsonReply(json=_dumps(view))

    @_rpc
    async def VolumeList(self, request: pb.VolumeListRequest, context: Any) -> pb.JsonReply:
        filters = _loads(request.filters, None)
        rows = await asyncio.to_thread(self.rt.volumes.list_volumes, filters)
        return pb.JsonReply(json=_dumps({"Volumes": rows, "Warnings": None}))

    @_rpc
    async def VolumeInspect(self, request: pb.VolumeRef, context: Any) -> pb.JsonReply:
        view = await asyncio.to_thread(self.rt.volumes.inspect, request.name)
        return pb.JsonReply(json=_dumps(view))

    @_rpc
    async def VolumeRemove(self, request: pb.VolumeRemoveRequest, context: Any) -> pb.Empty:
        volumes = self.rt.volumes
        existed = volumes.exists(request.name)
        users = self.rt._volume_users(request.name)  # the runtime has no public accessor yet
        await asyncio.to_thread(volumes.remove, request.name, request.force, users)
        if existed:
            self.events.publish("volume", "destroy", request.name, {"driver": "local"})
        return pb.Empty()

    # ----------------------------------------------------------------- networks

    @_rpc
    async def NetworkList(self, request: pb.NetworkListRequest, context: Any) -> pb.JsonReply:
        # A worker thread: the first call makes the networks' identities on disk.
        views = await asyncio.to_thread(self.rt.networks.views, self.rt.list(), request.verbose)
        return pb.JsonReply(json=_dumps(views))


# --------------------------------------------------------------------- helpers


async def _pump(
    requests: AsyncIterator[Any],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    resize: Callable[[pb.ResizeRequest], Awaitable[None]],
) -> AsyncIterator[pb.OutputChunk]:
    """Shim output to the client while the client's stdin, resizes and close go to the shim."""

    async def inbound() -> None:
        async for msg in requests:
            kind = msg.WhichOneof("input")
            if kind == "stdin":
                writer.write(msg.stdin)
                await writer.drain()
            elif kind == "resize":
                with contextlib.suppress(DockerError):
                    await resize(msg.resize)
            elif kind == "close_stdin" and msg.close_stdin and writer.can_write_eof():
                writer.write_eof()

    task = asyncio.create_task(inbound())
    try:
        while data := await reader.read(CHUNK):
            yield pb.OutputChunk(data=data)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _with_pre(sample: dict[str, Any], prev: dict[str, Any] | None) -> dict[str, Any]:
    """Docker's stats sample: precpu_stats/preread from the previous one (empty at first)."""
    out = dict(sample)
    if prev is None:
        out["preread"] = "0001-01-01T00:00:00Z"
        out["precpu_stats"] = {"cpu_usage": {"total_usage": 0}, "throttling_data": {}}
    else:
        out["preread"] = prev.get("read", "0001-01-01T00:00:00Z")
        out["precpu_stats"] = prev.get("cpu_stats", {})
    return out


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"
