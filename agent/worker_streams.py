"""Blocking producers and consumers (tar streams, image import, load and save) run in worker
threads and see a plain file, while the event loop streams the bytes in CHUNK-sized pieces with
backpressure: `stream_out` turns what a thread writes into chunks, `feed_in` lets a thread read
chunks as a file. No image or archive is ever held in memory whole, and a stream that goes away
fails the thread's next read or write instead of blocking it forever.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, BinaryIO, TypeVar

from agent.service_base import CHUNK

# Chunks buffered between a worker thread and the gRPC stream: bounds memory per stream.
QUEUE_CHUNKS = 4

T = TypeVar("T")


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


async def stream_out(produce: Callable[[BinaryIO], Awaitable[Any]]) -> AsyncIterator[bytes]:
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


async def feed_in(chunks: AsyncIterator[bytes], consume: Callable[[BinaryIO], Awaitable[T]]) -> T:
    """Run `consume(src)`, whose worker threads read `chunks` as a file, pulled on demand."""
    bridge = _Bridge(asyncio.get_running_loop())
    src = io.BufferedReader(_Source(bridge, chunks), CHUNK)
    try:
        return await consume(src)  # type: ignore[arg-type]
    finally:
        # A cancelled RPC: the thread's next read fails instead of seeing a truncated stream.
        bridge.abort()
