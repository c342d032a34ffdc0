"""A client of one repository on a registry (Registry HTTP API v2 / OCI distribution): manifests
and blobs, every byte checked against its digest before anyone uses it.

It knows nothing of the image store (runtime/image_pull.py puts what it fetches there). HTTPS
with the system's roots plus `<certs dir>/<host:port>/*.crt` (and a `*.cert`/`*.key` client pair),
as dockerd reads /etc/docker/certs.d; plain HTTP only for insecure registries (dockerd's rule:
listed hosts or CIDRs, and 127.0.0.0/8 always), tried after HTTPS without verification. Network
failures and 5xx/429 answers are retried with back-off (tenacity); a registry's own refusal is not.

`RegistryConfig.endpoints` lists where a repository is fetched from, in order: for Docker Hub
the `--registry-mirror`s first, then the hub itself (dockerd's lookupV2Endpoints); one client
talks to one endpoint, and runtime/image_pull.py falls back from a failing mirror to the next.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import ipaddress
import json
import os
import re
import socket
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)
from yarl import URL

from proto.docker.errors import DockerError
from runtime.registry_auth import Authorizer, Credentials
from runtime.registry_errors import error_from_response, network_error

DEFAULT_CERTS_DIR = "/etc/docker/certs.d"
DOCKER_HUB = "docker.io"
HUB_ENDPOINT = "registry-1.docker.io"
_ALWAYS_INSECURE = (ipaddress.ip_network("127.0.0.0/8"),)
MANIFEST_LIMIT = 4 << 20
ANSWER_LIMIT = 1 << 20  # what `send` reads of an answer's body (errors, upload replies)
CHUNK = 1 << 20

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = ", ".join((MANIFEST_V2, MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX))

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Endpoint:
    """Where a repository's requests go: `host` (host[:port]); `scheme` fixed (a mirror's URL
    says it) or empty (https, then http for an insecure registry)."""

    host: str
    scheme: str = ""
    mirror: bool = False


def validate_mirror(value: str) -> str:
    """dockerd's ValidateMirror (`--registry-mirror`): an http(s) URL without path, query,
    fragment or credentials; returned with one trailing slash."""
    try:
        uri = urllib.parse.urlsplit(value)
        uri.port  # noqa: B018 - parsing the port is what rejects a bad one
    except ValueError:
        raise ValueError(f"invalid mirror: {json.dumps(value)} is not a valid URI") from None
    if uri.scheme not in ("http", "https"):
        raise ValueError(
            f"invalid mirror: unsupported scheme {json.dumps(uri.scheme)} in {json.dumps(value)}"
        )
    if uri.path not in ("", "/") or uri.query or uri.fragment:
        raise ValueError(
            f"invalid mirror: path, query, or fragment at end of the URI {json.dumps(value)}"
        )
    if uri.username is not None or uri.password is not None:
        host = uri.netloc.rpartition("@")[2]
        shown = urllib.parse.urlunsplit(uri._replace(netloc=f"{uri.username}:xxxxx@{host}"))
        raise ValueError(
            f"invalid mirror: username/password not allowed in URI {json.dumps(shown)}"
        )
    return value.rstrip("/") + "/"


@dataclass(frozen=True)
class RegistryConfig:
    """A node's registry settings (`flotilla join --insecure-registry`, `--registry-certs-dir`,
    `--registry-mirror`)."""

    certs_dir: str = DEFAULT_CERTS_DIR
    insecure: tuple[str, ...] = ()  # host[:port] names and CIDRs, as dockerd's option
    attempts: int = 3  # per request, on network errors and 5xx/429
    mirrors: tuple[str, ...] = ()  # Docker Hub mirrors' URLs (validate_mirror), tried in order

    def endpoints(self, domain: str) -> list[Endpoint]:
        """Where to fetch `domain`'s repositories from, in order: the last is the registry
        itself; mirrors (Docker Hub only, as dockerd) come before it."""
        if domain != DOCKER_HUB:
            return [Endpoint(domain)]
        out = []
        for url in self.mirrors:
            uri = urllib.parse.urlsplit(url)
            out.append(Endpoint(uri.netloc, uri.scheme, mirror=True))
        return [*out, Endpoint(HUB_ENDPOINT)]

    def insecure_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = list(_ALWAYS_INSECURE)
        for entry in self.insecure:
            if "/" in entry:
                try:
                    nets.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    continue
        return nets

    def is_insecure(self, domain: str) -> bool:
        """dockerd's isSecureIndex, inverted: listed names, then the host's addresses (Docker
        Hub is always secure). Raises socket.gaierror when the name does not resolve."""
        if domain in self.insecure:
            return True
        if domain == DOCKER_HUB:
            return False
        host = _split_host(domain)[0]
        try:
            addresses = [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
            addresses = [ipaddress.ip_address(str(info[4][0])) for info in infos]
        nets = self.insecure_networks()
        return any(addr in net for addr in addresses for net in nets)


@dataclass(frozen=True)
class Answer:
    """A registry's answer to one request (`RegistryClient.send`)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass
