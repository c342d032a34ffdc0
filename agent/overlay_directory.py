"""The runtime's network directory over etcd: which overlay networks exist, and the address
claims of the containers running here.

An address is claimed by creating `endpoints/<net>/<ip>` only if it is absent, under the node's
lease: no address is ever handed out twice (however many starts race on however many nodes),
and a node's endpoints leave every view with its lease. A reschedulable container's address is
then free for its replacement (its shim fenced it before the lease could expire). Any other
container may still be running on a node that is only cut off, so its address is also kept in
`reserved/<net>/<ip>`, without a lease, until it stops (or its node comes back without it): a
claim needs both keys absent. After every registration the claims are asserted again under the
current lease (an expired lease took them away; a restarted agent's previous lease is about to),
and claims and reservations of this node that no running container holds are deleted."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Mapping

from agent.embedded_dns import EmbeddedDNS
from agent.overlay_peers import PeerSync, spec_of
from agent.overlay_view import OverlayView, find_network
from proto.docker.errors import NotFound, SystemError_
from proto.keys import Keys
from proto.kv import KV, Absent, Condition, KVError, ModRevisionIs, Present, Put, ValueIs
from proto.logical import SWARM_ID_LABEL, is_replacement
from proto.records_pb2 import EndpointRecord, NetworkRecord
from runtime.fence import is_reschedulable
from runtime.net_directory import EndpointRequest, UserNetwork, address_in_use
from runtime.network import mac_for_ip
from runtime.overlay import OverlaySpec

log = logging.getLogger(__name__)


class EtcdDirectory:
    def __init__(
        self,
        kv: KV,
        keys: Keys,
        view: OverlayView,
        peers: PeerSync,
        node_id: str,
        vtep: str,
        lease: Callable[[], int],
        labels_of: Callable[[str], Mapping[str, str]] = lambda cid: {},
        dns: EmbeddedDNS | None = None,
    ) -> None:
        self.kv = kv
        self.keys = keys
        self.view = view
        self.peers = peers
        self.node_id = node_id
        self.vtep = vtep
        self.lease = lease
        self.labels_of = labels_of  # container id -> its labels (swarm id, reschedule policy)
        self.dns = dns
        self.joined_nets: dict[str, list[str]] = {}  # container id -> its networks, in order
        # Containers inside claim(): their new claims may be in etcd before the runtime's
        # record shows the address, and a reassert meanwhile must not take them for stale.
        self._claiming: dict[str, int] = {}

    # ------------------------------------------------------------- lookups
    async def lookup(self, name_or_id: str) -> UserNetwork | None:
        """Overlay networks and this node's node-local ones; another node's is missing."""
        if self.view.ready.is_set():
            rec = self.view.network(name_or_id, self.node_id)
        else:  # etcd not read yet (the agent is starting): ask it directly
            rec = find_network(await self._read_networks(), name_or_id, self.node_id)
        if rec is None:
            return None
        return UserNetwork(spec_of(rec), user_subnet=rec.ipam_user, ip_range=rec.ip_range)

    async def _read_networks(self) -> list[NetworkRecord]:
        try:
            entries = await self.kv.get_prefix(self.keys.networks_prefix())
        except KVError as e:
            raise SystemError_(f"cannot read the cluster's networks: {e}") from None
        found = []
        for entry in entries:
            rec = NetworkRecord()
            rec.ParseFromString(entry.value)
            found.append(rec)
        return found

    # ------------------------------------------------------------- claims
    async def claim(self, spec: OverlaySpec, req: EndpointRequest) -> str:
        cid = req.container_id
        self._claiming[cid] = self._claiming.get(cid, 0) + 1
        try:
            return await self._claim(spec, req)
        finally:
            self._claiming[cid] -= 1
            if not self._claiming[cid]:
                del self._claiming[cid]

    async def _claim(self, spec: OverlaySpec, req: EndpointRequest) -> str:
        lease = self.lease()
        if not lease:
            raise SystemError_(
                f"cannot allocate an address on network {spec.name}: this node is not "
                "registered in etcd"
            )
        rec = self.view.networks.get(spec.id)
        pool = ipaddress.IPv4Network(rec.ip_range if rec and rec.ip_range else spec.subnet)
        if req.wanted_ip:
            if not await self._create(spec, req, req.wanted_ip, lease):
                raise address_in_use()
            return req.wanted_ip
        # The view says which addresses are taken, but may lag etcd: a full scan that finds
        # nothing is repeated once against etcd itself before the network counts as full.
        taken = self.view.taken(spec.id)
        # The address it had is asked for whatever the view says: a dead node's claims may
        # not have left the view yet, and the transaction decides anyway.
        previous = req.previous_ip or await self._last_address(spec, req.container_id)
        in_pool = bool(previous) and ipaddress.IPv4Address(previous) in pool
        if in_pool and await self._create(spec, req, previous, lease):
            return previous
        for _ in range(2):
            for host in pool.hosts():
                ip = str(host)
                if ip == spec.gateway or ip in taken:
                    continue
                if await self._create(spec, req, ip, lease):
                    return ip
                taken = taken | self.view.taken(spec.id) | {ip}
            taken = await self._taken_in_etcd(spec)
        raise SystemError_(
            f"no available IPv4 addresses on this network's address pools: {spec.name} ({spec.id})"
        )

    async def _last_address(self, spec: OverlaySpec, container_id: str) -> str:
        """The address the logical container had on the network before it was rescheduled
        here (its old copy's claim went with the dead node's lease)."""
        labels = self.labels_of(container_id)
        swarm_id = labels.get(SWARM_ID_LABEL, "")
        if not swarm_id or not is_replacement(labels):
            return ""  # a first copy had no address before (one etcd read saved per start)
        try:
            entry = await self.kv.get(self.keys.last_address(swarm_id, spec.id))
        except KVError as e:
            raise SystemError_(f"cannot allocate an address on network {spec.name}: {e}") from None
        return entry.value.decode() if entry is not None else ""

    async def _taken_in_etcd(self, spec: OverlaySpec) -> set[str]:
        try:
            claims = await self.kv.get_prefix(self.keys.endpoints_prefix(spec.id))
            kept = await self.kv.get_prefix(self.keys.reservations_prefix(spec.id))
        except KVError as e:
            raise SystemError_(f"cannot allocate an address on network {spec.name}: {e}") from None
        return {self.keys.endpoint_ids(e.key)[1] for e in claims} | {
            self.keys.reservation_ids(e.key)[1] for e in kept
        }

    def _owner(self, container_id: str) -> bytes:
        """A reservation's value: whose it is."""
        return f"{self.node_id}/{container_id}".encode()

    def _kept(self, container_id: str) -> bool:
        """Whether the container's address outlives the lease (it is not fenced: see above)."""
        return not is_reschedulable(self.labels_of(container_id))

    def _record(self, spec: OverlaySpec, req: EndpointRequest, ip: str) -> EndpointRecord:
        return EndpointRecord(
            network_id=spec.id,
            ip=ip,
            mac=mac_for_ip(ip),
            container_id=req.container_id,
            container_name=req.container_name.lstrip("/"),
            aliases=list(req.aliases),
            node_id=self.node_id,
            vtep=self.vtep,
            created_at_ns=time.time_ns(),
        )

    async def _create(self, spec: OverlaySpec, req: EndpointRequest, ip: str, lease: int) -> bool:
        key = self.keys.endpoint(spec.id, ip)
        reservation = self.keys.reservation(spec.id, ip)
        rec = self._record(spec, req, ip)
        puts = [Put(key, rec.SerializeToString(), lease)]
        if self._kept(req.container_id):
            puts.append(Put(reservation, self._owner(req.container_id)))
        swarm_id = self.labels_of(req.container_id).get(SWARM_ID_LABEL, "")
        if swarm_id:
            puts.append(Put(self.keys.last_address(swarm_id, spec.id), ip.encode()))
        # The network must still exist: its removal checks for endpoints in its own
        # transaction, so one of the two fails and no endpoint outlives its network.
        present = Present(self.keys.network(spec.id))
        try:
            created = await self.kv.txn([Absent(key), Absent(reservation), present], puts)
            gone = not created and await self.kv.get(self.keys.network(spec.id)) is None
        except KVError as e:
            raise SystemError_(f"cannot allocate an address on network {spec.name}: {e}") from None
        if gone:
            raise NotFound(f"network {spec.name} not found")
        if created:
            self.view.record_claim(rec)
        return bool(created)

    async def release(self, spec: OverlaySpec, ip: str) -> None:
        """Deletes the claim if it is still this node's (a lost lease may have let another
        container take the address meanwhile)."""
        key = self.keys.endpoint(spec.id, ip)
        try:
            entry = await self.kv.get(key)
            if entry is not None:
                rec = EndpointRecord()
                rec.ParseFromString(entry.value)
                if rec.node_id == self.node_id:
                    await self.kv.compare_and_delete(key, entry.mod_revision)
                    await self._unreserve(spec.id, ip, rec.container_id)
        except KVError as e:
            # The claim dies with the lease if etcd stays away; the next registration's
            # reassert deletes it otherwise.
            log.warning("could not release %s: %s", key, e)

    async def _unreserve(self, net_id: str, ip: str, container_id: str) -> None:
        key = self.keys.reservation(net_id, ip)
        await self.kv.txn([ValueIs(key, self._owner(container_id))], deletes=[key])

    # ------------------------------------------------------------- joining
    async def joined(self, container_id: str, netns_path: str, specs: list[OverlaySpec]) -> None:
        nets = self.joined_nets.setdefault(container_id, [])
        nets += [s.id for s in specs if s.id not in nets]
        await self.peers.program({s.id for s in specs})
        if self.dns is not None:
            await self.dns.serve(container_id, netns_path)

    async def left(self, container_id: str, specs: list[OverlaySpec]) -> None:
        gone = {s.id for s in specs}
        nets = [n for n in self.joined_nets.pop(container_id, []) if n not in gone]
        if nets:
            self.joined_nets[container_id] = nets
        elif self.dns is not None:
            await self.dns.stop(container_id)

    # ------------------------------------------------------------- names (embedded DNS)
    def resolve(self, container_id: str, name: str) -> list[str]:
        return self.view.resolve(self.joined_nets.get(container_id, []), name)

    def reverse(self, container_id: str, ip: str) -> list[str]:
        return self.view.reverse(self.joined_nets.get(container_id, []), ip)

    # ------------------------------------------------------------- after a registration
    async def reassert(
        self, held: Callable[[], list[tuple[OverlaySpec, EndpointRequest, str]]]
    ) -> None:
        """Make etcd's claims and reservations of this node equal `held()`
        (`UserNetworks.held`: the addresses the containers here hold), under the current
        lease; claims being made meanwhile are left alone. Raises KVError (the registration
        hook retries)."""
        lease = self.lease()
        if not lease:
            return
        entries, _ = await self.kv.snapshot(self.keys.endpoints_prefix())
        # Asked only now, with no await since the snapshot: every claim in it is either on a
        # container's record already or still inside claim() (`_claiming`).
        wanted = {
            self.keys.endpoint(spec.id, ip): self._record(spec, req, ip) for spec, req, ip in held()
        }
        claiming = set(self._claiming)
        for entry in entries:
            rec = EndpointRecord()
            rec.ParseFromString(entry.value)
            want = wanted.pop(entry.key, None)
            if rec.node_id == self.node_id and rec.container_id in claiming:
                continue  # made under the current lease by a start in progress
            if want is not None and rec.container_id == want.container_id:
                if entry.lease != lease:
                    await self.kv.txn(
                        [ModRevisionIs(entry.key, entry.mod_revision)],
                        [Put(entry.key, entry.value, lease)],
                    )
            elif want is not None:
                _taken_meanwhile(want, rec.container_id, rec.node_id)
            elif rec.node_id == self.node_id:
                await self.kv.compare_and_delete(entry.key, entry.mod_revision)
        for key, want in wanted.items():
            reservation = self.keys.reservation(want.network_id, want.ip)
            ours = self._owner(want.container_id)
            held_by = await self.kv.get(reservation)
            if held_by is not None and held_by.value != ours:
                _taken_meanwhile(want, *held_by.value.decode().split("/")[::-1])
                continue
            compares: list[Condition] = [Absent(key)]
            compares.append(ValueIs(reservation, ours) if held_by else Absent(reservation))
            puts = [Put(key, want.SerializeToString(), lease)]
            if self._kept(want.container_id) and held_by is None:
                puts.append(Put(reservation, ours))
            await self.kv.txn(compares, puts)
        mine = self.node_id.encode() + b"/"
        reservations = await self.kv.get_prefix(self.keys.reservations_prefix())
        # As above, asked after the read: a start may have claimed since the first one.
        kept = {self.keys.reservation(spec.id, ip) for spec, _, ip in held()}
        claiming = set(self._claiming)
        for entry in reservations:
            if not entry.value.startswith(mine) or entry.key in kept:
                continue
            if entry.value[len(mine) :].decode(errors="replace") in claiming:
                continue
            await self.kv.compare_and_delete(entry.key, entry.mod_revision)


def _taken_meanwhile(want: EndpointRecord, holder: str, node_id: str) -> None:
    log.error(
        "address %s of container %s was taken by %s on node %s while this node was away",
        want.ip,
        want.container_id[:12],
        holder[:12],
        node_id,
    )
