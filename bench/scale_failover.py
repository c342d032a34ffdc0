"""Mass failover for bench/scale.py: one hollow host (all its nodes) killed hard at once, as a
machine dying, and every reschedulable container it ran followed through the Engine API.

  detection   = kill → the last of the host's node records gone from etcd (leases expired);
  replacement = kill → the logical record of that container (`logical/<swarm id>` in etcd,
                watched) placed on a node that survived: the manager writes it once the copy
                there is created and started (its `updated_at_ns`, the manager's clock);
                confirmed running by `docker ps` at the end;
  duplicate   = a logical container listed running twice on surviving nodes at one listing
                (`docker ps` every LIST_S during the move, and at the end);
  lost        = a reschedulable container of the victim never replaced, or one on a surviving
                node no longer running at the end.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from bench import scale_probes as probes
from deploy import dev_hollow
from deploy import devcluster as dc

SETTLE_S = 3.0  # listings kept after the last replacement: a late second copy would show
# Between two duplicate checks: a listing of 30,000 rows costs the manager most of a second of
# CPU, which the rescheduling it measures needs (the times come from etcd, not from these).
LIST_S = 3.0
WATCH_OPEN_S = 0.5


@dataclass
class MassFailover:
    host: int
    nodes: int
    reschedulable: int  # on the victim's nodes
    replaced: dict[str, float] = field(default_factory=dict)  # swarm id → seconds
    leases_expired_s: float | None = None
    duplicates: set[str] = field(default_factory=set)
    lost: int = 0
    polls: int = 0


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


POLL_S = 0.5  # between two listings: a replacement's time is known within this + one listing


async def _node_ids(names: set[str]) -> set[str]:
    from proto.nodes import list_nodes

    return {n.id for n in await list_nodes([dc.etcd_endpoint()], dc.PREFIX) if n.name in names}


async def _placed_times(
    targets: set[str], victims_ids: set[str], kill_ns: list[int], out: dict[str, float]
) -> None:
    """Until cancelled: swarm id → seconds from the kill to its record placed off the victims."""
    from proto.keys import Keys
    from proto.kv import KV
    from proto.records_pb2 import LogicalContainer

    kv = await KV.connect([dc.etcd_endpoint()])
    keys = Keys(dc.PREFIX)
    try:
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
    finally:
        await kv.close()


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
        placed = asyncio.create_task(_placed_times(targets, ids, kill_ns, res.replaced))
        await asyncio.sleep(WATCH_OPEN_S)  # the watch is open before the kill
        kill_ns[0] = time.time_ns()
        t0 = time.monotonic()
        victims = set(dc.kill_hollow(host))
        leases = asyncio.create_task(_leases_gone(victims, t0, timeout))
        done_at: float | None = None
        rows: list[dict] = []
        try:
            while time.monotonic() - t0 < timeout:
                if len(res.replaced) == len(targets):
                    done_at = done_at or time.monotonic()
                try:
                    rows = await probes.containers(s, label=probes.RESCHEDULE_LABEL)
                except (probes.ApiError, OSError) as e:
                    print(f"  ps during failover: {e}", flush=True)
                    await asyncio.sleep(0.2)
                    continue
                res.polls += 1
                for sid, nodes in _running_elsewhere(rows, victims).items():
                    if len(nodes) > 1:
                        res.duplicates.add(sid)
                if done_at is not None and time.monotonic() - done_at >= SETTLE_S:
                    break
                await asyncio.sleep(LIST_S)
        finally:
            placed.cancel()
            await asyncio.gather(placed, return_exceptions=True)
        res.leases_expired_s = await leases
        running = set(_running_elsewhere(rows, victims))
        for sid in [sid for sid in res.replaced if sid not in running]:
            del res.replaced[sid]  # placed, but not running at the end: not replaced
        res.lost = len(targets - set(res.replaced)) + len(elsewhere_before - running)
    return res
