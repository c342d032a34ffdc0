"""The only module that talks to etcd: a small typed wrapper over etcd3aio (see docs/etcd.md).

Everything else in flotilla sees `KV`, `Entry`, `WatchEvent` and `KVError`, so the client
library can be swapped without touching callers. Every unary call has a deadline: an agent must
notice an etcd outage in seconds, never hang on it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeAlias, TypeVar
from urllib.parse import urlsplit

import etcd3aio
import grpc
import grpc.aio
from etcd3aio import Etcd3Client, prefix_range_end
from etcd3aio._protobuf import Compare, WatchCreateRequest, WatchRequest, WatchStub
from etcd3aio.connections import ConnectionManager
from etcd3aio.kv import SortOrder, SortTarget

from proto.keys import DEFAULT_PREFIX

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 5.0
WATCH_BACKOFF_MAX_S = 2.0
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # gRPC's default 4 MiB cap on a received message: reads are paged (RANGE_PAGE_KEYS), and
    # one page of records each up to etcd's 1.5 MiB request limit still fits in this.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]
# Keys per range read: 30,000 status records with their ps rows are ~40 MB, ten times gRPC's
# default message cap; a prefix is read page by page at one revision instead.
RANGE_PAGE_KEYS = 500


class KVError(Exception):
    """etcd could not be reached or refused the request."""


@dataclass(frozen=True)
class EtcdSecurity:
    """How a client proves itself to etcd: TLS (`ca` alone: server authentication; with `cert`
    and `key`: client certificates too) and/or a user whose password etcd checks (a token is
    asked for on the first call, and again when etcd no longer accepts it)."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    user: str = ""
    password: str = field(default="", repr=False)

    def tls_args(self) -> dict[str, bytes]:
        if not self.ca:
            return {}
        out = {"ca_cert": _read(self.ca)}
        if self.cert:
            out |= {"cert_chain": _read(self.cert), "cert_key": _read(self.key)}
        return out


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int


class WatchEvent(NamedTuple):
    kind: Literal["put", "delete"]
    key: str
    value: bytes
    mod_revision: int


# The compares of a transaction (`KV.txn`): all must hold for its writes to happen.
@dataclass(frozen=True)
class Absent:
    """`key` does not exist."""

    key: str


@dataclass(frozen=True)
class ModRevisionIs:
    """`key` was last written at `revision` (0: it does not exist)."""

    key: str
    revision: int


@dataclass(frozen=True)
class ValueIs:
    """`key` exists and holds `value`."""

    key: str
    value: bytes


@dataclass(frozen=True)
class Present:
    """`key` exists."""

    key: str


@dataclass(frozen=True)
class NoneUnder:
    """No key exists under `prefix` (one range compare: race-free, unlike a read first)."""

    prefix: str


Condition: TypeAlias = Absent | Present | ModRevisionIs | ValueIs | NoneUnder


class Put(NamedTuple):
    """One write of a transaction."""

    key: str
    value: bytes
    lease: int = 0


def parse_discovery(url: str) -> tuple[list[str], str]:
    """`etcd://host:port[,host:port]/prefix` -> (["host:port", ...], "/prefix")."""
    parts = urlsplit(url)
    if parts.scheme != "etcd" or not parts.netloc:
        raise ValueError(f"invalid discovery URL {url!r}: want etcd://host:port[,host:port]/prefix")
    endpoints = []
    for hostport in parts.netloc.split(","):
        host, sep, port = hostport.rpartition(":")
        if not sep:
            host, port = hostport, "2379"
        if not host or not port.isdigit():
            raise ValueError(f"invalid etcd endpoint {hostport!r} in {url!r}")
        endpoints.append(f"{host}:{port}")
    prefix = parts.path.rstrip("/") or DEFAULT_PREFIX
    return endpoints, prefix


async def _resolve(endpoints: list[str]) -> list[str]:
    # etcd3aio dials an "ipv4:a,b" target (round robin = failover), which takes addresses only.
    loop = asyncio.get_running_loop()
    out: list[str] = []
    for ep in endpoints:
        host, _, port = ep.rpartition(":")
        try:
            infos = await loop.getaddrinfo(host, int(port), family=socket.AF_INET)
            out.append(f"{infos[0][4][0]}:{port}")
        except (OSError, ValueError):
            out.append(ep)
    return out


def _server_name(endpoints: list[str]) -> str:
    # The dialled target is a list of resolved addresses (`ipv4:a,b`): TLS checks the server's
    # certificate against the host the operator named (an IP or DNS SAN), the first one's.
    return endpoints[0].rpartition(":")[0].strip("[]")


