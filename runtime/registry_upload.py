"""The push side of the Registry HTTP API v2 for one repository: does the registry have a blob
(HEAD), mount one from another repository of the registry, stream a new blob, put a manifest.

A blob is uploaded as distribution's blob writer does it: `POST /v2/<name>/blobs/uploads/`,
then one `PATCH` carrying the bytes as they are produced (chunked: the layer is compressed while
it is sent, so its digest is only known at the end), then `PUT <location>?digest=`. Everything
goes through RegistryClient: its session, credentials (scope `push,pull`) and retries; an upload
that fails transiently starts again from a new upload session and a fresh stream.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from yarl import URL

from proto.docker.errors import DockerError
from runtime.registry_client import Answer, RegistryClient

LAYER_MEDIA_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
_OCTETS = {"Content-Type": "application/octet-stream"}

Chunks = Callable[[], AsyncIterator[bytes]]


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int


class Uploader:
    """Blob and manifest uploads to `client`'s repository (opened with actions push,pull)."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client

    def _url(self, suffix: str) -> URL:
        return URL(f"{self.client.base}/v2/{self.client.path}/{suffix}")

    def _location(self, answer: Answer) -> URL:
        """The upload session the registry named (relative or absolute)."""
        location = answer.headers.get("Location", "")
        target = URL(self.client.base).join(URL(location, encoded=True)) if location else None
        if target is None or target.scheme not in ("http", "https"):
            raise DockerError(f"registry gave no usable upload location: {location!r}")
        return target

    async def stat(self, digest: str) -> Blob | None:
        """The blob as the repository has it (HEAD), or None when it has not. Other failures
        raise; a push goes on to upload then, as dockerd does."""
        url = self._url(f"blobs/{digest}")
        answer = await self.client.retrying(lambda: self.client.send("HEAD", url, ok=(200, 404)))
        if answer.status == 404:
            return None
        try:
            size = int(answer.headers.get("Content-Length", ""))
        except ValueError:
            return None
        return Blob(digest, size)

    async def mount(self, digest: str, source_path: str) -> Blob | URL:
        """Ask the registry to mount `digest` from repository `source_path` (its path in this
        registry): the blob when it did (201), else the upload session it opened instead
        (202), which the caller uploads into or cancels."""
        url = self._url("blobs/uploads/").with_query({"mount": digest, "from": source_path})
        answer = await self.client.retrying(
            lambda: self.client.send(
                "POST",
                url,
                ok=(201, 202),
                data=b"",
                extra_scopes=[f"repository:{source_path}:pull"],
            )
        )
        if answer.status == 202:
            return self._location(answer)
        blob = await self.stat(digest)
        if blob is None:
            raise DockerError(f"blob {digest} mounted but not found")
        return blob

    async def cancel(self, session: URL) -> None:
        """Drop an upload session not used (best effort: registries expire them anyway)."""
        with contextlib.suppress(DockerError):
            await self.client.send("DELETE", session, ok=range(200, 600))

    async def upload(self, chunks: Chunks, session: URL | None = None) -> Blob:
        """A new blob made of `chunks()`, streamed; its digest and size are what was sent.
        `session`: an upload session already open (a refused mount's) for the first try."""
        sessions = [session] if session is not None else []

        async def attempt() -> Blob:
            location = sessions.pop() if sessions else None
            if location is None:
                answer = await self.client.send(
                    "POST", self._url("blobs/uploads/"), ok=(202,), data=b""
                )
                location = self._location(answer)
            hasher = hashlib.sha256()
            sent = [0]

            async def body() -> AsyncIterator[bytes]:
                async for data in chunks():
                    hasher.update(data)
                    sent[0] += len(data)
                    yield data

            answer = await self.client.send(
                "PATCH", location, ok=(202, 204), headers=_OCTETS, data=body()
            )
            location = self._location(answer)
            digest = "sha256:" + hasher.hexdigest()
            await self.client.send(
                "PUT",
                location.update_query({"digest": digest}),
                ok=(201,),
                headers=_OCTETS,
                data=b"",
            )
            return Blob(digest, sent[0])

        return await self.client.retrying(attempt)

    async def put(self, data: bytes) -> Blob:
        """A small blob held in memory (an image config)."""

        async def chunks() -> AsyncIterator[bytes]:
            yield data

        return await self.upload(chunks)

    async def put_manifest(self, reference: str, data: bytes, media_type: str) -> str:
        """PUT the manifest under a tag; returns its digest (sha256 of exactly these bytes)."""
        url = self._url(f"manifests/{reference}")
        await self.client.retrying(
            lambda: self.client.send(
                "PUT", url, ok=(201,), headers={"Content-Type": media_type}, data=data
            )
        )
        return "sha256:" + hashlib.sha256(data).hexdigest()
