"""User networks in etcd: `networks/<id>` with its name claim and `vnis/<vni>` claim, always
written and deleted together in one transaction (proto/keys.py). An overlay network spans every
node; a node-local one (`node_id`) exists on its node only and answers to `node/name` there.

Creates are serialised by `network-seq`: each reads its mod revision before it reads every
network, chooses a VNI and a subnet from what it read, and commits only if no other create
committed since (the transaction compares that revision and rewrites the key). A create that
lost the race reads again and chooses again, so no VNI, subnet or name is handed out twice,
whichever manager or client asks. A remove compares that no endpoint exists under the network
in the same transaction, so it never leaves a running container's address behind.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Network

from manager.network_ipam import (
    Ipam,
    check_free,
    free_subnet,
    free_vni,
    host_address,
    local_networks,
)
from proto.docker.errors import Conflict, DockerError, NotFound
from proto.keys import Keys
from proto.kv import KV, Absent, ModRevisionIs, NoneUnder, Put
from proto.records_pb2 import EndpointRecord, NetworkRecord, NodeRecord

log = logging.getLogger(__name__)

# Each lost race means another create committed: with N clients at once the last one needs
# N rounds at most.
CREATE_ATTEMPTS = 200
REMOVE_ATTEMPTS = 20
BACKOFF_S = 0.002

HostNetworks = Callable[[], Awaitable[list[IPv4Network]]]


async def _this_host() -> list[IPv4Network]:
    return await asyncio.to_thread(local_networks)


def active_endpoints(rec: NetworkRecord) -> DockerError:
    # dockerd: errors.Wrap(ActiveEndpointsError{name, id}, "error while removing network").
    return DockerError(
        f"error while removing network: network {rec.name} id {rec.id} has active endpoints", 403
    )


def clash(a: NetworkRecord, b: NetworkRecord) -> bool:
    """Whether two networks may not share their name: no node may see two networks of one
    name, and every node sees the overlay networks and its own node-local ones."""
    return a.name == b.name and (not a.node_id or not b.node_id or a.node_id == b.node_id)


def name_key(keys: Keys, rec: NetworkRecord) -> str:
    return keys.network_name(rec.name, rec.node_id)


class NetworkStore:
    def __init__(self, kv: KV, keys: Keys, this_host: HostNetworks = _this_host) -> None:
        self.kv = kv
        self.keys = keys
        self.this_host = this_host  # the manager host's own networks (tests pass their own)

    # ------------------------------------------------------------- reads
    async def all(self) -> list[NetworkRecord]:
        out = []
        for entry in await self.kv.get_prefix(self.keys.networks_prefix()):
            try:
                out.append(NetworkRecord.FromString(entry.value))
            except Exception:  # noqa: BLE001 - a corrupt record must not hide the others
                log.warning("unreadable network record %s", entry.key)
        return sorted(out, key=lambda r: (r.created_at_ns, r.id))

    async def get(self, net_id: str) -> tuple[NetworkRecord, int] | None:
        """The record and its mod revision."""
        entry = await self.kv.get(self.keys.network(net_id))
        if entry is None:
            return None
        return NetworkRecord.FromString(entry.value), entry.mod_revision

    async def endpoints(self, net_id: str) -> list[EndpointRecord]:
        out = []
        for entry in await self.kv.get_prefix(self.keys.endpoints_prefix(net_id)):
            try:
                out.append(EndpointRecord.FromString(entry.value))
            except Exception:  # noqa: BLE001
                log.warning("unreadable endpoint record %s", entry.key)
        return out

    async def host_networks(self) -> list[IPv4Network]:
        """What a default subnet must not overlap besides other networks: every node's
        advertise address (nodes/ and members/) and this host's interface networks."""
        found = list(await self.this_host())
        for prefix in (self.keys.nodes_prefix(), self.keys.members_prefix()):
            for entry in await self.kv.get_prefix(prefix):
                try:
                    net = host_address(NodeRecord.FromString(entry.value).addr)
                except Exception:  # noqa: BLE001
                    continue
                if net is not None:
                    found.append(net)
        return found

    # ------------------------------------------------------------- writes
    async def create(self, template: NetworkRecord, ipam: Ipam | None) -> NetworkRecord:
        """Store a network made of `template` (name, driver, options, labels, flags, node for
        a node-local one) with a new ID, a free VNI and `ipam` (the client's, checked against
        the other networks) or the first free default subnet. A node-local network takes its
        subnet and VNI from the same pool as the overlay networks: its bridge (`fl-br-<vni>`)
        is then unique on its node, and its containers' addresses never collide with an
        overlay network's when they are on both."""
        avoid_hosts = await self.host_networks() if ipam is None else []
        seq_key = self.keys.network_seq()
        for attempt in range(CREATE_ATTEMPTS):
            seq = await self.kv.get(seq_key)
            existing = await self.all()  # read after the seq: any later create changes it
            if any(clash(r, template) for r in existing):
                raise Conflict(f"network with name {template.name} already exists")
            subnets = [IPv4Network(r.subnet) for r in existing]
            if ipam is None:
                chosen = free_subnet([*subnets, *avoid_hosts])
            else:
                check_free(ipam.subnet, subnets)
                chosen = ipam
            rec = NetworkRecord()
            rec.CopyFrom(template)
            rec.id = secrets.token_hex(32)
            rec.vni = free_vni(r.vni for r in existing)
            rec.subnet, rec.gateway, rec.ip_range = chosen.subnet, chosen.gateway, chosen.ip_range
            rec.ipam_user = ipam is not None
            rec.created_at_ns = time.time_ns()
            claim = name_key(self.keys, rec)
            vni_key = self.keys.vni(rec.vni)
            won = await self.kv.txn(
                [
                    Absent(claim),
                    Absent(vni_key),
                    ModRevisionIs(seq_key, seq.mod_revision if seq else 0),
                ],
                [
                    Put(self.keys.network(rec.id), rec.SerializeToString()),
                    Put(claim, rec.id.encode()),
                    Put(vni_key, rec.id.encode()),
                    Put(seq_key, rec.id.encode()),
                ],
            )
            if won:
                return rec
            # Another create committed first: spread the retries so they do not collide again.
            await asyncio.sleep(random.uniform(0, BACKOFF_S * min(attempt + 1, 20)))
        raise DockerError(f"network {template.name}: too many concurrent creates, try again", 503)

    async def remove(self, net_id: str) -> NetworkRecord:
        """Delete the network and its claims, refused (dockerd's 403) while an endpoint is on
        it: the transaction itself compares that none exists."""
        for _ in range(REMOVE_ATTEMPTS):
            found = await self.get(net_id)
            if found is None:
                raise NotFound(f"network {net_id} not found")
            rec, rev = found
            key = self.keys.network(rec.id)
            removed = await self.kv.txn(
                [ModRevisionIs(key, rev), NoneUnder(self.keys.endpoints_prefix(rec.id))],
                deletes=[key, name_key(self.keys, rec), self.keys.vni(rec.vni)],
            )
            if removed:
                # Addresses kept for containers of nodes that are away (docs/networking.md):
                # their network is gone, so are they.
                await self.kv.delete_prefix(self.keys.reservations_prefix(rec.id))
                return rec
            if await self.kv.get_prefix(self.keys.endpoints_prefix(rec.id)):
                raise active_endpoints(rec)
        raise DockerError(f"network {net_id}: too many concurrent changes, try again", 503)
