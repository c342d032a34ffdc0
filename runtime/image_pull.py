"""`docker pull`: an image from a registry into a node's ImageStore, with Docker's progress.

The manifest (through a manifest list / OCI index: this node's platform), then the config (its
sha256 is the image ID: an image the store has is not fetched again), then the layers: the ones
the store lacks (by diff ID) are downloaded in parallel (3 at a time, as dockerd's
max-concurrent-downloads) into the store's temp dir and unpacked in chain order as they arrive,
each with the store's own unpacker (`add_layer`). Every blob is checked against its digest while
it streams and every layer against its diff ID before the store keeps it.

Nothing half-written stays: downloads live in a temp dir removed at the end, the layers of the
pull are held (`hold_diff_ids`) while it runs and the hold's release drops the ones no image
uses when it fails, and the image config, tag and digest are written only once every layer is in.

Docker Hub images are tried on the node's `--registry-mirror`s first, then on the hub: any
failure on a mirror falls back to the next endpoint (dockerd's continueOnError for mirrors); the
error reported is the hub's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from proto.docker.errors import DockerError
from runtime import layer_sources
from runtime import pull_progress as msg
from runtime.blobio import spool
from runtime.imageconfig import host_architecture
from runtime.images import ImageStore
from runtime.references import HEX64, Reference, parse_reference
from runtime.registry_auth import Credentials
from runtime.registry_client import (
    MANIFEST_LIST,
    MANIFEST_V2,
    OCI_INDEX,
    OCI_MANIFEST,
    BlobMismatch,
    Endpoint,
    Manifest,
    RegistryClient,
    RegistryConfig,
)
from runtime.registry_errors import not_found_for

Emit = Callable[[dict[str, Any]], None]
log = logging.getLogger(__name__)

CONCURRENT_DOWNLOADS = 3
CONFIG_LIMIT = 8 << 20
ROOTFS_MISMATCH = "layers from manifest don't match image configuration"


@dataclass(frozen=True)
class PullResult:
    image_id: str
    reference: str  # the familiar name:tag or name@digest pulled
    updated: bool  # whether the reference now names a different image (Downloaded newer image)


async def pull(
    store: ImageStore,
    config: RegistryConfig,
    reference: str,
    emit: Emit,
    creds: Credentials | None = None,
) -> PullResult:
    """Pull `reference` (name[:tag] or name@digest) into `store`, reporting through `emit`."""
    ref = parse_reference(reference).tagged()
    domain = ref.name.partition("/")[0]
    *mirrors, registry = config.endpoints(domain)
    for mirror in mirrors:
        try:
            image_id, digest = await _pull_from(store, config, mirror, ref, emit, creds)
            break
        except DockerError as e:
            # dockerd's rule: any failure on a mirror falls back to the next endpoint.
            log.info("pull of %s from mirror %s failed: %s", reference, mirror.host, e)
    else:
        image_id, digest = await _pull_from(store, config, registry, ref, emit, creds)
    return await asyncio.to_thread(_name_image, store, ref, image_id, digest, emit)


async def _pull_from(
    store: ImageStore,
    config: RegistryConfig,
    endpoint: Endpoint,
    ref: Reference,
    emit: Emit,
    creds: Credentials | None,
) -> tuple[str, str]:
    """The image of `ref` from one endpoint into the store: (image ID, manifest digest)."""
    domain, _, path = ref.name.partition("/")
    wanted = ref.digest or ref.tag
    async with RegistryClient(config, domain, path, creds, endpoint=endpoint) as client:
        try:
            top = await client.manifest(wanted)
        except DockerError as e:
            raise not_found_for(e, ref.familiar(), ref.familiar_name()) from None
        manifest = await _platform_manifest(client, top)
        emit(msg.status(f"Pulling from {path}", wanted))
        config_desc = _descriptor(manifest.doc.get("config"))
        image_id = config_desc["digest"]
        have = await asyncio.to_thread(lambda: image_id in store.images())
        if not have:
            await _pull_image(store, client, manifest, config_desc, emit, ref.name)
    return image_id, top.digest


async def _platform_manifest(client: RegistryClient, top: Manifest) -> Manifest:
    manifest = top
    if top.media_type in (MANIFEST_LIST, OCI_INDEX):
        chosen = select_platform(top.doc)
        manifest = await client.manifest(chosen["digest"])
    if manifest.media_type not in (MANIFEST_V2, OCI_MANIFEST):
        raise DockerError(
            f"unsupported manifest media type and no default available: {manifest.media_type}"
        )
    return manifest


def _descriptor(value: Any) -> dict[str, Any]:
    """A descriptor from a manifest: digest and size checked for shape (hostile input)."""
    if not isinstance(value, dict):
        raise DockerError("invalid manifest: descriptor is not an object")
    digest = value.get("digest")
    size = value.get("size")
    if not isinstance(digest, str) or not isinstance(size, int) or size < 0:
        raise DockerError("invalid manifest: descriptor without digest or size")
    algorithm, _, hex_digest = digest.partition(":")
    if algorithm != "sha256" or not HEX64.fullmatch(hex_digest):
        raise DockerError(f"invalid manifest: unsupported digest {json.dumps(digest)}")
    return value


def _host_variant(arch: str) -> str:
    if arch == "arm64":
        return "v8"
    if arch == "arm":
        machine = os.uname().machine
        return "v6" if machine.startswith("armv6") else "v7"
    return ""


def select_platform(index: dict[str, Any]) -> dict[str, Any]:
    """The entry of a manifest list / OCI index for this node (linux/<arch>[/<variant>])."""
    arch = host_architecture()
    variant = _host_variant(arch)
    entries = [m for m in index.get("manifests") or [] if isinstance(m, dict)]
    matching = []
    for entry in entries:
        platform = entry.get("platform") or {}
        if platform.get("os") == "linux" and platform.get("architecture") == arch:
            matching.append(entry)

    def rank(entry: dict[str, Any]) -> int:
        got = (entry.get("platform") or {}).get("variant", "")
        if got == variant:
            return 0
        return 1 if got in ("", "v1", "v8") else 2

    matching = [m for m in matching if rank(m) < 2]
    if not matching:
        wanted = f"linux/{arch}" + (f"/{variant}" if variant else "")
        raise DockerError(f"no matching manifest for {wanted} in the manifest list entries")
    return _descriptor(min(matching, key=rank))


async def _pull_image(
    store: ImageStore,
    client: RegistryClient,
    manifest: Manifest,
    config_desc: dict[str, Any],
    emit: Emit,
    repository: str,
) -> None:
    digest = config_desc["digest"]
    try:
        config_bytes = await client.blob_bytes(digest, config_desc["size"], CONFIG_LIMIT)
    except BlobMismatch:
        raise DockerError(f"image config verification failed for digest {digest}") from None
    try:
        diff_ids = list(json.loads(config_bytes)["rootfs"]["diff_ids"])
    except (ValueError, KeyError, TypeError):
        raise DockerError("invalid image config: no rootfs.diff_ids") from None
    layers = [_descriptor(d) for d in manifest.doc.get("layers") or []]
    if len(diff_ids) != len(layers) or not all(isinstance(d, str) for d in diff_ids):
        raise DockerError(ROOTFS_MISMATCH)
    owner = f"pull-{uuid.uuid4().hex}"
    await asyncio.to_thread(store.hold_diff_ids, owner, diff_ids)
    try:
        await _LayerPull(store, client, emit, repository).run(layers, diff_ids)
        await asyncio.to_thread(store.add_image, config_bytes, "")
    finally:
        # Dropped here: the layers this pull brought in when it failed (no image uses them).
        await asyncio.to_thread(store.release_layers, owner)


def _name_image(
    store: ImageStore, ref: Reference, image_id: str, digest: str, emit: Emit
) -> PullResult:
    with store.lock:
        digest_key = Reference(ref.name, "", digest).familiar()
        if ref.digest:
            updated = digest_key not in store.repo_digests(image_id)
        else:
            updated = store.tags().get(ref.familiar()) != image_id
            if updated:
                store.set_tag(image_id, ref.familiar())
        store.add_repo_digest(image_id, digest_key)
    emit(msg.status(f"Digest: {digest}"))
    verdict = "Downloaded newer image" if updated else "Image is up to date"
    emit(msg.status(f"Status: {verdict} for {ref.familiar()}"))
    return PullResult(image_id, ref.familiar(), updated)


class _LayerPull:
    """The layers of one image: parallel downloads, unpacked in order as they complete."""

    def __init__(
        self, store: ImageStore, client: RegistryClient, emit: Emit, repository: str
    ) -> None:
        self.store = store
        self.client = client
        self.emit = emit
        self.repository = repository
        self.slots = asyncio.Semaphore(CONCURRENT_DOWNLOADS)
        self.loop = asyncio.get_running_loop()

    async def run(self, layers: list[dict[str, Any]], diff_ids: list[str]) -> None:
        present = await asyncio.to_thread(lambda: [self.store.has_layer(d) for d in diff_ids])
        todo: list[int] = []
        seen: set[str] = set()
        for i, desc in enumerate(layers):
            short = _short(desc)
            if present[i] or diff_ids[i] in seen:
                self.emit(msg.layer("Already exists", short))
                continue
            seen.add(diff_ids[i])
            self.emit(msg.layer("Pulling fs layer", short))
            todo.append(i)
        work = await asyncio.to_thread(self.store.tmp_dir, "pull-")
        tasks = {
            i: asyncio.create_task(self._download(layers[i], os.path.join(work, str(i))))
            for i in todo
        }
        try:
            for i in todo:
                path = await tasks[i]
                await self._extract(layers[i], diff_ids[i], path)
                os.unlink(path)
                self.emit(msg.layer("Pull complete", _short(layers[i])))
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _download(self, desc: dict[str, Any], path: str) -> str:
        short, digest, size = _short(desc), desc["digest"], desc["size"]
        if self.slots.locked():
            self.emit(msg.layer("Waiting", short))
        async with self.slots:
            out = await asyncio.to_thread(open, path, "wb")
            try:
                progress = msg.Throttle(
                    size, lambda n: self.emit(msg.layer("Downloading", short, n, size))
                )

                def restart() -> None:
                    out.seek(0)
                    out.truncate()
                    progress.reset()

                async def write(data: bytes) -> None:
                    await asyncio.to_thread(out.write, data)

                try:
                    await self.client.fetch_blob(digest, size, write, progress.update, restart)
                except BlobMismatch:
                    raise DockerError(
                        f"filesystem layer verification failed for digest {digest}"
                    ) from None
            finally:
                await asyncio.to_thread(out.close)
        self.emit(msg.layer("Verifying Checksum", short))
        self.emit(msg.layer("Download complete", short))
        return path

    async def _extract(self, desc: dict[str, Any], diff_id: str, path: str) -> None:
        short, size = _short(desc), desc["size"]

        def report(current: int) -> None:
            self.loop.call_soon_threadsafe(self.emit, msg.layer("Extracting", short, current, size))

        def fill(tmp_blob: str) -> str:
            with open(path, "rb") as raw:
                counting = _Counting(raw, msg.Throttle(size, report))
                got = spool(counting, tmp_blob)  # type: ignore[arg-type]
            if "sha256:" + got != diff_id:
                raise DockerError(ROOTFS_MISMATCH)
            return got

        await asyncio.to_thread(self.store.add_layer, "pull-", fill)
        # Verified: this blob is this layer, so a push to this registry need not compress it.
        await asyncio.to_thread(
            layer_sources.record, self.store, diff_id, desc["digest"], self.repository
        )


def _short(desc: dict[str, Any]) -> str:
    """The layer's ID in progress lines: 12 hex digits of its (compressed) digest."""
    return str(desc["digest"]).removeprefix("sha256:")[:12]


class _Counting:
    """A reader telling its throttle how far it got (the end as the last update)."""

    def __init__(self, raw: BinaryIO, progress: msg.Throttle) -> None:
        self.raw = raw
        self.progress = progress
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.count += len(data)
        self.progress.update(self.count, last=not data)
        return data

    def readable(self) -> bool:
        return True
