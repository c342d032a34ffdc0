"""A container's streams: logs (server stream), attach and exec (bidirectional: options, then
stdin, resizes and a stdin close; out come the shim's bytes) with resize, exec create/inspect, and
stats (streamed every second or one sample)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from agent.service_base import CHUNK, ServiceBase, dumps, first_options, loads, rpc
from proto import agent_pb2 as pb
from proto.docker.errors import Conflict, DockerError, InvalidParameter
from proto.docker.streams import frame
from runtime import usage

STATS_INTERVAL = 1.0
EXEC_EXIT_GRACE = 5.0


class StreamsMixin(ServiceBase):
    """Logs, attach, exec and stats."""

    @rpc
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

    @rpc
    async def ContainerAttach(
        self, request_iterator: AsyncIterator[pb.AttachInput], context: Any
    ) -> AsyncIterator[pb.OutputChunk]:
        opts = await first_options(request_iterator, "attach")
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

        # dockerd's attach: when the client's input ends without closing the container's stdin
        # (no StdinOnce, or a TTY), the session ends and the container keeps its stdin.
        pump = _pump(request_iterator, reader, writer, resize, end_with_input=opts.stdin)
        async for chunk in pump:
            yield chunk

    @rpc
    async def ContainerResize(self, request: pb.ResizeRequest, context: Any) -> pb.Empty:
        await self.rt.resize(request.id, request.height, request.width)
        return pb.Empty()

    @rpc
    async def ContainerStats(
        self, request: pb.ContainerStatsRequest, context: Any
    ) -> AsyncIterator[pb.JsonReply]:
        # dockerd's rules: `stream` samples every second; stream=false waits for a second
        # sample so CPU usage can be computed; one_shot answers at once without precpu.
        prev = await usage.stats(self.rt, request.id)
        if not request.stream and request.one_shot:
            yield pb.JsonReply(json=dumps(_with_pre(prev, None)))
            return
        if request.stream:
            yield pb.JsonReply(json=dumps(_with_pre(prev, None)))
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            try:
                sample = await usage.stats(self.rt, request.id)
            except DockerError:
                if request.stream:
                    return  # the container went away while we streamed: end quietly
                raise
            yield pb.JsonReply(json=dumps(_with_pre(sample, prev)))
            if not request.stream:
                return
            prev = sample

    @rpc
    async def ExecCreate(self, request: pb.ExecCreateRequest, context: Any) -> pb.ExecCreateReply:
        body = loads(request.json, {})
        if not isinstance(body, dict):
            raise InvalidParameter("exec body must be a JSON object")
        return pb.ExecCreateReply(id=self.rt.execs.create(request.id, body))

    @rpc
    async def ExecStart(
        self, request_iterator: AsyncIterator[pb.ExecInput], context: Any
    ) -> AsyncIterator[pb.OutputChunk]:
        opts = await first_options(request_iterator, "exec start")
        ex = self.rt.execs.get(opts.id)
        streams = await self.rt.execs.start(opts.id, detach=opts.detach)
        if streams is None:
            return
        reader, writer = streams

        async def resize(r: pb.ResizeRequest) -> None:
            await self.rt.execs.resize(opts.id, r.height, r.width)

        async for chunk in _pump(request_iterator, reader, writer, resize):
            yield chunk
        # Output ends when the process closes its stdio; its exit is noticed a moment later.
        # Waiting here lets a client inspect the exit code as soon as the stream ends.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ex.done.wait(), EXEC_EXIT_GRACE)

    @rpc
    async def ExecInspect(self, request: pb.ExecRef, context: Any) -> pb.JsonReply:
        ex = self.rt.execs.get(request.id)
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
        return pb.JsonReply(json=dumps(view))

    @rpc
    async def ExecResize(self, request: pb.ResizeRequest, context: Any) -> pb.Empty:
        await self.rt.execs.resize(request.id, request.height, request.width)
        return pb.Empty()


async def _pump(
    requests: AsyncIterator[Any],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    resize: Callable[[pb.ResizeRequest], Awaitable[None]],
    end_with_input: bool = False,
) -> AsyncIterator[pb.OutputChunk]:
    """Shim output to the client while the client's stdin, resizes and close go to the shim.

    With `end_with_input`, the end of the client's messages without a close_stdin ends the
    output too, once every byte of input has reached the shim."""

    async def inbound() -> None:
        stdin_closed = False
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
                stdin_closed = True
        if end_with_input and not stdin_closed:
            writer.close()  # flushes, then the shim's side ends: the output loop sees EOF

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
