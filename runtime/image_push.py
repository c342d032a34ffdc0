"""`docker push`: images of a node's ImageStore to a registry, with dockerd's progress.

As dockerd 20.10's v2 pusher: `The push refers to repository [NAME]`, then per tag (one, or
every tag of the repository for `--all-tags`) each layer, top first, says `Preparing`, then
`Waiting` while 5 others upload (max-concurrent-uploads), then one of
- `Layer already exists`: the repository has the blob (HEAD of a digest this node knows for
  the layer: runtime/layer_sources.py), or an earlier tag of this push uploaded it;
- `Mounted from <repository>`: the registry mounted the blob from another repository of its
  own that this node knows has it;
- `Pushing` (progressDetail over the uncompressed tar) then `Pushed`: the layer gzipped while it
  is uploaded, its digest computed on the way.
Then the config blob, the Docker schema 2 manifest under the tag, `TAG: digest: sha256:… size:
N`, the aux PushResult, and the image gets the pushed repo digest (as dockerd's
addDigestReference). Layers are held (`hold_diff_ids`) while they are read, so an rmi during
the push cannot drop them; nothing is written to the store but the digest and layer sources.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from proto.docker.errors import DockerError, InvalidParameter
from runtime import layer_sources
from runtime import pull_progress as msg
from runtime.images import ImageStore
from runtime.layer_sources import LayerSource
from runtime.references import TAG_ONLY, Reference, parse_reference
from runtime.registry_auth import Credentials
from runtime.registry_client import MANIFEST_V2, RegistryClient, RegistryConfig
from runtime.registry_errors import RequestError
from runtime.registry_upload import CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, Blob, Uploader

Emit = Callable[[dict[str, Any]], None]

CONCURRENT_UPLOADS = 5  # dockerd's max-concurrent-uploads
READ_CHUNK = 1 << 20
GZIP_LEVEL = 6  # what Go's gzip.DefaultCompression amounts to
MOUNT_CANDIDATES = 3
EXISTENCE_CHECKS = 3


@dataclass(frozen=True)
class PushResult:
    tag: str
    digest: str  # the manifest's
    size: int  # of the manifest


@dataclass(frozen=True)
class _Image:
    """One tag to push, read from the store before the first request."""

    tag: str
    image_id: str
    config: bytes
    diff_ids: list[str]


async def push(
    store: ImageStore,
    config: RegistryConfig,
    name: str,
    tag: str,
    emit: Emit,
    creds: Credentials | None = None,
) -> list[PushResult]:
    """Push `name` (`tag`, or the tag in `name`; neither: every tag of the repository)."""
    ref = parse_reference(name)
    if tag:
        if not TAG_ONLY.fullmatch(tag):
            raise InvalidParameter("invalid tag format")
        ref = Reference(ref.name, tag, ref.digest)
    emit(msg.status(f"The push refers to repository [{ref.name}]"))
    owner = f"push-{uuid.uuid4().hex}"
    images = await asyncio.to_thread(_local_images, store, ref, owner)
    domain, _, path = ref.name.partition("/")
    try:
        async with RegistryClient(config, domain, path, creds, ("push", "pull")) as client:
            pusher = _Pusher(store, client, ref.name, emit)
            return [await pusher.push_tag(image) for image in images]
    finally:
        await asyncio.to_thread(store.release_layers, owner)


def _local_images(store: ImageStore, ref: Reference, owner: str) -> list[_Image]:
    """The tags to push and their images, in dockerd's words when there are none; their
    layers held for `owner` (under the store's lock, so none can go in between)."""
    familiar = ref.familiar_name()
    with store.lock:
        mine = {
            key.rpartition(":")[2]: image_id
            for key, image_id in store.tags().items()
            if key.rpartition(":")[0] == familiar
        }
        records = store.images()
        digests = [
            d
            for image_id in records
            for d in store.repo_digests(image_id, records)
            if d.partition("@")[0] == familiar
        ]
        if not mine and not digests:
            raise DockerError(f"An image does not exist locally with the tag: {familiar}")
        if ref.tag:
            if ref.tag not in mine:
                raise DockerError(f"tag does not exist: {familiar}:{ref.tag}")
            tags = [ref.tag]
        elif ref.digest:
            raise DockerError("cannot push a digest reference")
        else:
            tags = sorted(mine)
            if not tags:
                raise DockerError(f"no tags to push for {familiar}")
        images = []
        for tag in tags:
            image_id = mine[tag]
            with open(store.blob_path(image_id), "rb") as f:
                config = f.read()
            images.append(_Image(tag, image_id, config, store.diff_ids(image_id)))
        store.hold_diff_ids(owner, sorted({d for image in images for d in image.diff_ids}))
        return images


def manifest_bytes(config: Blob, layers: list[Blob]) -> bytes:
    """A Docker schema 2 manifest as dockerd's builder marshals it (3-space indent)."""
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "size": config.size, "digest": config.digest},
        "layers": [
            {"mediaType": LAYER_MEDIA_TYPE, "size": b.size, "digest": b.digest} for b in layers
        ],
    }
    return json.dumps(doc, indent=3).encode()


