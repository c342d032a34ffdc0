"""A container's filesystem: archive stat/get/put (`docker cp`), export, changes (`docker diff`)
and commit. Tar streams are made and read in worker threads (agent/worker_streams.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from agent.service_base import ServiceBase, data_chunks, dumps, first_options, loads, rpc
from agent.worker_streams import feed_in, stream_out
from proto import agent_pb2 as pb
from runtime import container_fs


class FilesystemMixin(ServiceBase):
    """Archives, export, changes and commit."""

    @rpc
    async def ArchiveStat(self, request: pb.ArchiveRequest, context: Any) -> pb.JsonReply:
        return pb.JsonReply(
            json=dumps(await container_fs.archive_stat(self.rt, request.id, request.path))
        )

    @rpc
    async def ArchiveGet(
        self, request: pb.ArchiveRequest, context: Any
    ) -> AsyncIterator[pb.ArchiveChunk]:
        # The stat goes first, as dockerd's header does, and it is the stat of the very entry
        # the tar is made of (one lookup): a path the container renames or removes meanwhile
        # fails before any message (404), never as a header over an empty body.
        loop = asyncio.get_running_loop()
        stat: asyncio.Future[dict[str, Any]] = loop.create_future()

        def on_stat(st: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(stat.set_result, st)

        sent = False
        async for data in stream_out(
            lambda out: container_fs.archive_get(self.rt, request.id, request.path, out, on_stat)
        ):
            if not sent:
                sent = True
                yield pb.ArchiveChunk(stat_json=dumps(await stat))
            yield pb.ArchiveChunk(data=data)
        if not sent:
            yield pb.ArchiveChunk(stat_json=dumps(await stat))

    @rpc
    async def ArchivePut(
        self, request_iterator: AsyncIterator[pb.ArchivePutInput], context: Any
    ) -> pb.Empty:
        opts = await first_options(request_iterator, "archive put")
        await feed_in(
            data_chunks(request_iterator),
            lambda src: container_fs.archive_put(
                self.rt, opts.id, opts.path, src, opts.no_overwrite_dir_non_dir
            ),
        )
        return pb.Empty()

    @rpc
    async def ContainerExport(
        self, request: pb.ContainerRef, context: Any
    ) -> AsyncIterator[pb.DataChunk]:
        self.rt.get(request.id)  # a missing container fails before the stream starts
        async for data in stream_out(lambda out: container_fs.export(self.rt, request.id, out)):
            yield pb.DataChunk(data=data)

    @rpc
    async def ContainerCommit(
        self, request: pb.ContainerCommitRequest, context: Any
    ) -> pb.ContainerCommitReply:
        config = loads(request.config, None)
        image_id = await container_fs.commit(
            self.rt,
            request.id,
            config=config,
            comment=request.comment,
            author=request.author,
            reference=request.reference or None,
            changes=list(request.changes),
            pause=request.pause,
        )
        return pb.ContainerCommitReply(image_id=image_id)

    @rpc
    async def ContainerChanges(self, request: pb.ContainerRef, context: Any) -> pb.JsonReply:
        return pb.JsonReply(json=dumps(await container_fs.changes(self.rt, request.id)))
