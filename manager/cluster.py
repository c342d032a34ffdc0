"""The manager's view of the cluster, kept from etcd: nodes, their agents, where containers are.

`nodes/` and `status/` are read once and then watched from the next revision (KV.watch_prefix
resumes by revision, so nothing is missed across etcd blips). One gRPC channel per node.
Containers the manager just created are remembered until their status record arrives, so a
`docker start` right after `docker create` never races the agent's etcd write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from manager.cluster_records import ClusterRecords
from manager.container_index import ContainerIndex
from manager.container_refs import ContainerRefs
from manager.logical import LogicalStore
from manager.logical_view import LogicalView
from manager.manager_events import ManagerEvents, node_event
from manager.node_images import NodeImages
from manager.scheduler_view import SchedulerView
from proto import agent_pb2 as pb
from proto.agent_pb2_grpc import AgentStub
from proto.docker.errors import DockerError
from proto.keys import Keys
from proto.kv import KV, WatchEvent
from proto.logical import FIRST_GENERATION, PLACED, SWARM_ID_LABEL
from proto.records_pb2 import ContainerDesired, ContainerStatus, LogicalContainer, NodeRecord
from proto.rpc import TlsConfig, agent_client
from proto.rpc_errors import raise_for_rpc_error

log = logging.getLogger(__name__)

T = TypeVar("T")
FANOUT_TIMEOUT_S = 10.0
VALIDATE_CONCURRENCY = 4
# A node that did not answer is asked again after 0.5 s, doubling up to this: nodes that cannot
# be reached must not keep the few validation slots from the ones that can.
VALIDATE_RETRY_MAX_S = 8.0
# Deadline of one unary manager->agent call: a hung agent must never hold a request (or the
# rescheduler) for longer. Streams (attach, logs -f, events, image transfer) pass None and rely
# on gRPC keepalive (proto/rpc.py) instead.
CALL_TIMEOUT_S = 30.0
NodeListener = Callable[[str, str], None]  # (kind "put"|"delete", node id)
# Classic Swarm's own container ID, a label on every container it creates; a valid reference.


@dataclass
class Placement:
    """A container's reservations and host ports, as the scheduler counts them: from the create
    body while it is in flight or its desired record, then from the node's status record."""

    node_id: str
    name: str
    image: str
    labels: dict[str, str] = field(default_factory=dict)
    cpu_shares: int = 0
    nano_cpus: int = 0
    memory: int = 0
    host_ports: list[tuple[str, int, str]] = field(default_factory=list)  # (ip, port, proto)
    network_mode: str = "default"
    seq: int = 0  # creation order through this manager (Docker's Created is in whole seconds)


def placement_from_body(node_id: str, name: str, body: dict[str, Any]) -> Placement:
    host = body.get("HostConfig") or {}
    ports: list[tuple[str, int, str]] = []
    for port, bindings in (host.get("PortBindings") or {}).items():
        for b in bindings or []:
            if isinstance(b, dict) and str(b.get("HostPort") or "").isdigit():
                proto = port.partition("/")[2] or "tcp"
                ports.append((str(b.get("HostIp") or ""), int(b["HostPort"]), proto))
    if host.get("NetworkMode") == "host":
        # Swarm's port filter: a host-mode container takes its exposed ports on the node.
        ports += _exposed_ports(body.get("ExposedPorts"))
    return Placement(
        node_id=node_id,
        name=name,
        image=str(body.get("Image") or ""),
        labels={k: str(v) for k, v in (body.get("Labels") or {}).items()},
        cpu_shares=int(host.get("CpuShares") or 0),
        nano_cpus=int(host.get("NanoCpus") or 0),
        memory=int(host.get("Memory") or 0),
        host_ports=ports,
        network_mode=str(host.get("NetworkMode") or "default"),
    )


def _exposed_ports(exposed: object) -> list[tuple[str, int, str]]:
    ports: list[tuple[str, int, str]] = []
    for key in exposed if isinstance(exposed, dict) else {}:
        port, _, proto = str(key).partition("/")
        if port.isdigit():
            ports.append(("", int(port), (proto or "tcp").lower()))
    return ports


