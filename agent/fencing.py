"""The node fence (docs/failover.md "Agent side"): the deadline after which the shims of this
node's reschedulable containers kill them, because this node's etcd lease may have expired and
the manager may start their replacements elsewhere.

The deadline is a CLOCK_BOOTTIME time in ns (monotonic, and it counts a suspended host's sleep,
which CLOCK_MONOTONIC does not: the lease runs out in etcd meanwhile), written to
`<data root>/fence` (the file the runtime puts in each such shim's spec; runtime/shim/fence.c
reads it every 100 ms):

- after each successful keep-alive (and lease grant): the time the request was SENT + TTL − guard,
  which is before etcd can expire the lease (etcd restarts the TTL when it receives the request);
- when keep-alives fail: extended the same way from the time the peers were asked, only if every
  other node last seen in `nodes/` answered `PeerEtcdStatus` and none of them reaches etcd (etcd
  is down for everyone, so no lease can expire); otherwise it runs out (this node is cut off);
- on SIGTERM: now (`fence_now`), before the lease is revoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.metrics import AgentMetrics
from proto import agent_pb2 as pb
from proto.rpc import TlsConfig, agent_client

log = logging.getLogger(__name__)

FENCE_FILE = "fence"

Clock = Callable[[], int]  # CLOCK_BOOTTIME ns


def now_ns() -> int:
    """The fence clock (the shims read the same one)."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


@dataclass(frozen=True)
class PeerAnswer:
    node_id: str
    etcd_reachable: bool
    last_keepalive_age_ms: int


def may_extend(peers: list[str], answers: dict[str, PeerAnswer | None]) -> bool:
    """Whether a node that cannot reach etcd may extend its fence: only when every other known
    node answered and none of them reaches etcd. A node with no peers cannot tell, so it fences."""
    if not peers:
        return False
    return all(answers.get(p) is not None and not answers[p].etcd_reachable for p in peers)  # type: ignore[union-attr]


