"""Mass failover for bench/scale.py: one hollow host (all its nodes) killed hard at once, as a
machine dying, and every reschedulable container it ran followed through the Engine API.

  detection   = kill → the last of the host's node records gone from etcd (leases expired);
  replacement = kill → a copy of the same logical container (same com.docker.swarm.id) listed
                running on a node that survived (polled `docker ps`, so within one listing);
  duplicate   = a logical container listed running twice on surviving nodes at one listing;
  lost        = a reschedulable container of the victim never replaced, or one on a surviving
                node no longer running at the end.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from bench import scale_probes as probes
from deploy import devcluster as dc

SETTLE_S = 3.0  # listings kept after the last replacement: a late second copy would show


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


async def mass_failover(host: int, timeout: float) -> MassFailover:
    async with probes.client() as s:
        before = await probes.containers(s, label=probes.RESCHEDULE_LABEL)
        t0 = time.monotonic()
        victims = set(dc.kill_hollow(host))
        targets = {
            str(r["Labels"][probes.SWARM_ID])
            for r in before
            if probes.node_of(r) in victims and r.get("State") == "running"
        }
        elsewhere_before = set(_running_elsewhere(before, victims))
        res = MassFailover(host=host, nodes=len(victims), reschedulable=len(targets))
        leases = asyncio.create_task(_leases_gone(victims, t0, timeout))
        done_at: float | None = None
        rows: list[dict] = []
        while time.monotonic() - t0 < timeout:
            try:
                rows = await probes.containers(s, label=probes.RESCHEDULE_LABEL)
            except (probes.ApiError, OSError) as e:
                print(f"  ps during failover: {e}", flush=True)
                await asyncio.sleep(0.2)
                continue
            now = time.monotonic() - t0
            res.polls += 1
            running = _running_elsewhere(rows, victims)
            for sid, nodes in running.items():
                if len(nodes) > 1:
                    res.duplicates.add(sid)
                if sid in targets and sid not in res.replaced:
                    res.replaced[sid] = now
            if len(res.replaced) == len(targets):
                done_at = done_at or time.monotonic()
                if time.monotonic() - done_at >= SETTLE_S:
                    break
            # A listing of 30,000 rows costs the manager ~0.1 s of CPU: polled back to back,
            # the bench would take CPU the rescheduling it measures needs.
            await asyncio.sleep(POLL_S)
        res.leases_expired_s = await leases
        running = set(_running_elsewhere(rows, victims))
        res.lost = len(targets - set(res.replaced)) + len(elsewhere_before - running)
    return res