class Manifest:
    data: bytes
    media_type: str
    digest: str  # sha256 of `data`, checked
    doc: dict[str, Any] = field(default_factory=dict)


class BlobMismatch(DockerError):
    """The bytes served for a blob do not hash to its digest (never retried)."""


class Transient(Exception):
    """A transient failure worth another attempt; `error` is what to report if none is left."""

    def __init__(self, error: DockerError) -> None:
        super().__init__(str(error))
        self.error = error


def _split_host(domain: str) -> tuple[str, int | None]:
    """host and port of `host[:port]` (IPv6 in brackets)."""
    m = re.fullmatch(r"(\[[^\]]+\]|[^:]+)(?::(\d+))?", domain)
    if m is None:
        return domain, None
    return m.group(1), int(m.group(2)) if m.group(2) else None


def _ssl_context(certs_dir: str, domain: str, verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    host_dir = os.path.join(certs_dir, domain)
    if os.path.realpath(host_dir).startswith(os.path.realpath(certs_dir) + os.sep):
        for ca in sorted(glob.glob(os.path.join(glob.escape(host_dir), "*.crt"))):
            ctx.load_verify_locations(cafile=ca)
        for cert in sorted(glob.glob(os.path.join(glob.escape(host_dir), "*.cert"))):
            key = cert[: -len(".cert")] + ".key"
            if os.path.exists(key):
                ctx.load_cert_chain(cert, key)
    return ctx


class RegistryClient:
    """One repository (`domain`, `path`, e.g. docker.io + library/busybox) at one endpoint (by
    default the registry itself: `config.endpoints(domain)[-1]`); use `async with`.

    `actions`: what its requests are for (the token scope `repository:<path>:<actions>`: pull,
    or push,pull). No `path`: the registry itself, with no scope (a login). `offline_token`:
    ask the token service for a refresh token too (dockerd's login does).
    """

    def __init__(
        self,
        config: RegistryConfig,
        domain: str,
        path: str,
        creds: Credentials | None = None,
        actions: Sequence[str] = ("pull",),
        offline_token: bool = False,
        endpoint: Endpoint | None = None,
    ) -> None:
        self.config = config
        self.domain = domain
        self.path = path
        self.creds = creds or Credentials()
        self.endpoint = endpoint or config.endpoints(domain)[-1]
        self.host = self.endpoint.host
        self.base = ""
        self.scopes = [f"repository:{path}:{','.join(actions)}"] if path else []
        self.offline_token = offline_token
        self._session: aiohttp.ClientSession | None = None
        self._auth: Authorizer | None = None

    async def __aenter__(self) -> RegistryClient:
        # A mirror is judged (insecure, certs.d) by its own host, the registry by its name.
        name = self.host if self.endpoint.mirror else self.domain
        try:
            insecure = await asyncio.to_thread(self.config.is_insecure, name)
        except socket.gaierror as e:
            # The connection would look the name up again, only to fail the same way.
            host, port = _split_host(self.host)
            scheme = self.endpoint.scheme or "https"
            default = 80 if scheme == "http" else 443
            url = f"{scheme}://{self.host}/v2/"
            raise network_error("Get", url, host, port or default, e) from None
        ctx = await asyncio.to_thread(_ssl_context, self.config.certs_dir, name, not insecure)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=60)
        self._session = aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(ssl=ctx, limit=8)
        )
        try:
            await self._ping(insecure)
        except BaseException:
            await self._session.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use `async with RegistryClient(...)`"
        return self._session

    @property
    def authorizer(self) -> Authorizer:
        assert self._auth is not None, "use `async with RegistryClient(...)`"
        return self._auth

    # ------------------------------------------------------------------ requests

    async def retrying(self, attempt: Callable[[], Awaitable[Any]]) -> Any:
        """`attempt()` again (with back-off) while it raises Transient, up to the config's
        attempts; then the last Transient's error."""
        try:
            async for try_ in AsyncRetrying(
                stop=stop_after_attempt(self.config.attempts),
                wait=wait_exponential(multiplier=0.2, max=2),
                retry=retry_if_exception(lambda e: isinstance(e, Transient)),
                reraise=True,
            ):
                with try_:
                    return await attempt()
        except Transient as e:
            raise e.error from None
        raise AssertionError("unreachable")

    async def _ping(self, insecure: bool) -> None:
        """GET /v2/: which scheme answers, and the auth challenge (dockerd's endpoint ping)."""
        if self.endpoint.scheme:
            schemes = [self.endpoint.scheme]  # a mirror's URL: that scheme only, as dockerd
        else:
            schemes = ["https", "http"] if insecure else ["https"]
        last: DockerError | None = None
        for scheme in schemes:
            url = f"{scheme}://{self.host}/v2/"
            try:
                challenge = await self.retrying(lambda u=url: self._ping_once(u))  # type: ignore[misc]
            except DockerError as e:
                last = e
                continue
            self.base = f"{scheme}://{self.host}"
            self._auth = Authorizer(self.creds, challenge, self.offline_token)
            return
        assert last is not None
        raise last

    async def _ping_once(self, url: str) -> str:
        try:
            async with self.session.get(url, allow_redirects=False) as resp:
                await resp.read()
                if resp.status >= 500 or resp.status == 429:
                    raise Transient(DockerError(f'Get "{url}": {resp.status} {resp.reason}'))
                return resp.headers.get("WWW-Authenticate", "") if resp.status == 401 else ""
        except aiohttp.ClientError as e:
            raise self.network_failure(e, "Get", url) from None

    def network_failure(self, e: BaseException, method: str, url: str) -> Exception:
        """A failed request as dockerd words it: Transient unless the name does not resolve
        or TLS refused (those would fail the same way again)."""
        host, port = _split_host(self.host)
        default = 443 if url.startswith("https:") else 80
        err = network_error(method, url, host, port or default, e)
        os_error = getattr(e, "os_error", None)
        permanent = isinstance(os_error, socket.gaierror) or isinstance(
            e, aiohttp.ClientSSLError | aiohttp.ClientConnectorCertificateError
        )
        return err if permanent else Transient(err)

    async def auth_headers(
        self, method: str, url: str | URL, extra_scopes: Sequence[str] = ()
    ) -> dict[str, str]:
        """`Authorization` for a request to `url` needing this client's scopes (and more: a
        blob mount reads its source repository). Credentials only go to the registry itself:
        a Location elsewhere gets none, as distribution's authorizer does."""
        target = url if isinstance(url, URL) else URL(url)
        if self.base and target.origin() != URL(self.base).origin():
            return {}
        value = await self.authorizer.header(
            self.session, [*self.scopes, *extra_scopes], str(url), method
        )
        return {"Authorization": value} if value else {}

    async def send(
        self,
        method: str,
        url: str | URL,
        ok: Container[int],
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        extra_scopes: Sequence[str] = (),
    ) -> Answer:
        """One request with this repository's credentials; the answer when its status is in
        `ok`. A registry's refusal is raised in dockerd's words; network failures and 5xx/429
        as Transient (for `retrying`). Bodies are read up to ANSWER_LIMIT."""
        verb = method.capitalize()
        auth = await self.auth_headers(verb, url, extra_scopes)
        try:
            async with self.session.request(
                method, url, headers={**(headers or {}), **auth}, data=data, allow_redirects=False
            ) as resp:
                body = await resp.content.read(ANSWER_LIMIT)
                if resp.status in ok:
                    return Answer(resp.status, resp.headers, body)
                err = error_from_response(
                    resp.status, body, resp.headers.get("WWW-Authenticate", "")
                )
                if resp.status >= 500 or resp.status == 429:
                    raise Transient(err)
                raise err
        except aiohttp.ClientPayloadError as e:
            raise Transient(DockerError(f"unexpected EOF: {e}")) from None
        except aiohttp.ClientError as e:
            raise self.network_failure(e, verb, str(url)) from None

    # ------------------------------------------------------------------ manifests

    async def manifest(self, reference: str) -> Manifest:
        """The manifest named by a tag or a digest, checked against the digest it is named by."""
        url = f"{self.base}/v2/{self.path}/manifests/{reference}"
        # dockerd asks for a tag with HEAD first: its errors name that request.
        verb = "Get" if reference.startswith("sha256:") else "Head"

        async def attempt() -> Manifest:
            headers = {**await self.auth_headers(verb, url), "Accept": ACCEPT}
            try:
                async with self.session.get(url, headers=headers) as resp:
                    data = await resp.content.read(MANIFEST_LIMIT + 1)
                    if resp.status >= 500 or resp.status == 429:
                        raise Transient(error_from_response(resp.status, data))
                    if resp.status != 200:
                        auth = resp.headers.get("WWW-Authenticate", "")
                        raise error_from_response(resp.status, data, auth)
                    content_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
                    header_digest = resp.headers.get("Docker-Content-Digest", "")
            except aiohttp.ClientError as e:
                raise self.network_failure(e, verb, url) from None
            if len(data) > MANIFEST_LIMIT:
                raise DockerError(f"manifest too large: more than {MANIFEST_LIMIT} bytes")
            return _checked_manifest(reference, data, content_type, header_digest)

        return await self.retrying(attempt)

    # ------------------------------------------------------------------ blobs

    async def blob_bytes(self, digest: str, size: int, limit: int) -> bytes:
        """A small blob (an image config) in memory, checked."""
        if size > limit:
            raise DockerError(f"blob {digest} too large: {size} bytes")
        chunks: list[bytes] = []

        async def write(data: bytes) -> None:
            chunks.append(data)

        await self.fetch_blob(digest, size, write, lambda _n: None, chunks.clear)
        return b"".join(chunks)

    async def fetch_blob(
        self,
        digest: str,
        size: int,
        write: Callable[[bytes], Awaitable[None]],
        progress: Progress,
        restart: Callable[[], Any],
    ) -> None:
        """Stream a blob to `write`; `restart()` drops what was written before a retry. Raises
        BlobMismatch when the bytes do not hash to `digest` or overrun `size`."""
        algorithm, _, expected = digest.partition(":")
        if algorithm != "sha256" or len(expected) != 64:
            raise DockerError(f"unsupported digest algorithm: {digest}")
        url = f"{self.base}/v2/{self.path}/blobs/{digest}"

        async def attempt() -> None:
            restart()
            hasher = hashlib.sha256()
            got = 0
            headers = await self.auth_headers("Get", url)
            try:
                async with self.session.get(url, headers=headers) as resp:
                    if resp.status != 200:
                        body = await resp.content.read(1 << 16)
                        err = error_from_response(resp.status, body)
                        if resp.status >= 500 or resp.status == 429:
                            raise Transient(err)
                        raise err
                    async for data in resp.content.iter_chunked(CHUNK):
                        got += len(data)
                        if size >= 0 and got > size:
                            raise BlobMismatch(f"blob {digest}: more bytes than its size {size}")
                        hasher.update(data)
                        await write(data)
                        progress(got)
            except aiohttp.ClientPayloadError as e:
                raise Transient(DockerError(f"unexpected EOF: {e}")) from None
            except aiohttp.ClientError as e:
                raise self.network_failure(e, "Get", url) from None
            if hasher.hexdigest() != expected or (size >= 0 and got != size):
                raise BlobMismatch(f"blob {digest}: content does not match its digest")

        await self.retrying(attempt)


def _checked_manifest(reference: str, data: bytes, content_type: str, header: str) -> Manifest:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    named = reference if reference.startswith("sha256:") else header
    if named and named != digest:
        raise DockerError(f"manifest verification failed for digest {named}")
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise DockerError(f"invalid manifest: {e}") from None
    if not isinstance(doc, dict):
        raise DockerError("invalid manifest: not a JSON object")
    media_type = content_type if content_type in ACCEPT.split(", ") else ""
    if not media_type:
        media_type = str(doc.get("mediaType") or "")
    if not media_type:
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST if "layers" in doc else ""
    return Manifest(data, media_type, digest, doc)