async def _unary_client(
    endpoints: list[str], security: EtcdSecurity, server_name: str
) -> Etcd3Client:
    client = Etcd3Client(
        endpoints,
        rpc_max_attempts=2,
        tls_server_name=server_name if security.ca else None,
        **security.tls_args(),
    )
    # gRPC's default reconnect backoff grows to minutes; capped here so the agent is back
    # within ~2 s of etcd (etcd3aio has no parameter for it, hence its private manager). A
    # local subchannel pool: a new client gets new connections, not a shared stuck one.
    client._manager.grpc_options.extend(RECONNECT_OPTIONS)
    client._manager.grpc_options.append(("grpc.use_local_subchannel_pool", 1))
    # No keep-alive pings on a connection without a call in flight: etcd (PermitWithoutStream
    # false) answers them with GOAWAY `too_many_pings`, and an idle client (a node's status
    # writer between events) then redials, TLS handshake and all; at 1,000 nodes that churn
    # alone kept two cores busy. A call on a dead connection still fails by its deadline.
    client._manager.grpc_options[:] = [
        (k, 0 if k == "grpc.keepalive_permit_without_calls" else v)
        for k, v in client._manager.grpc_options
    ]
    await client.connect()
    return client


class KV:
    def __init__(
        self,
        client: Etcd3Client,
        endpoints: list[str],
        timeout: float,
        security: EtcdSecurity | None = None,
        server_name: str = "",
    ) -> None:
        self._client = client
        self.endpoints = endpoints
        self.timeout = timeout
        self.security = security or EtcdSecurity()
        self._server_name = server_name
        self._token = ""  # etcd's auth token, when security.user is set
        # Watches get their own channel so a stuck stream never delays unary calls.
        manager = ConnectionManager(endpoints)
        manager.grpc_options.extend(RECONNECT_OPTIONS)
        self._watch_channel: grpc.aio.Channel = manager.get_channel(
            tls_server_name=server_name if self.security.ca else None,
            **self.security.tls_args(),
        )

    @classmethod
    async def connect(
        cls,
        endpoints: list[str],
        timeout: float = DEFAULT_TIMEOUT_S,
        security: EtcdSecurity | None = None,
    ) -> KV:
        """Set up channels to all `host:port` endpoints. Does not wait for etcd to be up."""
        if not endpoints:
            raise ValueError("no etcd endpoints")
        security = security or EtcdSecurity()
        resolved = await _resolve(endpoints)
        name = _server_name(endpoints)
        client = await _unary_client(resolved, security, name)
        return cls(client, resolved, timeout, security, name)

    async def reconnect(self) -> None:
        """Dial etcd afresh for unary calls. After a network blip the old TCP connection may
        wait seconds for its next retransmission (exponential RTO back-off); a new one is
        answered at once. Calls in flight on the old connection fail (KVError)."""
        old = self._client
        self._client = await _unary_client(self.endpoints, self.security, self._server_name)
        self._client.set_token(self._token or None)
        try:
            await old.close()
        except Exception as e:  # a broken channel may fail to close; it is dropped anyway
            log.debug("closing the old etcd channel: %s", e)

    async def close(self) -> None:
        await self._client.close()
        await self._watch_channel.close()

    async def __aenter__(self) -> KV:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, aw: Awaitable[T], timeout: float | None = None) -> T:
        try:
            async with asyncio.timeout(timeout or self.timeout):
                if self.security.user and not self._token:
                    await self._login()
                return await aw
        except (etcd3aio.EtcdError, grpc.aio.AioRpcError, TimeoutError) as e:
            if _unauthenticated(e):
                self._token = ""  # expired or revoked: the next call asks for a new one
            raise KVError(f"etcd: {e or type(e).__name__}") from e
        finally:
            if asyncio.iscoroutine(aw):
                aw.close()  # not awaited when the login failed: no "never awaited" warning

    async def _login(self) -> None:
        assert self._client.auth is not None
        resp = await self._client.auth.authenticate(
            self.security.user, self.security.password, timeout=self.timeout
        )
        self._token = resp.token
        self._client.set_token(self._token)

    async def _watch_metadata(self) -> tuple[tuple[str, str], ...] | None:
        if not self.security.user:
            return None
        if not self._token:
            await self._call(asyncio.sleep(0))  # logs in (or raises KVError)
        return (("token", self._token),)

    @property
    def _kv(self):  # noqa: ANN202 - etcd3aio's service type stays inside this module
        assert self._client.kv is not None
        return self._client.kv

    @property
    def _lease(self):  # noqa: ANN202
        assert self._client.lease is not None
        return self._client.lease

    # ------------------------------------------------------------- reads
    async def get(self, key: str) -> Entry | None:
        resp = await self._call(self._kv.get(key, timeout=self.timeout))
        return _entry(resp.kvs[0]) if resp.kvs else None

    async def get_prefix(self, prefix: str) -> list[Entry]:
        entries, _ = await self.snapshot(prefix)
        return entries

    async def snapshot(self, prefix: str, keys_only: bool = False) -> tuple[list[Entry], int]:
        """Everything under `prefix` and the store revision it was read at (to watch from +1),
        read in pages of RANGE_PAGE_KEYS keys, every page at the first one's revision.
        `keys_only`: the entries' values are empty (etcd sends none)."""
        end = prefix_range_end(prefix)
        entries: list[Entry] = []

        def page(start: str | bytes, revision: int) -> Awaitable[Any]:
            return self._call(
                self._kv.get(
                    start,
                    range_end=end,
                    revision=revision,
                    limit=RANGE_PAGE_KEYS,
                    keys_only=keys_only,
                    timeout=self.timeout,
                )
            )

        resp = await page(prefix, 0)
        revision = resp.header.revision
        while True:
            more = resp.more and resp.kvs
            # The next page is asked for before this one is converted: etcd reads it while
            # this side turns 500 records into entries (a restart reads 90,000 of them).
            following = None
            if more:
                following = asyncio.ensure_future(page(resp.kvs[-1].key + b"\0", revision))
            entries += [_entry(kv) for kv in resp.kvs]
            if following is None:
                return entries, revision
            resp = await following

    async def latest_revision(self, prefix: str) -> int:
        """The newest mod revision under `prefix` (0: nothing there): one key, no values, so a
        watcher can tell cheaply whether it has seen every write made so far."""
        resp = await self._call(
            self._kv.get(
                prefix,
                range_end=prefix_range_end(prefix),
                limit=1,
                sort_order=SortOrder.DESCEND,
                sort_target=SortTarget.MOD,
                keys_only=True,
                timeout=self.timeout,
            )
        )
        return int(resp.kvs[0].mod_revision) if resp.kvs else 0

    # ------------------------------------------------------------- writes
    async def put(
        self, key: str, value: bytes, lease: int | None = None, timeout: float | None = None
    ) -> int:
        """Returns the revision of the write."""
        resp = await self._call(
            self._kv.put(key, value, lease=lease or 0, timeout=timeout or self.timeout), timeout
        )
        return resp.header.revision

    async def delete(self, key: str) -> bool:
        resp = await self._call(self._kv.delete(key, timeout=self.timeout))
        return resp.deleted > 0

    async def delete_prefix(self, prefix: str) -> int:
        resp = await self._call(
            self._kv.delete(prefix, range_end=prefix_range_end(prefix), timeout=self.timeout)
        )
        return resp.deleted

    async def txn(
        self, compares: Sequence[Condition], puts: Sequence[Put] = (), deletes: Sequence[str] = ()
    ) -> int:
        """Every put and delete at once, only if every compare holds. The revision of the
        transaction (every key put has it as its mod revision), or 0 when a compare failed and
        nothing was written. A key may appear once among the puts and deletes."""
        kv = self._kv
        ops = [kv.txn_op_put(p.key, p.value, lease=p.lease) for p in puts]
        ops += [kv.txn_op_delete(key) for key in deletes]
        resp = await self._call(kv.txn([_compare(c) for c in compares], ops, timeout=self.timeout))
        return resp.header.revision if resp.succeeded else 0

    async def create(self, key: str, value: bytes, lease: int | None = None) -> bool:
        """Put `key` only if it does not exist. True if this call created it."""
        return bool(await self.txn([Absent(key)], [Put(key, value, lease or 0)]))

    async def compare_and_swap(
        self, key: str, value: bytes, mod_revision: int, lease: int | None = None
    ) -> bool:
        """Put `key` only if its mod revision is still `mod_revision` (0: only if absent)."""
        return bool(
            await self.txn([ModRevisionIs(key, mod_revision)], [Put(key, value, lease or 0)])
        )

    async def compare_and_delete(self, key: str, mod_revision: int) -> bool:
        """Delete `key` only if its mod revision is still `mod_revision`."""
        return bool(await self.txn([ModRevisionIs(key, mod_revision)], deletes=[key]))

    async def compact(self, revision: int) -> None:
        await self._call(self._kv.compact(revision, physical=True, timeout=self.timeout))

    # ------------------------------------------------------------- leases
    async def lease_grant(self, ttl: int) -> int:
        resp = await self._call(self._lease.grant(ttl, timeout=self.timeout))
        return resp.ID

    async def lease_keepalive_once(self, lease_id: int, timeout: float | None = None) -> int:
        """Renew the lease once; returns its remaining TTL, 0 when etcd no longer knows it.
        `timeout` (default: the client's) is shorter for a heartbeat that must not wait long."""

        async def once() -> int:
            call = self._lease.keep_alive(lease_id)
            try:
                async for resp in call:
                    return int(resp.TTL)
                return 0
            finally:
                call.cancel()

        return await self._call(once(), timeout)

    async def lease_revoke(self, lease_id: int) -> None:
        try:
            await self._call(self._lease.revoke(lease_id, timeout=self.timeout))
        except KVError as e:
            cause = e.__cause__
            if (
                isinstance(cause, grpc.aio.AioRpcError)
                and cause.code() == grpc.StatusCode.NOT_FOUND
            ):
                return  # already gone: that's what we wanted
            raise

    # ------------------------------------------------------------- watch
    async def watch_prefix(
        self, prefix: str, start_revision: int = 0, known: Iterable[str] = ()
    ) -> AsyncIterator[WatchEvent]:
        """Every change under `prefix` from `start_revision` (0: from now), forever.

        After a disconnect it resumes from the last revision it delivered, so nothing is lost or
        repeated. If that revision was compacted away, it re-lists: a put for every key present
        and a delete for every key it knew (seen here, or passed in `known`) that is gone.
        """
        seen: set[str] = set(known)
        next_rev = start_revision
        backoff = 0.1
        stub = WatchStub(self._watch_channel)
        end = prefix_range_end(prefix)
        while True:
            relist = False
            call = None
            try:
                create = WatchCreateRequest(
                    key=prefix.encode(), range_end=end, start_revision=next_rev
                )
                metadata = await self._watch_metadata()
                call = stub.Watch(_requests(WatchRequest(create_request=create)), metadata=metadata)
                async for resp in call:
                    backoff = 0.1
                    if resp.compact_revision > 0 or resp.canceled:
                        relist = True
                        break
                    if resp.created and next_rev == 0:
                        next_rev = resp.header.revision + 1
                    for ev in resp.events:
                        key = ev.kv.key.decode()
                        next_rev = ev.kv.mod_revision + 1
                        if ev.type == ev.DELETE:
                            seen.discard(key)
                            yield WatchEvent("delete", key, b"", ev.kv.mod_revision)
                        else:
                            seen.add(key)
                            yield WatchEvent("put", key, ev.kv.value, ev.kv.mod_revision)
            except grpc.aio.AioRpcError as e:
                if _unauthenticated(e):
                    self._token = ""
                log.info("watch %s interrupted (%s), resuming at %d", prefix, e.code(), next_rev)
            except KVError as e:
                log.info("watch %s: cannot log in to etcd: %s", prefix, e)
            finally:
                if call is not None:
                    call.cancel()
            if relist:
                try:
                    entries, rev = await self.snapshot(prefix)
                except KVError as e:
                    log.info("watch %s: re-list failed: %s", prefix, e)
                else:
                    present = {e.key for e in entries}
                    for key in sorted(seen - present):
                        yield WatchEvent("delete", key, b"", rev)
                    for entry in entries:
                        yield WatchEvent("put", entry.key, entry.value, entry.mod_revision)
                    seen = present
                    next_rev = rev + 1
                    continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, WATCH_BACKOFF_MAX_S)