class Cluster(ClusterRecords, LogicalView, ContainerIndex, ContainerRefs):
    def __init__(self, kv: KV, keys: Keys, tls: TlsConfig | None = None) -> None:
        ContainerIndex.__init__(self)  # statuses, placements, pending and their indexes
        self.kv = kv
        self.keys = keys
        self.tls = tls
        self.nodes: dict[str, NodeRecord] = {}
        # members/: every node that joined, also while its lease is gone (Unhealthy in info).
        self.members: dict[str, NodeRecord] = {}
        self.validated: set[str] = set()  # nodes that answered since they (re)registered
        self.node_listeners: list[NodeListener] = []
        self.logical = LogicalStore(kv, keys, known=self.logical_copy)
        self.events = ManagerEvents()
        self.logical_records: dict[str, LogicalContainer] = {}  # logical/, watched
        self.logical_revisions: dict[str, int] = {}
        self.logical_seen = 0  # the revision the logical/ view is up to (logical_caught_up)
        self.logical_advanced = asyncio.Event()
        self.moving: set[str] = set()
        self.node_names: dict[str, str] = {}  # every node seen, also after it left: errors name it
        self.node_images = NodeImages(kv, keys)  # images/, watched
        # Swarm ids of the creates under way here: their `placing` intent is theirs to finish,
        # not the rescheduler's to resolve (manager/create_intent.py), which this wakes.
        self.creating: set[str] = set()
        self.intent_left: Callable[[], None] = lambda: None
        self.schedule_lock = asyncio.Lock()
        self._stubs: dict[str, tuple[str, AgentStub]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Future[None]] = set()
        self._next_pending = 0
        self._node_order: list[str] | None = None  # sorted_nodes()'s, until a node comes or goes
        # A restarted manager meets 1,000 nodes at once: their first calls (a TLS handshake
        # each) go a few at a time, beside the requests it answers from etcd meanwhile.
        self._validating = asyncio.Semaphore(VALIDATE_CONCURRENCY)
        self.scheduler_view = SchedulerView(self)
        self.ready = asyncio.Event()

    # ----------------------------------------------------------------- etcd view
    async def start(self) -> None:
        # The prefixes are read at once (each at its own revision, watched from there on).
        keys = self.keys
        (
            (desired_entries, _),
            (node_entries, node_rev),
            (status_entries, status_rev),
            (member_entries, member_rev),
            (logical_entries, logical_rev),
            (image_entries, image_rev),
        ) = await asyncio.gather(
            *(
                self.kv.snapshot(prefix, keys_only=prefix == keys.containers_prefix())
                for prefix in (
                    keys.containers_prefix(),
                    keys.nodes_prefix(),
                    keys.status_prefix(),
                    keys.members_prefix(),
                    keys.logical_prefix(),
                    keys.images_prefix(),
                )
            )
        )
        self.node_images.load(image_entries, image_rev)
        for e in logical_entries:
            try:
                self._apply_logical(WatchEvent("put", e.key, e.value, e.mod_revision))
            except Exception:  # noqa: BLE001 - a corrupt record must not hide the others
                log.warning("unreadable logical record %s", e.key)
        self.logical_seen = logical_rev
        for e in member_entries:
            self._apply_member(WatchEvent("put", e.key, e.value, e.mod_revision))
        for e in node_entries:
            self._apply_node(WatchEvent("put", e.key, e.value, e.mod_revision))
        statuses = [
            (keys.status_ids(e.key)[1], ContainerStatus.FromString(e.value)) for e in status_entries
        ]
        desired = await self._desired_needed(
            {keys.container_id(e.key) for e in desired_entries}, statuses
        )
        for cid, st in statuses:
            raw = desired.pop(cid, None)
            if raw is not None:
                self._load_desired(raw)
            self._set_status(cid, st)
        for raw in desired.values():
            self._load_desired(raw)
        for cid in [c for c in self.placements if c not in self.statuses]:
            # Desired record of a container that no longer exists anywhere.
            name = self.placements.pop(cid).name
            await self.record_removed(cid, name)
        self._tasks = [
            asyncio.create_task(
                self._watch(self.keys.nodes_prefix(), node_rev + 1, self._apply_node),
                name="watch-nodes",
            ),
            asyncio.create_task(
                self._watch(self.keys.status_prefix(), status_rev + 1, self._apply_status),
                name="watch-status",
            ),
            asyncio.create_task(
                self._watch(self.keys.members_prefix(), member_rev + 1, self._apply_member),
                name="watch-members",
            ),
            asyncio.create_task(
                self._watch(self.keys.logical_prefix(), logical_rev + 1, self._apply_logical),
                name="watch-logical",
            ),
            asyncio.create_task(
                self._watch(self.keys.images_prefix(), image_rev + 1, self.node_images.apply),
                name="watch-images",
            ),
        ]
        self.ready.set()

    async def _desired_needed(
        self, desired_ids: set[str], statuses: list[tuple[str, ContainerStatus]]
    ) -> dict[str, bytes]:
        """The desired records (create bodies) start-up needs, by container ID: those of
        containers no node reports yet, and of those whose status is not enough — it carries
        the node's HostConfig (reservations, bindings), all the view needs but for a
        host-network container's exposed ports (in the body's Config). At rest that is
        none: 30,000 bodies were read and parsed only to be dropped."""
        reported = set()
        need = set()
        for cid, st in statuses:
            reported.add(cid)
            if cid in desired_ids and (not st.host_config_json or b'"host"' in st.host_config_json):
                need.add(cid)
        need |= desired_ids - reported
        if not need:
            return {}
        entries, _ = await self.kv.snapshot(self.keys.containers_prefix())
        return {cid: e.value for e in entries if (cid := self.keys.container_id(e.key)) in need}

    def _load_desired(self, raw: bytes) -> None:
        """Our placement of a container from its desired record (the create body)."""
        desired = ContainerDesired()
        desired.ParseFromString(raw)
        try:
            body = json.loads(desired.spec_json or b"{}")
        except ValueError:
            body = {}
        self.placements[desired.id] = placement_from_body(
            desired.node_id, desired.name, body if isinstance(body, dict) else {}
        )

    async def close(self) -> None:
        for fut in self._background:
            fut.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for _, stub in self._stubs.values():
            await stub.channel.close()  # type: ignore[attr-defined]
        self._stubs.clear()

    async def _watch(self, prefix: str, start: int, apply: Callable[[WatchEvent], None]) -> None:
        async for event in self.kv.watch_prefix(prefix, start):
            try:
                apply(event)
            except Exception:  # noqa: BLE001 - one bad record must not stop the view
                log.exception("cannot apply %s %s", event.kind, event.key)

    def _apply_node(self, event: WatchEvent) -> None:
        node_id = self.keys.node_id(event.key)
        if event.kind == "delete":
            gone = self.nodes.pop(node_id, None)
            self._node_order = None
            self.validated.discard(node_id)
            self._drop_stub(node_id)
            if gone is not None and self.ready.is_set():
                self.events.publish(node_event(gone, "engine_disconnect"))
            self._notify("delete", node_id)
            return
        rec = NodeRecord()
        rec.ParseFromString(event.value)
        previous = self.nodes.get(node_id)
        self.nodes[node_id] = rec
        if previous is None or previous.name != rec.name:
            self._node_order = None
        self.node_changed(node_id)
        self.node_names[node_id] = rec.name
        old = self._stubs.get(node_id)
        if old is not None and old[0] != rec.addr:
            self._drop_stub(node_id)
        if previous is None and self.ready.is_set():
            self.events.publish(node_event(rec, "engine_connect"))
        if previous is None or previous.started_at_ns != rec.started_at_ns:
            self.validated.discard(node_id)
            if self.ready.is_set():  # the nodes found at start: `validate_nodes`
                self._spawn(self._validate(node_id))
            self._notify("put", node_id)

    def _notify(self, kind: str, node_id: str) -> None:
        for listener in self.node_listeners:
            try:
                listener(kind, node_id)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the view
                log.exception("node listener failed on %s %s", kind, node_id)

    def validate_nodes(self) -> None:
        """Validate the nodes found at start. Called once the manager serves: a restarted
        manager at 1,000 nodes would otherwise set up 1,000 TLS channels while it builds its
        first `docker ps` (manager/main.py), and only `docker info`'s Healthy waits on them."""
        for node_id in self.nodes:
            if node_id not in self.validated:
                self._spawn(self._validate(node_id))

    async def _validate(self, node_id: str) -> None:
        """Pending until the node's agent first answers (classic Swarm validates a new engine
        with /info before it counts it Healthy)."""
        retry_s = 0.5
        while node_id in self.nodes:
            try:
                async with self._validating:
                    await self.call(node_id, lambda s: s.Ping(pb.PingRequest()), timeout=2.0)
            except DockerError:
                await asyncio.sleep(retry_s)
                retry_s = min(2 * retry_s, VALIDATE_RETRY_MAX_S)
                continue
            self.validated.add(node_id)
            return

    def _apply_member(self, event: WatchEvent) -> None:
        node_id = self.keys.member_id(event.key)
        if event.kind == "delete":
            self.members.pop(node_id, None)
            return
        rec = NodeRecord()
        rec.ParseFromString(event.value)
        self.members[node_id] = rec
        self.node_names.setdefault(node_id, rec.name)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _drop_stub(self, node_id: str) -> None:
        old = self._stubs.pop(node_id, None)
        if old is not None:
            asyncio.get_running_loop().create_task(old[1].channel.close())  # type: ignore[attr-defined]

    def is_known(self, cid: str) -> bool:
        return cid in self.statuses or cid in self.placements

    def name_of(self, cid: str) -> str:
        st = self.statuses.get(cid)
        if st is not None:
            return st.name
        placed = self.placements.get(cid)
        return placed.name if placed is not None else ""

    def _apply_status(self, event: WatchEvent) -> None:
        _, cid = self.keys.status_ids(event.key)
        if event.kind == "delete":
            name = self.name_of(cid)
            swarm_id = self.swarm_id_of(cid)
            self.statuses.pop(cid, None)
            self.placements.pop(cid, None)
            if self.ready.is_set() and not self._moved_away(swarm_id, cid):
                # Removed on the node (`--rm`, or behind our back): its records go too (the
                # logical one only while it still names this container, not a replacement).
                self._spawn(self.record_removed(cid, name, swarm_id))
            return
        self._set_status(cid, ContainerStatus.FromString(event.value))

    def _moved_away(self, swarm_id: str, cid: str) -> bool:
        """The copy `cid` is one a reschedule moved its container away from: the move's own
        transaction gave the name and the desired record to the new copy and removed this
        one's (manager/rescheduler.py), so its status going leaves nothing to remove; at
        1,000 moves that was 3,000 etcd round trips for nothing."""
        rec = self.logical_records.get(swarm_id) if swarm_id else None
        if rec is None or rec.container_id == cid:
            return False
        if rec.state == PLACED:
            return rec.generation > FIRST_GENERATION
        return rec.previous_container_id == cid

    def _set_status(self, cid: str, st: ContainerStatus) -> None:
        self.statuses[cid] = st
        placed = self.placements.get(cid)
        if st.host_config_json:
            # The node's word on reservations and ports wins: it follows `docker update` and
            # covers containers created without this manager.
            try:
                host = json.loads(st.host_config_json)
            except ValueError:
                host = {}
            body = {"Image": st.image, "Labels": dict(st.labels), "HostConfig": host}
            fresh = placement_from_body(st.node_id, st.name, body if isinstance(host, dict) else {})
            if placed is not None:
                fresh.seq = placed.seq
                if fresh.network_mode == "host":
                    # The status record has no Config: the exposed ports come from the create.
                    fresh.host_ports = list(placed.host_ports)
            self.placements[cid] = fresh
        elif placed is not None:
            placed.name = st.name
            self.changed(cid)

    # ----------------------------------------------------------------- nodes and agents
    def sorted_nodes(self) -> list[NodeRecord]:
        """Live nodes as classic Swarm sorts engines."""
        return [self.nodes[n] for n in self.node_order()]

    def node_order(self) -> list[str]:
        """IDs of the live nodes as classic Swarm sorts engines: the same list object until a
        node comes, goes or is renamed (sorting 1,000 names per create would cost more than the
        create's own decision)."""
        order = self._node_order
        if order is None or len(order) != len(self.nodes):
            order = sorted(self.nodes, key=lambda n: (natural_key(self.nodes[n].name), n))
            self._node_order = order
        return order

    def node_name(self, node_id: str) -> str:
        """A node's name, also after it left (its ID when never seen)."""
        return self.node_names.get(node_id, node_id)

    def node_by_name(self, name: str) -> NodeRecord | None:
        for rec in self.nodes.values():
            if rec.name == name or rec.id == name:
                return rec
        return None

    def stub(self, node_id: str) -> AgentStub:
        rec = self.nodes.get(node_id)
        if rec is None:
            raise DockerError(f"node {node_id} is not available", 503)
        cached = self._stubs.get(node_id)
        if cached is not None and cached[0] == rec.addr:
            return cached[1]
        stub = agent_client(rec.addr, self.tls)
        self._stubs[node_id] = (rec.addr, stub)
        return stub

    async def call(
        self,
        node_id: str,
        fn: Callable[[AgentStub], Awaitable[T]],
        timeout: float | None = CALL_TIMEOUT_S,
    ) -> T:
        """One agent RPC; its failure becomes the DockerError the agent meant. `timeout`: its
        deadline (None only for calls that last by nature: wait, image transfers)."""
        try:
            async with asyncio.timeout(timeout):
                return await fn(self.stub(node_id))
        except grpc.RpcError as e:
            raise raise_for_rpc_error(e) from None
        except TimeoutError:
            name = self.node_names.get(node_id, node_id)
            raise DockerError(f"node {name} did not answer within {timeout:g}s", 504) from None
        except asyncio.CancelledError:
            if not channel_closed():
                raise
            name = self.node_names.get(node_id, node_id)
            raise DockerError(f"node {name} is not available: it left the cluster", 503) from None

    async def fan_out(
        self,
        fn: Callable[[AgentStub], Awaitable[T]],
        node_ids: list[str] | None = None,
        timeout: float = FANOUT_TIMEOUT_S,
    ) -> list[tuple[NodeRecord, T | BaseException]]:
        """`fn` on every (or the given) node concurrently; results or errors per node, each
        node bounded by `timeout`."""
        recs = [self.nodes[n] for n in node_ids or [] if n in self.nodes] if node_ids else None
        recs = recs if recs is not None else self.sorted_nodes()

        async def one(rec: NodeRecord) -> T:
            async with asyncio.timeout(timeout):
                return await self.call(rec.id, fn)

        results = await asyncio.gather(*(one(r) for r in recs), return_exceptions=True)
        return list(zip(recs, results, strict=True))

    # ----------------------------------------------------------------- containers
    def container_node(self, cid: str) -> str | None:
        st = self.statuses.get(cid)
        if st is not None:
            return st.node_id
        placed = self.placements.get(cid)
        return placed.node_id if placed is not None else None

    def pending_names(self) -> set[str]:
        return {p.name for p in self.pending.values() if p.name}

    def add_pending(self, placement: Placement) -> int:
        self._next_pending += 1
        self.pending[self._next_pending] = placement
        return self._next_pending

    def created(self, placement: Placement, cid: str) -> None:
        self._next_pending += 1
        placement.seq = self._next_pending
        self.placements[cid] = placement

    def creation_seq(self, cid: str) -> int:
        placed = self.placements.get(cid)
        return placed.seq if placed is not None else 0

    def forget(self, cid: str) -> None:
        self.placements.pop(cid, None)
        self.statuses.pop(cid, None)

    def renamed(self, cid: str, name: str) -> None:
        """The node renamed `cid`: the view follows before its status record says so."""
        for held in (self.placements.get(cid), self.statuses.get(cid)):
            if held is not None:
                held.name = name
        self.changed(cid)

    def _labels_of(self, cid: str) -> Mapping[str, str]:
        st = self.statuses.get(cid)
        if st is not None:
            return st.labels  # read-only here; no copy (called per container on every lookup)
        placed = self.placements.get(cid)
        return placed.labels if placed is not None else {}

    def swarm_id_of(self, cid: str) -> str:
        return self._labels_of(cid).get(SWARM_ID_LABEL, "")

    def containers_on(
        self, node_id: str
    ) -> list[tuple[str, ContainerStatus | None, Placement | None]]:
        """(id, status, placement) of every container known on the node: reported ones first,
        then our creates not reported yet, then creates in flight."""
        reported: list[tuple[str, ContainerStatus | None, Placement | None]] = []
        ours: list[tuple[str, ContainerStatus | None, Placement | None]] = []
        for cid in self.ids_on(node_id):
            st = self.statuses.get(cid)
            (reported if st is not None else ours).append((cid, st, self.placements.get(cid)))
        in_flight = [(f"pending-{t}", None, p) for t, p in self.pending_on(node_id)]
        return reported + ours + in_flight


def channel_closed() -> bool:
    """Whether a CancelledError the current task just caught came from a gRPC call whose
    channel was closed under it (a node that left: `_drop_stub`), not from cancelling the task.
    grpc.aio ends such calls with CancelledError, which would otherwise end whatever task made
    the call as if it had been cancelled (the rescheduler's, silently)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


def natural_key(name: str) -> tuple[Any, ...]:
    """node-2 before node-10, as classic Swarm sorts engines."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))
