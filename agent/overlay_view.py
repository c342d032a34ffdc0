"""The agent's copy of the cluster's overlay networks and endpoints (`networks/`,
`endpoints/`), read once and then watched, so the data plane, the address claims and the
embedded DNS answer from memory. Watches resume by revision and re-list after a compaction
(proto/kv.py), so after an etcd outage the copy converges to etcd's: no stale entry, none
missing. Every change names the networks it touched, for the peer programming."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from agent.tasks import cancel
from proto.keys import Keys
from proto.kv import KV, KVError, WatchEvent
from proto.records_pb2 import EndpointRecord, NetworkRecord

log = logging.getLogger(__name__)

RETRY_S = 1.0

Changed = Callable[[set[str]], None]  # network ids whose endpoints or record changed


def find_network(records: list[NetworkRecord], ref: str, node_id: str) -> NetworkRecord | None:
    """By full ID, name, or unique ID prefix (dockerd's order), among the networks node
    `node_id` has: every overlay network and its own node-local ones (another node's is
    missing here, as on a dockerd that never had it)."""
    here = [r for r in records if r.node_id in ("", node_id)]
    for match in (
        [r for r in here if r.id == ref],
        [r for r in here if r.name == ref],
        [r for r in here if ref and r.id.startswith(ref)],
    ):
        if len(match) == 1:
            return match[0]
    return None


class OverlayView:
    def __init__(self, kv: KV, keys: Keys, on_change: Changed | None = None) -> None:
        self.kv = kv
        self.keys = keys
        self.on_change = on_change
        self.networks: dict[str, NetworkRecord] = {}
        self.endpoints: dict[str, dict[str, EndpointRecord]] = {}  # net id -> ip -> record
        self.ready = asyncio.Event()  # set once both prefixes were read
        self._tasks: list[asyncio.Task[None]] = []
        self._read: set[str] = set()  # prefixes read at least once

    # ------------------------------------------------------------- reading
    def network(self, ref: str, node_id: str) -> NetworkRecord | None:
        """A network node `node_id` has (find_network)."""
        return find_network(list(self.networks.values()), ref, node_id)

    def endpoints_of(self, net_id: str) -> dict[str, EndpointRecord]:
        return self.endpoints.get(net_id, {})

    def taken(self, net_id: str) -> set[str]:
        return set(self.endpoints.get(net_id, {}))

    def resolve(self, net_ids: list[str], name: str) -> list[str]:
        """The addresses of the containers that go by `name` (lowercase: container name, alias,
        short ID) on these networks, in their order (dockerd's resolver searches a container's
        networks in turn)."""
        found: list[str] = []
        for net_id in net_ids:
            for ip, ep in sorted(self.endpoints.get(net_id, {}).items()):
                names = (ep.container_name, *ep.aliases, ep.container_id[:12])
                if name in (n.lower() for n in names) and ip not in found:
                    found.append(ip)
        return found

    def reverse(self, net_ids: list[str], ip: str) -> list[str]:
        """PTR answers: the name of the container holding `ip` on one of these networks."""
        for net_id in net_ids:
            ep = self.endpoints.get(net_id, {}).get(ip)
            if ep is not None:
                return [ep.container_name]
        return []

    def record_claim(self, rec: EndpointRecord) -> None:
        """A claim this agent just made, seen before its watch event arrives (the container's
        own DNS answers and peers must not wait for the round trip); the event is the same."""
        self.endpoints.setdefault(rec.network_id, {})[rec.ip] = rec

    # ------------------------------------------------------------- keeping up
    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._follow(self.keys.networks_prefix()), name="overlay-nets"),
            asyncio.create_task(self._follow(self.keys.endpoints_prefix()), name="overlay-eps"),
        ]

    async def stop(self) -> None:
        await cancel(*self._tasks)
        self._tasks = []

    async def _follow(self, prefix: str) -> None:
        while True:
            try:
                entries, revision = await self.kv.snapshot(prefix)
                break
            except KVError as e:
                log.info("reading %s failed, retrying: %s", prefix, e)
                await asyncio.sleep(RETRY_S)
        self._replace(prefix, [WatchEvent("put", e.key, e.value, e.mod_revision) for e in entries])
        self._read.add(prefix)
        if {self.keys.networks_prefix(), self.keys.endpoints_prefix()} <= self._read:
            self.ready.set()
        known = [e.key for e in entries]
        async for event in self.kv.watch_prefix(prefix, revision + 1, known):
            self._notify(self._apply(prefix, event))

    def _replace(self, prefix: str, events: list[WatchEvent]) -> None:
        if prefix == self.keys.networks_prefix():
            touched = set(self.networks)
            self.networks = {}
        else:
            touched = set(self.endpoints)
            self.endpoints = {}
        for event in events:
            touched |= self._apply(prefix, event)
        self._notify(touched)

    def _apply(self, prefix: str, event: WatchEvent) -> set[str]:
        try:
            if prefix == self.keys.networks_prefix():
                return self._apply_network(event)
            return self._apply_endpoint(event)
        except ValueError as e:  # a malformed key or value is skipped, never fatal
            log.warning("ignoring %s: %s", event.key, e)
            return set()

    def _apply_network(self, event: WatchEvent) -> set[str]:
        net_id = self.keys.network_id(event.key)
        if event.kind == "delete":
            self.networks.pop(net_id, None)
        else:
            rec = NetworkRecord()
            rec.ParseFromString(event.value)
            self.networks[net_id] = rec
        return {net_id}

    def _apply_endpoint(self, event: WatchEvent) -> set[str]:
        net_id, ip = self.keys.endpoint_ids(event.key)
        if event.kind == "delete":
            eps = self.endpoints.get(net_id, {})
            eps.pop(ip, None)
            if not eps:
                self.endpoints.pop(net_id, None)
        else:
            rec = EndpointRecord()
            rec.ParseFromString(event.value)
            self.endpoints.setdefault(net_id, {})[ip] = rec
        return {net_id}

    def _notify(self, touched: set[str]) -> None:
        if touched and self.on_change is not None:
            self.on_change(touched)
