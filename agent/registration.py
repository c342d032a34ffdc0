"""The node record under an etcd lease: registered at start, renewed every heartbeat, and
re-registered by itself after an etcd outage or a lost lease. Never touches containers; tells
the node fence (agent/fencing.py) when each keep-alive was sent and whether it succeeded, and
which other nodes it last saw. Also writes `members/<id>` (no lease) at every registration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from typing import TYPE_CHECKING

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from agent import fencing
from agent.fencing import Fence
from agent.metrics import AgentMetrics
from agent.tasks import cancel
from proto.keys import Keys
from proto.kv import KV, KVError
from proto.records_pb2 import NodeRecord

if TYPE_CHECKING:
    from agent.shared_lease import SharedLease

log = logging.getLogger(__name__)

PEERS_REFRESH_S = 5.0  # how stale the list of peers asked during an etcd outage may be


def describe_host(
    node_id: str, name: str, addr: str, labels: dict[str, str], started_at_ns: int
) -> NodeRecord:
    """The node record's static part, from this machine. Blocking (reads /proc, /etc)."""
    return NodeRecord(
        id=node_id,
        name=name,
        addr=addr,
        labels=labels,
        ncpu=os.cpu_count() or 1,
        memory_bytes=_mem_total(),
        kernel_version=platform.release(),
        operating_system=_os_name(),
        os_type="linux",
        architecture=platform.machine(),
        storage_driver="overlay2",
        version=_version(),
        started_at_ns=started_at_ns,
    )


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _os_name() -> str:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        with contextlib.suppress(OSError), open(path) as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    return "Linux"


def _version() -> str:
    try:
        return metadata.version("flotilla")
    except metadata.PackageNotFoundError:
        return "0.1.0"


