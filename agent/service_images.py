"""The node's images: import and load (client streams), save, pull and push (server streams),
list, inspect, history, tag and remove, and registry logins; each change publishes its Docker
image event. Image tars are read and written in worker threads (agent/worker_streams.py); a pull
is runtime/image_pull.py, a push runtime/image_push.py, a login runtime/registry_login.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, BinaryIO

from agent.service_base import ServiceBase, data_chunks, dumps, first_options, loads, rpc
from agent.worker_streams import feed_in, stream_out
from proto import agent_pb2 as pb
from proto.docker.errors import DockerError
from runtime import image_pull, image_push, image_transfer, image_views, registry_login
from runtime.references import Reference, parse_reference
from runtime.registry_auth import Credentials


async def pull_image(
    service: ServiceBase,
    reference: str,
    emit: image_pull.Emit,
    creds: Credentials,
) -> image_pull.PullResult:
    """A registry pull into this node's store, with its `pull` event: `docker pull`'s and a
    build's FROM (dockerd's pullForBuilder takes the same path)."""
    rt = service.rt
    result = await image_pull.pull(rt.images, rt.registries, reference, emit, creds)
    name = parse_reference(result.reference).familiar_name()
    service.events.publish("image", "pull", result.reference, {"name": name})
    return result


class ImagesMixin(ServiceBase):
    """Image transfer, views, tag and remove."""

    @rpc
    async def ImageImport(
        self, request_iterator: AsyncIterator[pb.ImageImportInput], context: Any
    ) -> pb.ImageImportReply:
        opts = await first_options(request_iterator, "image import")
        images = self.rt.images

        async def consume(src: BinaryIO) -> str:
            return await asyncio.to_thread(
                image_transfer.import_tarball,
                images,
                src,
                opts.reference or None,
                list(opts.changes),
                opts.message,
                opts.platform_os or "linux",
            )

        image_id = await feed_in(data_chunks(request_iterator), consume)
        self.events.publish("image", "import", image_id, {"name": image_id})
        return pb.ImageImportReply(image_id=image_id, progress=[json.dumps({"status": image_id})])

    @rpc
    async def ImageLoad(
        self, request_iterator: AsyncIterator[pb.DataChunk], context: Any
    ) -> pb.ImageLoadReply:
        images = self.rt.images

        async def consume(src: BinaryIO) -> list[str]:
            return await asyncio.to_thread(image_transfer.load, images, src)

        lines = await feed_in(data_chunks(request_iterator), consume)
        for line in lines:
            name = line.split(": ", 1)[1] if ": " in line else ""
            if name:
                with contextlib.suppress(DockerError):
                    self.events.publish("image", "load", images.resolve(name), {"name": name})
        return pb.ImageLoadReply(lines=lines)

    @rpc
    async def ImageSave(
        self, request: pb.ImageSaveRequest, context: Any
    ) -> AsyncIterator[pb.DataChunk]:
        refs = list(request.refs)
        images = self.rt.images
        ids = {ref: images.resolve(ref) for ref in refs}  # missing images fail up front

        async def produce(out: BinaryIO) -> None:
            await asyncio.to_thread(image_transfer.save, images, refs, out)

        async for data in stream_out(produce):
            yield pb.DataChunk(data=data)
        for ref, image_id in ids.items():
            self.events.publish("image", "save", image_id, {"name": ref})

    @rpc
    async def ImagePull(
        self, request: pb.ImagePullRequest, context: Any
    ) -> AsyncIterator[pb.JsonReply]:
        creds = _credentials(request.auth)
        run = _Progress(lambda emit: pull_image(self, request.reference, emit, creds))
        async for reply in run.replies():
            yield reply

    @rpc
    async def ImagePush(
        self, request: pb.ImagePushRequest, context: Any
    ) -> AsyncIterator[pb.JsonReply]:
        creds = _credentials(request.auth)
        run = _Progress(
            lambda emit: image_push.push(
                self.rt.images, self.rt.registries, request.name, request.tag, emit, creds
            )
        )
        async for reply in run.replies():
            yield reply
        ref = parse_reference(request.name)
        for result in run.result:
            pushed = Reference(ref.name, result.tag).familiar()
            self.events.publish("image", "push", pushed, {"name": ref.familiar_name()})

    @rpc
    async def RegistryLogin(self, request: pb.RegistryAuth, context: Any) -> pb.JsonReply:
        result = await registry_login.login(
            self.rt.registries, request.server_address, _credentials(request)
        )
        # Docker's AuthenticateOKBody, fields in its order.
        body = {"IdentityToken": result.identity_token, "Status": result.status}
        return pb.JsonReply(json=dumps(body))

    @rpc
    async def ImageList(self, request: pb.ImageListRequest, context: Any) -> pb.JsonReply:
        filters = loads(request.filters, None)
        rows = await asyncio.to_thread(
            image_views.list_images, self.rt.images, request.all, filters
        )
        return pb.JsonReply(json=dumps(rows))

    @rpc
    async def ImageInspect(self, request: pb.ImageRef, context: Any) -> pb.JsonReply:
        return pb.JsonReply(
            json=dumps(await asyncio.to_thread(image_views.inspect, self.rt.images, request.ref))
        )

    @rpc
    async def ImageHistory(self, request: pb.ImageRef, context: Any) -> pb.JsonReply:
        return pb.JsonReply(
            json=dumps(await asyncio.to_thread(image_views.history, self.rt.images, request.ref))
        )

    @rpc
    async def ImageTag(self, request: pb.ImageTagRequest, context: Any) -> pb.ImageTagReply:
        images = self.rt.images
        name = await asyncio.to_thread(images.tag, request.ref, request.repo, request.tag)
        self.events.publish("image", "tag", images.resolve(name), {"name": name})
        return pb.ImageTagReply(name=name)

    @rpc
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
        return pb.JsonReply(json=dumps(records))


def _credentials(auth: pb.RegistryAuth) -> Credentials:
    return Credentials(auth.username, auth.password, auth.identity_token, auth.registry_token)


class _Progress:
    """A pull or push running as a task, its Docker JSON messages relayed as replies; when the
    caller goes away the task is cancelled (and drops what it had brought in)."""

    def __init__(self, start: Callable[[Callable[[dict[str, Any]], None]], Awaitable[Any]]) -> None:
        self.messages: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.task = asyncio.create_task(start(self.messages.put_nowait))
        self.task.add_done_callback(lambda _: self.messages.put_nowait(None))
        self.result: Any = None

    async def replies(self) -> AsyncIterator[pb.JsonReply]:
        try:
            while (message := await self.messages.get()) is not None:
                # Compact, as dockerd's encoder writes them: the manager relays them as is.
                yield pb.JsonReply(json=json.dumps(message, separators=(",", ":")).encode())
            self.result = self.task.result()
        finally:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