def _short(diff_id: str) -> str:
    """A layer's ID in push progress: 12 hex digits of its diff ID (dockerd's pd.ID())."""
    return diff_id.removeprefix("sha256:")[:12]


class _Pusher:
    """One push session: the layers it knows the repository has are not asked about twice."""

    def __init__(
        self, store: ImageStore, client: RegistryClient, repository: str, emit: Emit
    ) -> None:
        self.store = store
        self.uploader = Uploader(client)
        self.repository = repository  # full name: host[:port]/path
        self.domain = client.domain
        self.emit = emit
        self.remote: dict[str, Blob] = {}
        self.slots = asyncio.Semaphore(CONCURRENT_UPLOADS)

    async def push_tag(self, image: _Image) -> PushResult:
        order = list(dict.fromkeys(reversed(image.diff_ids)))  # top layer first, once each
        for diff_id in order:
            self.emit(msg.layer("Preparing", _short(diff_id)))
        tasks = [asyncio.create_task(self._layer(diff_id)) for diff_id in order]
        try:
            blobs = {diff_id: await task for diff_id, task in zip(order, tasks, strict=True)}
        except RequestError as e:
            # dockerd's upload reports what went wrong, not the request (retryOnError).
            raise e.cause from None
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        config_digest = image.image_id
        config_blob = await self._stat(config_digest) or await self.uploader.put(image.config)
        manifest = manifest_bytes(config_blob, [blobs[d] for d in image.diff_ids])
        digest = await self.uploader.put_manifest(image.tag, manifest, MANIFEST_V2)
        self.emit(msg.status(f"{image.tag}: digest: {digest} size: {len(manifest)}"))
        digest_ref = Reference(self.repository, "", digest).familiar()
        await asyncio.to_thread(self.store.add_repo_digest, image.image_id, digest_ref)
        aux = {"Tag": image.tag, "Digest": digest, "Size": len(manifest)}
        self.emit({"progressDetail": {}, "aux": aux})
        return PushResult(image.tag, digest, len(manifest))

    async def _stat(self, digest: str) -> Blob | None:
        try:
            return await self.uploader.stat(digest)
        except DockerError:
            return None  # the upload that follows reports what is wrong

    async def _layer(self, diff_id: str) -> Blob:
        short = _short(diff_id)
        if self.slots.locked():
            self.emit(msg.layer("Waiting", short))
        async with self.slots:
            blob = await self._known(diff_id, short)
            if blob is None:
                blob = await self._upload(diff_id, short)
            self.remote[diff_id] = blob
            return blob

    async def _known(self, diff_id: str, short: str) -> Blob | None:
        """The blob without uploading it: already in the repository, or mounted into it."""
        if diff_id in self.remote:
            self.emit(msg.layer("Layer already exists", short))
            return self.remote[diff_id]
        known = await asyncio.to_thread(layer_sources.sources, self.store, diff_id)
        checked: set[str] = set()
        here = [s for s in known if s.repository == self.repository]
        for source in here[:1]:
            checked.add(source.digest)
            blob = await self._exists(diff_id, source, short)
            if blob is not None:
                return blob
        others = [s for s in known if s.domain == self.domain and s.repository != self.repository]
        for source in others[:MOUNT_CANDIDATES]:
            checked.add(source.digest)
            blob = await self._mount(diff_id, source, short)
            if blob is not None:
                return blob
        # Digests known from elsewhere (another registry, a repository not tried): the same
        # bytes may be here too, as dockerd's second existence check hopes.
        rest = {s.digest: s for s in known if s.digest not in checked}
        for source in list(rest.values())[:EXISTENCE_CHECKS]:
            blob = await self._exists(diff_id, source, short)
            if blob is not None:
                return blob
        return None

    async def _exists(self, diff_id: str, source: LayerSource, short: str) -> Blob | None:
        try:
            blob = await self.uploader.stat(source.digest)
        except DockerError:
            return None
        if blob is None:
            if source.repository == self.repository:
                await asyncio.to_thread(layer_sources.forget, self.store, diff_id, source)
            return None
        await self._record(diff_id, blob)
        self.emit(msg.layer("Layer already exists", short))
        return blob

    async def _mount(self, diff_id: str, source: LayerSource, short: str) -> Blob | None:
        try:
            got = await self.uploader.mount(source.digest, source.path)
        except DockerError:
            return None  # dockerd logs a failed mount and goes on
        if not isinstance(got, Blob):
            # The source no longer has it (or may not be read): the registry opened an upload.
            await asyncio.to_thread(layer_sources.forget, self.store, diff_id, source)
            await self.uploader.cancel(got)
            return None
        await self._record(diff_id, got)
        self.emit(msg.layer(f"Mounted from {source.path}", short))
        return got

    async def _record(self, diff_id: str, blob: Blob) -> None:
        await asyncio.to_thread(
            layer_sources.record, self.store, diff_id, blob.digest, self.repository
        )

    async def _upload(self, diff_id: str, short: str) -> Blob:
        path = self.store.blob_path(diff_id)
        total = await asyncio.to_thread(os.path.getsize, path)

        def chunks() -> AsyncIterator[bytes]:
            # A fresh throttle per attempt: an upload started again counts from 0 again.
            throttle = msg.Throttle(total, lambda n: self._pushing(short, n, total))
            return _gzipped(path, throttle.update)

        blob = await self.uploader.upload(chunks)
        await self._record(diff_id, blob)
        self.emit(msg.layer("Pushed", short))
        return blob

    def _pushing(self, short: str, current: int, total: int) -> None:
        self.emit(msg.layer("Pushing", short, current, total))


async def _gzipped(path: str, progress: Callable[[int], None]) -> AsyncIterator[bytes]:
    """The file gzipped, chunk by chunk (read and compressed in a worker thread), telling
    `progress` the uncompressed bytes read after each chunk (a pull_progress.Throttle decides
    which become `Pushing` lines, as dockerd's progress.Reader does for a push too)."""
    src = await asyncio.to_thread(open, path, "rb")
    try:
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: gzip framing
        done = 0
        while True:
            data, n = await asyncio.to_thread(_next_chunk, src, compressor)
            done += n
            if n:
                progress(done)
            if data:
                yield data
            if not n:
                return
    finally:
        src.close()


def _next_chunk(src: BinaryIO, compressor: Any) -> tuple[bytes, int]:
    raw = src.read(READ_CHUNK)
    if not raw:
        return compressor.flush(), 0
    return compressor.compress(raw), len(raw)
