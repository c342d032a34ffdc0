"""The fence deadline and its extension decision (agent/fencing.py), with a fake clock and fake
peers; the stale-copy and create-idempotency decisions (agent/identity.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from agent.fencing import Fence, FenceFile, PeerAnswer, may_extend
from agent.identity import (
    GENERATION_LABEL,
    SWARM_ID_LABEL,
    is_stale,
    reclaim_copies,
    same_generation,
)
from agent.metrics import AgentMetrics
from proto.keys import Keys
from proto.kv import Entry
from proto.records_pb2 import LogicalContainer

S = 1_000_000_000
TTL, GUARD, HB = 3.0, 0.25, 0.5


class Clock:
    def __init__(self) -> None:
        self.ns = 1000 * S

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * S)


class Peers:
    """Fake PeerEtcdStatus answers: None = no answer."""

    def __init__(self, answers: dict[str, bool | None]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def ask(self, peer_id: str, addr: str) -> PeerAnswer | None:
        self.asked.append(peer_id)
        reachable = self.answers.get(peer_id)
        return None if reachable is None else PeerAnswer(peer_id, reachable, 1500)


def make(tmp_path: Any, peers: Peers) -> tuple[Fence, Clock, AgentMetrics]:
    clock = Clock()
    metrics = AgentMetrics()
    fence = Fence(
        FenceFile(os.path.join(str(tmp_path), "fence")),
        TTL,
        GUARD,
        HB,
        metrics=metrics,
        ask=peers.ask,
        clock=clock,
    )
    fence.peers = {p: f"10.0.0.{i}:4243" for i, p in enumerate(peers.answers)}
    fence.start()
    return fence, clock, metrics


def file_deadline(fence: Fence) -> int:
    with open(fence.file.path) as f:
        return int(f.read())


def test_may_extend_only_when_every_peer_answers_unreachable() -> None:
    down = PeerAnswer("b", False, 2000)
    up = PeerAnswer("c", True, 100)
    assert may_extend(["b"], {"b": down})
    assert may_extend(["b", "c"], {"b": down, "c": PeerAnswer("c", False, 900)})
    assert not may_extend(["b", "c"], {"b": down, "c": up})  # someone reaches etcd: cut off
    assert not may_extend(["b", "c"], {"b": down, "c": None})  # a silent peer: cannot tell
    assert not may_extend([], {})  # alone: cannot tell


def test_renewal_sets_deadline_from_send_time(tmp_path: Any) -> None:
    fence, clock, _ = make(tmp_path, Peers({}))
    assert file_deadline(fence) == 0  # nothing renewed yet: no grace at all
    sent = clock()
    clock.advance(0.2)  # the keep-alive took 200 ms
    fence.renewed(sent)
    assert file_deadline(fence) == sent + int((TTL - GUARD) * S)
    # An older send never moves the deadline back.
    fence.renewed(sent - S)
    assert file_deadline(fence) == sent + int((TTL - GUARD) * S)


async def test_etcd_down_for_everyone_extends(tmp_path: Any) -> None:
    peers = Peers({"b": False, "c": False})
    fence, clock, metrics = make(tmp_path, peers)
    fence.renewed(clock())
    before = file_deadline(fence)
    clock.advance(1.0)
    fence.failed()
    assert await fence.check_peers()
    assert sorted(peers.asked) == ["b", "c"]
    assert file_deadline(fence) == clock() + int((TTL - GUARD) * S) > before
    assert metrics.peer_checks.labels("unreachable")._value.get() == 2


@pytest.mark.parametrize(
    "answers",
    [{"b": False, "c": True}, {"b": False, "c": None}, {}],
    ids=["peer-reaches-etcd", "peer-silent", "no-peers"],
)
async def test_cut_off_lets_the_deadline_run_out(tmp_path: Any, answers: dict) -> None:
    fence, clock, metrics = make(tmp_path, Peers(answers))
    fence.renewed(clock())
    before = file_deadline(fence)
    clock.advance(1.0)
    fence.failed()
    assert not await fence.check_peers()
    assert file_deadline(fence) == before
    clock.advance(TTL)
    fence._count_expiry()
    assert metrics.fence_actions.labels("lease")._value.get() == 1
    assert fence.remaining_s() < 0


def test_status_answers_peers(tmp_path: Any) -> None:
    fence, clock, _ = make(tmp_path, Peers({}))
    assert fence.status() == (False, -1)  # never renewed
    fence.renewed(clock())
    clock.advance(0.3)
    assert fence.status() == (True, 300)
    clock.advance(2 * HB)  # a late keep-alive (a busy node) is no evidence etcd is down
    assert fence.status()[0] is True
    clock.advance(TTL - GUARD - 0.3 - 2 * HB + 0.01)  # none for longer than the fence allows
    assert fence.status()[0] is False
    fence.renewed(clock())
    fence.failed()
    assert fence.status()[0] is False


async def test_stop_fences_now_and_nothing_extends_after(tmp_path: Any) -> None:
    fence, clock, metrics = make(tmp_path, Peers({"b": False}))
    fence.renewed(clock())
    fence.fence_now()
    assert file_deadline(fence) == clock()
    clock.advance(0.1)
    fence.renewed(clock())
    assert not await fence.check_peers()
    assert file_deadline(fence) < clock()
    assert metrics.fence_actions.labels("stop")._value.get() == 1


def test_deadline_file_survives_agent_restart_not_reboot(tmp_path: Any) -> None:
    path = os.path.join(str(tmp_path), "fence")
    first = FenceFile(path)
    first.write(time.clock_gettime_ns(time.CLOCK_BOOTTIME) + 5 * S)
    again = FenceFile(path)
    again.load()
    assert again.deadline_ns == first.deadline_ns  # same boot: the shims honour it
    booted_at = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    os.utime(path, (booted_at - 60, booted_at - 60))  # written before this boot
    again.load()
    assert again.deadline_ns == 0
    with open(path) as f:
        assert f.read().strip() == "0"


def test_guard_must_leave_a_heartbeat(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="fence guard"):
        Fence(FenceFile(os.path.join(str(tmp_path), "fence")), 3, 2.6, 0.5)


def logical(node: str, cid: str) -> LogicalContainer:
    return LogicalContainer(
        swarm_id="s1", generation=2, state="placed", node_id=node, container_id=cid
    )


def test_stale_copy_decision() -> None:
    assert not is_stale(None, "n1", "c1")  # no record: not made by a manager
    assert is_stale(None, "n1", "c1", fenced=True)  # fenced, then removed while away
    assert not is_stale(logical("n1", "c1"), "n1", "c1")
    assert is_stale(logical("n2", "c9"), "n1", "c1")  # replaced on another node
    assert is_stale(logical("n1", "c2"), "n1", "c1")  # replaced here by another container
    assert not is_stale(logical("n1", ""), "n1", "c1")  # being placed here: maybe this one


@dataclass
class Rec:
    id: str
    body: dict[str, Any] = field(default_factory=dict)
    fenced: bool = False
    running: bool = False


class FakeRuntime:
    def __init__(self, recs: list[Rec]) -> None:
        self.recs = recs
        self.started: list[str] = []

    def list(self) -> list[Rec]:
        return self.recs

    async def start(self, ref: str) -> None:
        self.started.append(ref)

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        raise AssertionError("not used")


class FakeKV:
    """etcd's mod revisions and compare-and-swap, in memory; `meanwhile` runs just before the
    next swap (another writer between this reader's read and its write)."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, int]] = {}
        self.rev = 0
        self.meanwhile: Callable[[], None] | None = None

    def put(self, key: str, value: bytes) -> None:
        self.rev += 1
        self.data[key] = (value, self.rev)

    async def get(self, key: str) -> Entry | None:
        if key not in self.data:
            return None
        value, rev = self.data[key]
        return Entry(key, value, rev, rev, 0)

    async def compare_and_swap(self, key: str, value: bytes, mod_revision: int) -> bool:
        if self.meanwhile is not None:
            self.meanwhile()
            self.meanwhile = None
        if key not in self.data or self.data[key][1] != mod_revision:
            return False
        self.put(key, value)
        return True


async def test_copies_not_replaced_yet_are_kept_here() -> None:
    keys = Keys("/t")
    labels = {"Labels": {SWARM_ID_LABEL: "s1", GENERATION_LABEL: "2"}}
    kv = FakeKV()

    def record(state: str = "placed", node: str = "n1", start: bool = True) -> bytes:
        rec = logical(node, "c1")
        rec.state, rec.start = state, start
        if state != "placed":  # being rescheduled away from `node`
            rec.node_id, rec.container_id = "", ""
            rec.previous_node_id, rec.previous_container_id = node, "c1"
        return rec.SerializeToString()

    async def kept(value: bytes, fenced: bool = False, running: bool = False) -> list[str]:
        kv.put(keys.logical("s1"), value)
        rt = FakeRuntime([Rec("c1", labels, fenced=fenced, running=running), Rec("c2", {})])
        out = await reclaim_copies(rt, kv, keys, "n1")  # type: ignore[arg-type]
        if out:  # the record names this copy again, placed here
            now = LogicalContainer()
            now.ParseFromString(kv.data[keys.logical("s1")][0])
            assert (now.state, now.node_id, now.container_id) == ("placed", "n1", "c1")
            assert not now.previous_node_id
        return out if rt.started == out or not rt.started else ["started?"]

    # Fenced while its record still names it: placed here again and started.
    assert await kept(record(), fenced=True) == ["c1"]
    assert await kept(record(state="failed"), fenced=True) == ["c1"]
    assert await kept(record(state="pending"), fenced=True) == ["c1"]
    # Running while its node's lease ran out (not fenced): placed here again, left running.
    assert await kept(record(state="failed"), running=True) == ["c1"]
    # Nothing to keep: fine as it is, exited on its own, stopped on purpose, or replaced.
    assert await kept(record(), running=True) == []
    assert await kept(record()) == []
    assert await kept(record(start=False), fenced=True) == []
    assert await kept(record(node="n2"), fenced=True) == []
    assert await kept(record(state="failed", node="n2"), running=True) == []
    assert await kept(record(state="placing", node="n1"), running=True) == []
    # The manager places it elsewhere between this read and this write: its swap wins.
    kv.meanwhile = lambda: kv.put(keys.logical("s1"), record(state="placing", node="n2"))
    assert await kept(record(state="failed"), fenced=True) == []


def test_create_is_idempotent_by_swarm_id_and_generation() -> None:
    rt = FakeRuntime(
        [Rec("a", {"Labels": {SWARM_ID_LABEL: "s1", GENERATION_LABEL: "1"}}), Rec("b", {})]
    )
    same = {"Labels": {SWARM_ID_LABEL: "s1", GENERATION_LABEL: "1"}}
    assert same_generation(rt, same) == "a"
    assert same_generation(rt, {"Labels": {SWARM_ID_LABEL: "s1", GENERATION_LABEL: "2"}}) is None
    assert same_generation(rt, {"Labels": {SWARM_ID_LABEL: "s1"}}) is None
    assert same_generation(rt, {"Labels": None}) is None


def test_replacements_wait_a_ttl_after_this_node_said_etcd_was_unreachable(tmp_path: Any) -> None:
    fence, clock, _ = make(tmp_path, Peers({}))
    fence.renewed(clock())
    assert fence.status()[0] is True
    assert fence.replacement_hold_s() == 0  # never said unreachable
    fence.failed()
    assert fence.status()[0] is False  # a peer may extend its deadline on this answer
    assert fence.replacement_hold_s() == pytest.approx(TTL)
    clock.advance(TTL - 1)
    assert fence.replacement_hold_s() == pytest.approx(1)
    clock.advance(1)
    assert fence.replacement_hold_s() == 0
