"""One etcd lease kept alive for several nodes that live and die together: the hollow nodes of
one `flotilla hollow` process. A thousand nodes renewing a lease each is a thousand keep-alives
a second at a 1 s beat, most of a core for etcd and the host; nodes that share a fate lose
nothing by sharing a lease (their process dying ends them all at the same moment anyway), so
a host renews one lease for all of them and each node's Registration writes its records under
it. A real agent keeps its own lease (its fence is tied to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agent.tasks import cancel
from proto.kv import KV, KVError

log = logging.getLogger(__name__)


class SharedLease:
    """`lease_id` is the live lease (0 while there is none); `changed` is set whenever it
    changes, so the nodes under it register again under the new one."""

    def __init__(self, kv: KV, ttl_s: int, heartbeat_s: float) -> None:
        if heartbeat_s >= ttl_s:
            raise ValueError(f"heartbeat ({heartbeat_s}s) must be shorter than the TTL ({ttl_s}s)")
        self.kv = kv
        self.ttl_s = ttl_s
        self.heartbeat_s = heartbeat_s
        self.lease_id = 0
        self.changed = asyncio.Event()
        self._granted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="shared-lease")

    async def current(self) -> int:
        """The live lease, once there is one."""
        await self._granted.wait()
        return self.lease_id

    async def stop(self, revoke: bool = True) -> None:
        await cancel(self._task)
        self._task = None
        if revoke and self.lease_id:
            with contextlib.suppress(KVError):
                await self.kv.lease_revoke(self.lease_id)
        self._set(0)

    def _set(self, lease_id: int) -> None:
        if lease_id != self.lease_id:
            self.lease_id = lease_id
            # Set for whoever waits on the old one; later waiters get a fresh event.
            self.changed.set()
            self.changed = asyncio.Event()
        if lease_id:
            self._granted.set()
        else:
            self._granted.clear()

    async def _run(self) -> None:
        timeout = max(2 * self.heartbeat_s, 0.5)
        while True:
            try:
                if not self.lease_id:
                    self._set(await self.kv.lease_grant(self.ttl_s))
                await asyncio.sleep(self.heartbeat_s)
                if await self.kv.lease_keepalive_once(self.lease_id, timeout) <= 0:
                    log.warning("shared lease %x expired; granting a new one", self.lease_id)
                    self._set(0)
            except KVError as e:
                log.warning("shared lease: %s (retrying)", e)
                await asyncio.sleep(self.heartbeat_s / 2)
                with contextlib.suppress(KVError):
                    await self.kv.reconnect()
