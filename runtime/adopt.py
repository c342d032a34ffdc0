"""Re-adoption after the runtime restarts (`Runtime.open`, see docs/runtime.md).

Every record is loaded; a container whose shim is still alive is adopted (a new pidfd, its
health monitor re-attached), one whose shim is gone is marked exited with the code in
`exit.json` (or 255) and torn down. Then the leftovers of a crash between two steps go (bundles
without a record, cgroups and network state of containers not running), and containers whose
restart policy asks for it are started (never fenced ones; reschedulable ones, when the runtime
has a fence file, only by the agent after its stale-copy check). This is the start-up half of
`Runtime` and works on its internals (records, shim watching, teardown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from typing import TYPE_CHECKING

from proto.docker.errors import DockerError, NotFound
from runtime import fence, restart, shim
from runtime.record import ContainerRecord
from runtime.timefmt import now_ns

if TYPE_CHECKING:
    from runtime.containers import Runtime

log = logging.getLogger(__name__)


async def reopen(rt: Runtime) -> None:
    """`Runtime.open`: load every container, re-adopt running ones, clean up what a crash left
    behind, then restart the containers whose policy asks for it."""
    await asyncio.to_thread(shim.shim_binary)
    live_cgroups = set(await asyncio.to_thread(rt.cgroups.list_ids))
    for cid in sorted(os.listdir(rt.paths.containers)):
        bundle = rt.paths.container(cid)
        try:
            rec = ContainerRecord.load(bundle)
        except (FileNotFoundError, ValueError):
            log.warning("removing half-created container %s", cid)
            await asyncio.to_thread(shutil.rmtree, bundle, True)
            await asyncio.to_thread(rt.cgroups.remove, cid)
            continue
        rt._records[cid] = rec
        with contextlib.suppress(NotFound):
            rt.images.hold_layers(cid, rec.image_id)
        live_cgroups.discard(cid)
    # All records first: tearing down a stopped container's user network looks at every
    # container still attached to that network.
    for rec in list(rt._records.values()):
        await _reconcile(rt, rec)
    for cid in live_cgroups:
        await asyncio.to_thread(rt.cgroups.remove, cid)
    await asyncio.to_thread(rt._prep.remove_stale_network)
    rt.deferred_boot = []
    for rec in list(rt._records.values()):
        was_running = rec.status in ("running", "paused", "restarting")
        if (
            not rec.running
            and not rec.fenced
            and rec.has_been_started
            and restart.restart_on_boot(rt._policy(rec)[0], rec.manually_stopped, was_running)
        ):
            if rt.fence_path and fence.is_reschedulable(rec.body.get("Labels") or {}):
                # It may have been started elsewhere meanwhile: the agent starts it only once
                # etcd says this is still its copy (agent/stale.py).
                rt.deferred_boot.append(rec.id)
                continue
            with contextlib.suppress(DockerError):
                await rt.start(rec.id)


async def _reconcile(rt: Runtime, rec: ContainerRecord) -> None:
    bundle = rt.paths.container(rec.id)
    if rec.running and rec.shim_pid and _is_our_shim(rec.shim_pid, bundle):
        rt._watch(rec)
        with contextlib.suppress(DockerError):  # e.g. its image config is gone
            rt._health.watch(rec, fresh=False)
        try:
            await rt.user_nets.rejoin(rec)
        except DockerError as err:
            log.warning("container %s: user networks not served again: %s", rec.id, err)
        return
    if rec.running or rec.status == "restarting":
        exit_info = shim.read_exit(os.path.join(bundle, "exit.json"))
        rec.exit_code = int(exit_info["exit_code"]) if exit_info else 255
        fence.apply_exit(rec, exit_info)
        rec.finished_ns = now_ns()
        rec.status = "exited"
        rec.pid = rec.shim_pid = 0
    await rt._prep.teardown(rec)
    rec.save(bundle)


def _is_our_shim(pid: int, bundle: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    return any(a == bundle.encode() for a in args) and b"flotilla-shim" in args[0]
