"""The `Drill` RPC: on an agent started with `flotilla join --allow-drills`, inject a fault on
this host — kill, crash, freeze, partition, etcd-outage — that is always undone after a bounded
time (agent/drill_faults.py: MAX_DURATION_S).

- kill: the agent SIGKILLs itself (its containers keep running until their shims fence them).
- crash: every container process of this node (its cgroup parent) and every shim die, then the
  agent. Nothing here can undo kill or crash: whatever supervises the agent (systemd's
  Restart=always on real nodes, `flotilla dev heal` on the dev cluster) starts it again.
- freeze: the agent SIGSTOPs itself; a watchdog process started first sends SIGCONT.
- partition: iptables drops everything in, out and through this host's network namespace but
  loopback; the watchdog removes the rules.
- etcd-outage: iptables drops this host's connections to its etcd endpoints (the other hosts
  still reach etcd: this host is cut off from etcd only); the watchdog removes the rules.

The reply is sent before the fault starts: every fault is injected REPLY_S after the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from agent import drill_faults as faults
from agent.service_base import ServiceBase, rpc
from proto import agent_pb2 as pb
from proto.docker.errors import DockerError, InvalidParameter

log = logging.getLogger("agent.service")

REPLY_S = 0.2  # time for the reply to leave before the agent stops or dies


@dataclass
class DrillSettings:
    """What the Drill RPC needs from `flotilla join`."""

    allowed: bool = False
    etcd_endpoints: list[str] = field(default_factory=list)


class DrillsMixin(ServiceBase):
    """Drill."""

    drill_settings: DrillSettings = DrillSettings()

    @rpc
    async def Drill(self, request: pb.DrillRequest, context: Any) -> pb.DrillReply:
        if not self.drill_settings.allowed:
            raise DockerError(
                "drills are disabled on this node: start its agent with "
                "`flotilla join --allow-drills`",
                403,
            )
        kind = request.kind
        if kind not in faults.KINDS:
            raise InvalidParameter(
                f"invalid drill kind {kind!r}: expected one of {', '.join(faults.KINDS)}"
            )
        duration = faults.bounded_duration(request.duration_ms / 1000)
        # Every fault starts REPLY_S after this call, once the reply has left: a partition would
        # hold the reply back until it ends, a freeze or a kill would lose it.
        started = time.time_ns() + int(REPLY_S * 1e9)
        undo = started + int(duration * 1e9)
        if kind == "freeze":
            faults.start_watchdog(REPLY_S + duration, cont_pid=os.getpid())
            _later(lambda: os.kill(os.getpid(), signal.SIGSTOP))
        elif kind in ("partition", "etcd-outage"):
            if shutil.which("iptables") is None:
                raise DockerError(f"cannot inject {kind}: iptables is not installed", 500)
            rules = (
                faults.partition_rules()
                if kind == "partition"
                else await asyncio.to_thread(faults.etcd_rules, self.drill_settings.etcd_endpoints)
            )
            # The watchdog first: once the rules are in, nothing else is needed to remove them.
            faults.start_watchdog(REPLY_S + duration, rules=rules)
            _later(lambda: _in_thread(faults.add_rules, rules))
        elif kind == "kill":
            undo = 0
            _later(lambda: os.kill(os.getpid(), signal.SIGKILL))
        else:  # crash
            undo = 0
            _later(self._crash_host)
        log.warning("drill %s: injected in %.1fs for %.1fs", kind, REPLY_S, duration)
        return pb.DrillReply(kind=kind, started_at_ns=started, undo_at_ns=undo)

    def _crash_host(self) -> None:
        """Everything of this node dies at once, as if the host lost power: shims, container
        processes, then the agent (SIGKILL, no clean-up)."""
        faults.kill_pids(r.shim_pid for r in self.rt.list() if r.running and r.shim_pid)
        for top in self.rt.cgroups.dirs(""):  # no container id: the node's parent cgroups
            with contextlib.suppress(OSError):
                faults.kill_cgroup_tree(top)
        os.kill(os.getpid(), signal.SIGKILL)


_background: set[asyncio.Future[Any]] = set()  # keeps the fault's thread job referenced


def _later(fn: Any) -> None:
    asyncio.get_running_loop().call_later(REPLY_S, fn)


def _in_thread(fn: Any, *args: Any) -> None:
    """Run a blocking fault injection off the event loop; its failure is logged."""
    job = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    _background.add(job)

    def done(f: asyncio.Future[Any]) -> None:
        _background.discard(f)
        if not f.cancelled() and f.exception() is not None:
            log.error("drill: injecting the fault failed: %s", f.exception())

    job.add_done_callback(done)
