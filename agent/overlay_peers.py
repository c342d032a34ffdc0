"""Keeps each host's overlay data plane equal to etcd: for every overlay network with a
container running here, the static FDB and neighbour entries of the network's REMOTE
endpoints (runtime/overlay.py programs them). Changes arrive from the endpoint watch
(agent/overlay_view.py) and are coalesced: a burst of starts elsewhere is one reconcile per
network, each a full desired-vs-kernel pass, so a missed or repeated event cannot leave a
stale or missing entry. (Devices of networks nobody here uses any more go with their last
local user, or at the runtime's restart: runtime/user_networks.py.) Node-local networks have
no peers: they are skipped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from agent.overlay_view import OverlayView
from agent.tasks import cancel
from proto.records_pb2 import NetworkRecord
from runtime.overlay import OverlayPlane, OverlaySpec

log = logging.getLogger(__name__)


def spec_of(rec: NetworkRecord) -> OverlaySpec:
    return OverlaySpec(
        id=rec.id,
        name=rec.name,
        vni=rec.vni,
        subnet=rec.subnet,
        gateway=rec.gateway,
        internal=rec.internal,
        local=bool(rec.node_id),
    )


class PeerSync:
    def __init__(
        self,
        view: OverlayView,
        plane: OverlayPlane,
        node_id: str,
        in_use: Callable[[], set[str]],
    ) -> None:
        self.view = view
        self.plane = plane
        self.node_id = node_id
        self.in_use = in_use  # ids of the overlay networks a running local container is on
        self._dirty: set[str] = set()
        self._full = True  # the first pass, and after a failure: every network in use
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one pass at a time: passes read then write the kernel
        self._task: asyncio.Task[None] | None = None

    def changed(self, net_ids: set[str]) -> None:
        """The view's change callback."""
        self._dirty |= net_ids
        self._wake.set()

    def resync(self) -> None:
        self._full = True
        self._wake.set()

    async def start(self) -> None:
        self._wake.set()
        self._task = asyncio.create_task(self._run(), name="overlay-peers")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def program(self, net_ids: set[str]) -> None:
        """Now, for networks a container here just joined (before its process runs). Before
        the view was read there is nothing to program from (an empty peer set would wipe
        the kernel's): the first full pass does it."""
        if not self.view.ready.is_set():
            return
        async with self._lock:
            await self._program(net_ids)

    async def _run(self) -> None:
        await self.view.ready.wait()
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            full, self._full = self._full, False
            try:
                async with self._lock:
                    if full:
                        dirty |= self.in_use()
                    await self._program(dirty & self.in_use())
            except Exception:  # a failed pass is retried whole, never fatal
                log.exception("overlay peer programming failed; retrying")
                self._full = True
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _program(self, net_ids: set[str]) -> None:
        for net_id in sorted(net_ids):
            rec = self.view.networks.get(net_id)
            if rec is None:
                continue  # removed: its last local user's teardown removes the devices
            if rec.node_id:
                continue  # node-local: no remote endpoints, no VXLAN device
            peers = {
                ip: (ep.mac, ep.vtep)
                for ip, ep in self.view.endpoints_of(net_id).items()
                if ep.node_id != self.node_id
            }
            await asyncio.to_thread(self.plane.set_peers, spec_of(rec), peers)
