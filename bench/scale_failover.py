"""Mass failover for bench/scale.py: one hollow host (all its nodes) killed hard at once, as a
machine dying, and every reschedulable container it ran followed through etcd and the Engine API.

  detection   = kill → the last of the host's node records gone from etcd (leases expired);
  replacement = kill → the logical record of that container (`logical/<swarm id>` in etcd,
                watched) placed on a node that survived: the manager writes it once the copy
                there is created and started (its `updated_at_ns`, the manager's clock);
                confirmed running by `docker ps` at the end;
  duplicate   = a logical container running twice on surviving nodes at one moment: the
                nodes' own status records (`status/<node>/<cid>`, watched: every change, not a
                sample) during the move, and `docker ps` at the end;
  lost        = a reschedulable container of the victim never replaced, or one on a surviving
                node no longer running at the end.

The status records are watched rather than `docker ps` polled during the move: a listing of
30,000 rows costs the manager (and this client) most of a second of the CPU the move is
measured on, and a poll every few seconds would miss a second copy that ran in between.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from bench import scale_probes as probes
from deploy import dev_hollow
from deploy import devcluster as dc
from proto.keys import Keys
from proto.kv import KV
from proto.records_pb2 import ContainerStatus, LogicalContainer

SETTLE_S = 3.0  # watched after the last replacement: a late second copy would show
WATCH_OPEN_S = 0.5
POLL_S = 0.2  # how often the loop looks whether every container was replaced (no I/O)


@dataclass
class MassFailover:
    host: int
    nodes: int
    reschedulable: int  # on the victim's nodes
    replaced: dict[str, float] = field(default_factory=dict)  # swarm id → seconds
    leases_expired_s: float | None = None
    duplicates: set[str] = field(default_factory=set)
    lost: int = 0
    status_events: int = 0  # status records seen change during the move


def _running_elsewhere(rows: list[dict], victims: set[str]) -> dict[str, list[str]]:
    """swarm id → the surviving nodes it is listed running on."""
    out: dict[str, list[str]] = {}
    for row in rows:
        node = probes.node_of(row)
        sid = (row.get("Labels") or {}).get(probes.SWARM_ID)
        if sid and node not in victims and row.get("State") == "running":
            out.setdefault(sid, []).append(node)
    return out


async def _leases_gone(victims: set[str], t0: float, timeout: float) -> float | None:
    from proto.nodes import list_nodes

    deadline = t0 + timeout
    while time.monotonic() < deadline:
        try:
            names = {n.name for n in await list_nodes([dc.etcd_endpoint()], dc.PREFIX)}
        except Exception:  # noqa: BLE001 - etcd busy: ask again
            names = victims
        if not names & victims:
            return time.monotonic() - t0
        await asyncio.sleep(0.2)
    return None


async def _node_ids(names: set[str]) -> set[str]:
    from proto.nodes import list_nodes

    return {n.id for n in await list_nodes([dc.etcd_endpoint()], dc.PREFIX) if n.name in names}


async def _placed_times(
    kv: KV, targets: set[str], victims_ids: set[str], kill_ns: list[int], out: dict[str, float]
) -> None:
    """Until cancelled: swarm id → seconds from the kill to its record placed off the victims."""
    keys = Keys(dc.PREFIX)
    _, revision = await kv.snapshot(keys.logical_prefix() + "~")  # the revision only
    async for event in kv.watch_prefix(keys.logical_prefix(), revision + 1):
        if event.kind != "put":
            continue
        rec = LogicalContainer.FromString(event.value)
        if (
            rec.swarm_id in targets
            and rec.swarm_id not in out
            and rec.state == "placed"
            and rec.node_id
            and rec.node_id not in victims_ids
        ):
            out[rec.swarm_id] = max(rec.updated_at_ns - kill_ns[0], 0) / 1e9


class RunningCopies:
    """The running copies of each logical container on the nodes not excluded (the victims),
    from status records as they change; `duplicates`: those ever running twice at once."""

    def __init__(self, excluded_nodes: set[str]) -> None:
        self.excluded = excluded_nodes
        self.running: dict[str, set[str]] = {}  # swarm id -> status keys of its running copies
        self.owner: dict[str, str] = {}  # status key -> swarm id
        self.duplicates: set[str] = set()

    def apply(self, node_id: str, key: str, st: ContainerStatus | None) -> None:
        """`st`: the record put at `key` (None: deleted)."""
        sid = self.owner.pop(key, None)
        if sid is not None:
            self.running[sid].discard(key)
        if st is None or node_id in self.excluded:
            return
        sid = st.labels.get(probes.SWARM_ID)
        if sid and st.state == "running":
            self.owner[key] = sid
            copies = self.running.setdefault(sid, set())
            copies.add(key)
            if len(copies) > 1:
                self.duplicates.add(sid)


async def _watch_copies(kv: KV, copies: RunningCopies, res: MassFailover) -> None:
    """Until cancelled: `copies` fed from the status records, from now on."""
    keys = Keys(dc.PREFIX)

    def apply(key: str, value: bytes | None) -> None:
        st = None if value is None else ContainerStatus.FromString(value)
        copies.apply(keys.status_ids(key)[0], key, st)

    entries, revision = await kv.snapshot(keys.status_prefix())
    for e in entries:
        apply(e.key, e.value)
    async for event in kv.watch_prefix(keys.status_prefix(), revision + 1):
        res.status_events += 1
        apply(event.key, event.value if event.kind == "put" else None)


async def mass_failover(host: int, timeout: float) -> MassFailover:
    async with probes.client() as s:
        before = await probes.containers(s, label=probes.RESCHEDULE_LABEL)
        victim_names = set(dev_hollow.host_nodes(host))
        targets = {
            str(r["Labels"][probes.SWARM_ID])
            for r in before
            if probes.node_of(r) in victim_names and r.get("State") == "running"
        }
        elsewhere_before = set(_running_elsewhere(before, victim_names))
        res = MassFailover(host=host, nodes=len(victim_names), reschedulable=len(targets))
        ids = await _node_ids(victim_names)
        # The records' times are the manager's wall clock (the same machine's): from the kill.
        kill_ns = [0]
        copies = RunningCopies(ids)
        kv = await KV.connect([dc.etcd_endpoint()])  # both watches on one client
        watches = [
            asyncio.create_task(_placed_times(kv, targets, ids, kill_ns, res.replaced)),
            asyncio.create_task(_watch_copies(kv, copies, res)),
        ]
        await asyncio.sleep(WATCH_OPEN_S)  # the watches are open before the kill
        kill_ns[0] = time.time_ns()
        t0 = time.monotonic()
        victims = set(dc.kill_hollow(host))
        leases = asyncio.create_task(_leases_gone(victims, t0, timeout))
        try:
            while time.monotonic() - t0 < timeout and len(res.replaced) < len(targets):
                await asyncio.sleep(POLL_S)
            await asyncio.sleep(SETTLE_S)
        finally:
            for task in watches:
                task.cancel()
            await asyncio.gather(*watches, return_exceptions=True)
            await kv.close()
        res.leases_expired_s = await leases
        res.duplicates |= copies.duplicates
        rows = await probes.containers(s, label=probes.RESCHEDULE_LABEL)
        listed = _running_elsewhere(rows, victims)
        res.duplicates |= {sid for sid, nodes in listed.items() if len(nodes) > 1}
        running = set(listed)
        for sid in [sid for sid in res.replaced if sid not in running]:
            del res.replaced[sid]  # placed, but not running at the end: not replaced
        res.lost = len(targets - set(res.replaced)) + len(elsewhere_before - running)
    return res