def _unauthenticated(e: BaseException) -> bool:
    if isinstance(e, etcd3aio.errors.EtcdUnauthenticatedError):
        return True
    return isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.UNAUTHENTICATED


async def _requests(first: WatchRequest) -> AsyncIterator[WatchRequest]:
    yield first
    await asyncio.Future()  # keep the request side open: closing it would end the watch


def _entry(kv: object) -> Entry:
    return Entry(
        key=kv.key.decode(),  # type: ignore[attr-defined]
        value=bytes(kv.value),  # type: ignore[attr-defined]
        mod_revision=kv.mod_revision,  # type: ignore[attr-defined]
        create_revision=kv.create_revision,  # type: ignore[attr-defined]
        lease=kv.lease,  # type: ignore[attr-defined]
    )


def _compare(c: Condition) -> Compare:
    if isinstance(c, NoneUnder):
        # A range compare holds for every key in the range; an empty range compares as one
        # absent key (create revision 0), so this holds exactly when nothing is there.
        return Compare(
            result=Compare.EQUAL,
            target=Compare.CREATE,
            key=c.prefix.encode(),
            create_revision=0,
            range_end=prefix_range_end(c.prefix),
        )
    key = c.key.encode()
    if isinstance(c, Absent):
        return Compare(result=Compare.EQUAL, target=Compare.CREATE, key=key, create_revision=0)
    if isinstance(c, Present):
        return Compare(result=Compare.GREATER, target=Compare.CREATE, key=key, create_revision=0)
    if isinstance(c, ModRevisionIs):
        return Compare(result=Compare.EQUAL, target=Compare.MOD, key=key, mod_revision=c.revision)
    # etcd fails a value compare on a key that does not exist, whatever the value.
    return Compare(result=Compare.EQUAL, target=Compare.VALUE, key=key, value=c.value)