class FenceFile:
    """The deadline file. Written on the event loop on purpose: a few bytes and a rename (no
    fsync: the deadline is meaningless after a reboot anyway, and the agent rewrites it at
    start), so a busy worker-thread pool (a long `docker load`) can never delay it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.deadline_ns = 0

    def load(self) -> None:
        """Read the deadline left by an earlier agent of this boot; otherwise write 0."""
        booted_at = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        try:
            with open(self.path) as f:
                deadline_ns = int(f.read().strip())
            fresh = os.stat(self.path).st_mtime > booted_at
        except (OSError, ValueError):
            deadline_ns, fresh = 0, False
        if fresh:
            self.deadline_ns = deadline_ns
        else:
            self.write(0)

    def write(self, deadline_ns: int) -> None:
        tmp = f"{self.path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, f"{deadline_ns}\n".encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self.deadline_ns = deadline_ns


class Fence:
    """Keeps the fence deadline. `Registration` reports keep-alives (`renewed`, `failed`); `run`
    asks the peers while they fail; the PeerEtcdStatus RPC answers from `status`."""

    def __init__(
        self,
        file: FenceFile,
        ttl_s: float,
        guard_s: float,
        heartbeat_s: float,
        metrics: AgentMetrics | None = None,
        ask: Callable[[str, str], Awaitable[PeerAnswer | None]] | None = None,
        clock: Clock = now_ns,
    ) -> None:
        if not 0 <= guard_s < ttl_s - heartbeat_s:
            raise ValueError(
                f"fence guard ({guard_s}s) must be at least 0 and leave more than one heartbeat "
                f"({heartbeat_s}s) of the TTL ({ttl_s}s)"
            )
        self.file = file
        self.window_ns = int((ttl_s - guard_s) * 1e9)
        self.ttl_ns = int(ttl_s * 1e9)
        self.heartbeat_s = heartbeat_s
        self.metrics = metrics or AgentMetrics()
        # The other nodes of the last `nodes/` range read (node id -> address), set by
        # Registration: the ones asked when keep-alives fail.
        self.peers: dict[str, str] = {}
        self.ask = ask
        self.clock = clock
        self.last_ok_ns = -1  # fence-clock ns of the last successful keep-alive; -1: never
        self.last_attempt_ok = False
        # When this node last told a peer it cannot reach etcd: that peer may have extended its
        # own deadline on the strength of it (fence-clock ns; -1: never).
        self.told_unreachable_ns = -1
        self.fenced = False  # fence_now was called: nothing extends the deadline any more
        self._expiry_counted = False
        self.metrics.fence_remaining.set_function(self.remaining_s)

    # ------------------------------------------------------------- fed by Registration

    def renewed(self, sent_ns: int) -> bool:
        """A keep-alive (or lease grant) sent at `sent_ns` succeeded. True when the deadline
        had passed before it: the shims have fenced this node's reschedulable containers."""
        lapsed = self.lapsed()
        self.last_ok_ns = self.clock()
        self.last_attempt_ok = True
        self._extend(sent_ns + self.window_ns)
        return lapsed

    def lapsed(self) -> bool:
        """The deadline has passed (and the agent is not leaving)."""
        return not self.fenced and 0 < self.file.deadline_ns < self.clock()

    def holding(self) -> bool:
        """The deadline is ahead (and the agent is not leaving): containers here may run."""
        return not self.fenced and self.file.deadline_ns > self.clock()

    def failed(self) -> None:
        self.last_attempt_ok = False

    # ------------------------------------------------------------- peers

    def status(self) -> tuple[bool, int]:
        """(reaches etcd, ms since the last successful keep-alive or -1) for PeerEtcdStatus."""
        now = self.clock()
        if self.last_ok_ns < 0:
            self.told_unreachable_ns = now
            return False, -1
        age_ns = now - self.last_ok_ns
        # "Unreachable" lets a cut-off asker extend its deadline, so it is said only on evidence:
        # a failed keep-alive, or none succeeding for as long as this node's own fence allows
        # (a hung one). A keep-alive that is merely late under load still says reachable.
        reachable = self.last_attempt_ok and age_ns <= self.window_ns
        if not reachable:
            self.told_unreachable_ns = now
        return reachable, age_ns // 1_000_000

    def replacement_hold_s(self) -> float:
        """How long a replacement must still wait before it starts here. A peer that asked
        while this node could not reach etcd may have extended its deadline by up to TTL −
        guard from then, though its lease ran out in etcd (which the manager, and only the
        manager, still reached): its copies may run until a TTL after the answer."""
        if self.told_unreachable_ns < 0:
            return 0.0
        return max(self.told_unreachable_ns + self.ttl_ns - self.clock(), 0) / 1e9

    def renewing(self) -> bool:
        """Keep-alives are succeeding on schedule."""
        if self.last_ok_ns < 0 or not self.last_attempt_ok:
            return False
        return self.clock() - self.last_ok_ns <= int(1.5 * self.heartbeat_s * 1e9)

    async def check_peers(self) -> bool:
        """Keep-alives are failing: ask every other known node; extend if etcd is down for all."""
        if self.fenced or self.ask is None:
            return False
        peers = dict(self.peers)
        sent_ns = self.clock()
        ids = sorted(peers)
        results = await asyncio.gather(*(self.ask(i, peers[i]) for i in ids))
        answers = dict(zip(ids, results, strict=True))
        for i in ids:
            self.metrics.peer_checks.labels(_outcome(answers[i])).inc()
        if not may_extend(ids, answers):
            log.warning(
                "cannot reach etcd and %s: fence deadline not extended",
                "no peers to ask" if not ids else "some peer reaches etcd or did not answer",
            )
            return False
        log.warning("etcd is down for every node (%d peers): fence deadline extended", len(ids))
        self._extend(sent_ns + self.window_ns)
        return True

    async def run(self) -> None:
        """While keep-alives fail, ask the peers once per heartbeat."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            self._count_expiry()
            if self.last_ok_ns >= 0 and not self.renewing():
                try:
                    await self.check_peers()
                except Exception:
                    log.exception("peer check failed")

    # ------------------------------------------------------------- deadline

    def start(self) -> None:
        """At agent start: keep a deadline an agent of this boot wrote (its containers' shims
        still honour it: a quick agent restart fences nothing), drop one from before a reboot
        (the clock restarted, so its number means nothing now)."""
        self.file.load()
        self.metrics.fence_deadline.set(self.file.deadline_ns / 1e9)

    def fence_now(self) -> None:
        """The agent leaves: the shims kill their containers at their next check."""
        self.fenced = True
        now = self.clock()
        self.file.write(now)
        self.metrics.fence_deadline.set(now / 1e9)
        self.metrics.fence_actions.labels("stop").inc()

    def remaining_s(self) -> float:
        """Seconds until the shims fence (negative once passed; 0 before the first renewal)."""
        if not self.file.deadline_ns:
            return 0.0
        return (self.file.deadline_ns - self.clock()) / 1e9

    def _count_expiry(self) -> None:
        if not self._expiry_counted and self.lapsed():
            # The shims of reschedulable containers are killing them now.
            self._expiry_counted = True
            self.metrics.fence_actions.labels("lease").inc()
            log.warning("fence deadline passed: reschedulable containers are being killed")

    def _extend(self, deadline_ns: int) -> None:
        if self.fenced or deadline_ns <= self.file.deadline_ns:
            return
        self._count_expiry()  # passed before this renewal came: its shims have fenced
        self._expiry_counted = False
        self.file.write(deadline_ns)
        self.metrics.fence_deadline.set(deadline_ns / 1e9)


def _outcome(answer: PeerAnswer | None) -> str:
    if answer is None:
        return "no_answer"
    return "reachable" if answer.etcd_reachable else "unreachable"


class PeerClient:
    """Asks other agents PeerEtcdStatus, one cached channel per peer, each call with a deadline."""

    def __init__(self, node_id: str, timeout_s: float, tls: TlsConfig | None = None) -> None:
        self.node_id = node_id
        self.timeout_s = timeout_s
        self.tls = tls
        self._stubs: dict[str, tuple[str, object]] = {}

    async def ask(self, peer_id: str, addr: str) -> PeerAnswer | None:
        cached = self._stubs.get(peer_id)
        if cached is None or cached[0] != addr:
            if cached is not None:
                await cached[1].channel.close()  # type: ignore[attr-defined]
            cached = (addr, agent_client(addr, self.tls))
            self._stubs[peer_id] = cached
        stub = cached[1]
        try:
            reply = await stub.PeerEtcdStatus(  # type: ignore[attr-defined]
                pb.PeerEtcdStatusRequest(asking_node_id=self.node_id), timeout=self.timeout_s
            )
        except Exception as e:  # any failure is "did not answer"
            log.info("peer %s (%s) did not answer: %s", peer_id, addr, e)
            # Its channel goes: a channel left to a dead or unreachable peer redials it every
            # second in the background (proto/rpc.py's back-off), and a node that lost etcd in
            # a 1,000-node cluster would go on dialling hundreds of them long after.
            await self._drop(peer_id)
            return None
        if reply.node_id != peer_id:
            return None  # someone else lives at that address now
        return PeerAnswer(reply.node_id, reply.etcd_reachable, reply.last_keepalive_age_ms)

    async def _drop(self, peer_id: str) -> None:
        cached = self._stubs.pop(peer_id, None)
        if cached is not None:
            with contextlib.suppress(Exception):
                await cached[1].channel.close()  # type: ignore[attr-defined]

    async def close(self) -> None:
        for _, stub in self._stubs.values():
            with contextlib.suppress(Exception):
                await stub.channel.close()  # type: ignore[attr-defined]
        self._stubs.clear()