class Registration:
    """Keeps `nodes/<id>` alive. `start()` returns at once; `registered` is set while it holds.
    Give it a KV of its own: after a failure it redials (`KV.reconnect`)."""

    def __init__(
        self,
        kv: KV,
        keys: Keys,
        record: NodeRecord,
        ttl_s: int,
        heartbeat_s: float,
        metrics: AgentMetrics | None = None,
        on_registered: Callable[[], Awaitable[None]] | None = None,
        fence: Fence | None = None,
        redial_with: Sequence[KV] = (),
        shared: SharedLease | None = None,
    ) -> None:
        if heartbeat_s >= ttl_s:
            raise ValueError(f"heartbeat ({heartbeat_s}s) must be shorter than the TTL ({ttl_s}s)")
        self.kv = kv
        self.key = keys.node(record.id)
        self.member_key = keys.member(record.id)
        self.nodes_prefix = keys.nodes_prefix()
        self.record = record
        self.ttl_s = ttl_s
        self.heartbeat_s = heartbeat_s
        self.metrics = metrics or AgentMetrics()
        self.on_registered = on_registered
        self.fence = fence
        # Other clients of the agent (status writes, address claims) redialled with ours: their
        # connection sat through the same outage and may be in the same back-off.
        self.redial_with = tuple(redial_with)
        # A lease kept by the node's host for several nodes (hollow nodes only; no fence).
        self.shared = shared
        # A keep-alive must fail fast: the fence deadline leaves TTL - guard after it was sent.
        self.call_timeout_s = max(2 * heartbeat_s, 0.5)
        # After a failure, dial again every half heartbeat at most: the first keep-alive after a
        # blip has to land before the fence deadline, which a 2 s blip leaves little short of.
        self.retry_max_s = heartbeat_s / 2
        self.lease_id = 0
        self.registered = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._hook: asyncio.Task[None] | None = None
        self._peers: asyncio.Task[None] | None = None
        self._redial = False  # the last etcd call failed: use a new connection
        self._lease_changed = asyncio.Event()  # the shared lease's, while registered under it

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="registration")

    async def stop(self, deregister: bool = True) -> None:
        """Stop renewing. With `deregister` the lease is revoked and the record goes at once;
        without it the record expires after the TTL, as when the agent dies."""
        await cancel(self._task, self._hook, self._peers)
        self._task = self._hook = self._peers = None
        self.registered.clear()
        if deregister and self.shared is not None:
            with contextlib.suppress(KVError):  # the lease is the host's: only our key goes
                await self.kv.delete(self.key)
            self.lease_id = 0
        if deregister and self.lease_id:
            try:
                await self.kv.lease_revoke(self.lease_id)
            except KVError as e:
                log.warning("could not revoke lease (record expires with its TTL): %s", e)
            self.lease_id = 0

    async def _run(self) -> None:
        while True:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(KVError),
                wait=wait_exponential(multiplier=0.05, max=self.retry_max_s),
                before_sleep=self._failed,
            ):
                with attempt:
                    await self._register()
            self.registered.set()
            self._start_hook()
            try:
                await self._keep_alive()
            except KVError as e:
                log.warning("lost etcd while renewing the lease: %s", e)
                self.metrics.lease_failures.inc()
                if self.fence is not None:
                    self.fence.failed()
                self._redial = True
            self.registered.clear()

    def rerun_hook(self) -> None:
        """Run `on_registered` again now, if registered (it is idempotent)."""
        if self.registered.is_set():
            self._start_hook()

    def _start_hook(self) -> None:
        if self.on_registered is None:
            return
        # Beside the keep-alives, never before them: the hook reads etcd per container.
        if self._hook is not None:
            self._hook.cancel()
        self._hook = asyncio.create_task(self._run_hook(self.on_registered))

    @staticmethod
    async def _run_hook(hook: Callable[[], Awaitable[None]]) -> None:
        try:
            await hook()
        except Exception:
            log.exception("on_registered hook failed")

    def _failed(self, state: object) -> None:
        self.metrics.lease_failures.inc()
        self._redial = True
        if self.fence is not None:
            self.fence.failed()
        outcome = getattr(state, "outcome", None)
        log.info("registration failed, retrying: %s", outcome.exception() if outcome else "?")

    async def _register(self) -> None:
        if self._redial:
            # Not the old connection: it may sit in TCP retransmission back-off for seconds
            # after a blip, longer than the fence deadline leaves.
            for client in (self.kv, *self.redial_with):
                await client.reconnect()
            self._redial = False
        if self.shared is not None:
            self.lease_id = await self.shared.current()
            self._lease_changed = self.shared.changed
            await self._put()
            await self.kv.put(self.member_key, self.record.SerializeToString())
            self.metrics.registrations.inc()
            return
        # After a short blip the lease may still be alive: keep it rather than orphan it.
        sent_ns = fencing.now_ns()
        if self.lease_id:
            ttl = await self.kv.lease_keepalive_once(self.lease_id, self.call_timeout_s)
            if ttl <= 0:
                self.lease_id = 0
        if not self.lease_id:
            sent_ns = fencing.now_ns()
            self.lease_id = await self.kv.lease_grant(self.ttl_s)
        if self.fence is not None:
            # At once, not after the record's writes: each of them is a round trip nearer the
            # deadline, which a blip leaves close.
            self.fence.renewed(sent_ns)
        await self._put()
        await self.kv.put(self.member_key, self.record.SerializeToString())
        await self._refresh_peers()
        self.metrics.registrations.inc()
        log.info(
            "registered node %s (%s) under lease %x", self.record.name, self.key, self.lease_id
        )

    async def _put(self) -> None:
        self.record.updated_at_ns = time.time_ns()
        await self.kv.put(
            self.key,
            self.record.SerializeToString(),
            lease=self.lease_id,
            timeout=self.call_timeout_s,
        )

    async def _follow_shared(self, shared: SharedLease) -> None:
        """Under the host's lease: returns when the lease changes."""
        changed = self._lease_changed
        while shared.lease_id == self.lease_id:
            await changed.wait()
            changed = shared.changed

    async def _refresh_peers(self) -> None:
        """Cache the other live nodes: the ones the fence asks when etcd is unreachable."""
        if self.fence is None:
            return
        peers: dict[str, str] = {}
        for entry in await self.kv.get_prefix(self.nodes_prefix):
            rec = NodeRecord()
            try:
                rec.ParseFromString(entry.value)
            except Exception:
                continue
            if rec.id and rec.id != self.record.id and rec.addr:
                peers[rec.id] = rec.addr
        self.fence.peers = peers
        self.metrics.fence_peers.set(len(peers))

    async def _refresh_peers_quietly(self) -> None:
        try:
            await self._refresh_peers()
        except KVError as e:
            log.info("could not refresh the list of peers: %s", e)

    async def _keep_alive(self) -> None:
        """Returns when the lease is lost; raises KVError when etcd is unreachable."""
        if self.shared is not None:
            await self._follow_shared(self.shared)
            return
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.heartbeat_s
        next_peers = loop.time() + PEERS_REFRESH_S
        while True:
            await asyncio.sleep(max(0.0, next_beat - loop.time()))
            next_beat = loop.time() + self.heartbeat_s
            sent_ns = fencing.now_ns()
            ttl = await self.kv.lease_keepalive_once(self.lease_id, self.call_timeout_s)
            if ttl <= 0:
                log.warning("lease %x expired; registering again", self.lease_id)
                self.metrics.lease_failures.inc()
                if self.fence is not None:
                    self.fence.failed()
                self.lease_id = 0
                return
            if self.fence is not None and self.fence.renewed(sent_ns):
                # The deadline ran out before this renewal (an agent stalled longer than the
                # fence allows) but the lease lived: the hook restarts what the shims fenced.
                self._start_hook()
            self.metrics.lease_renewals.inc()
            if loop.time() >= next_peers and (self._peers is None or self._peers.done()):
                # Beside the keep-alives: a slow range read must not delay the next one.
                next_peers = loop.time() + PEERS_REFRESH_S
                self._peers = asyncio.create_task(self._refresh_peers_quietly())
