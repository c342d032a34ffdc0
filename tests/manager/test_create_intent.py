"""A `docker create`'s records (manager/create_intent.py) on a real etcd with fake agents: the
intent written before the node is asked, the commit after it, the intent dropped on a refusal,
and what the rescheduler does with an intent a crashed manager left (adopt, drop, wait)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from manager.cluster import placement_from_body
from manager.cluster_records import conflict_message
from manager.create_intent import create_on_node, resolve, write_intent
from manager.logical import is_create_intent, with_generation
from manager.rescheduler import Rescheduler
from proto import agent_pb2 as pb
from proto.docker.errors import Conflict, DockerError
from proto.kv import KV
from proto.logical import FIRST_GENERATION, PLACED, PLACING, SWARM_ID_LABEL
from proto.records_pb2 import ContainerDesired, LogicalContainer
from tests.manager.test_rescheduler import FakeAgent, FakeCluster, world

__all__ = ["world"]  # the fixture, shared with test_rescheduler.py

World = tuple[KV, FakeCluster, Rescheduler]


class Agent(FakeAgent):
    """A fake agent that can refuse, hang or remove, and records what etcd held when asked."""

    refuse: DockerError | None = None
    hold: asyncio.Event | None = None
    seen_at_create: list[tuple[LogicalContainer | None, bytes | None]]
    removed: list[str]
    cluster: FakeCluster

    async def ContainerCreate(  # noqa: N802
        self, req: pb.ContainerCreateRequest, wait_for_ready: bool = False
    ) -> pb.ContainerCreateReply:
        sid = json.loads(req.json)["Labels"][SWARM_ID_LABEL]
        found = await self.cluster.logical.get(sid)
        claim = await self.cluster.kv.get(self.cluster.keys.name(req.name)) if req.name else None
        self.seen_at_create.append((found[0] if found else None, claim.value if claim else None))
        if self.hold is not None:
            await self.hold.wait()
        if self.refuse is not None:
            raise self.refuse
        return await super().ContainerCreate(req, wait_for_ready)

    async def ContainerRemove(self, req: pb.ContainerRemoveRequest) -> pb.Empty:  # noqa: N802
        self.containers.pop(req.id, None)
        self.removed.append(req.id)
        return pb.Empty()


def _agents(cluster: FakeCluster) -> dict[str, Agent]:
    for node_id in ("n1", "n2"):
        agent = Agent(node_id)
        agent.seen_at_create, agent.removed, agent.cluster = [], [], cluster
        cluster.agents[node_id] = agent
    return cluster.agents  # type: ignore[return-value]


def _body(cluster: FakeCluster, swarm_id: str = "") -> dict[str, Any]:
    labels = {SWARM_ID_LABEL: swarm_id} if swarm_id else {}
    body = cluster.with_swarm_id({"Image": "busybox", "Labels": labels})
    return with_generation(body, FIRST_GENERATION)


async def _create(cluster: FakeCluster, node_id: str, name: str, body: dict[str, Any]) -> str:
    token = cluster.add_pending(placement_from_body(node_id, name, body))
    cid, _ = await create_on_node(cluster, node_id, token, name, body)
    return cid


async def _record(cluster: FakeCluster, body: dict[str, Any]) -> tuple[LogicalContainer, int]:
    found = await cluster.logical.get(body["Labels"][SWARM_ID_LABEL])
    assert found is not None
    return found


async def _claim(kv: KV, cluster: FakeCluster, name: str) -> bytes | None:
    entry = await kv.get(cluster.keys.name(name))
    return entry.value if entry is not None else None


async def test_intent_before_the_node_then_one_commit(world: World) -> None:
    kv, cluster, _ = world
    agents = _agents(cluster)
    body = _body(cluster)
    cid = await _create(cluster, "n1", "web", body)
    # When the node was asked, the name was claimed and the record said `placing` there.
    [(intent, claim)] = agents["n1"].seen_at_create
    assert agents["n1"].waited_for_ready == [True]  # a channel still connecting is waited for
    assert intent is not None and claim == b""
    assert (intent.state, intent.node_id, intent.container_id) == (PLACING, "n1", "")
    assert intent.name == "web" and intent.generation == FIRST_GENERATION
    assert is_create_intent(intent)
    rec, rev = await _record(cluster, body)
    assert (rec.state, rec.node_id, rec.container_id, rec.name) == (PLACED, "n1", cid, "web")
    assert not rec.start
    assert await _claim(kv, cluster, "web") == cid.encode()
    desired = await kv.get(cluster.keys.container(cid))
    assert desired is not None
    assert ContainerDesired.FromString(desired.value).node_id == "n1"
    # Written in one transaction: the three keys share its revision.
    name_entry = await kv.get(cluster.keys.name("web"))
    assert name_entry is not None and name_entry.mod_revision == rev == desired.mod_revision


async def test_refused_create_leaves_nothing(world: World) -> None:
    kv, cluster, _ = world
    agents = _agents(cluster)
    agents["n1"].refuse = DockerError("No such image: nope:latest", 404)
    body = _body(cluster)
    with pytest.raises(DockerError, match="No such image"):
        await _create(cluster, "n1", "img", body)
    assert await cluster.logical.get(body["Labels"][SWARM_ID_LABEL]) is None
    assert await _claim(kv, cluster, "img") is None
    assert cluster.pending == {} and cluster.creating == set()
    agents["n1"].refuse = None
    await _create(cluster, "n1", "img", _body(cluster))  # the name is free


async def test_unknown_outcome_keeps_the_intent(world: World) -> None:
    """No answer in time: the node may have made it, so the intent stays for `resolve`."""
    kv, cluster, resched = world
    agents = _agents(cluster)
    agents["n1"].refuse = DockerError("node n1 did not answer within 30s", 504)
    body = _body(cluster)
    with pytest.raises(DockerError):
        await _create(cluster, "n1", "slow", body)
    rec, _ = await _record(cluster, body)
    assert rec.state == PLACING and await _claim(kv, cluster, "slow") == b""
    resched.intent_settle_ns = 0
    await resched.step()  # the node has no such container: dropped with its claim
    assert await cluster.logical.get(body["Labels"][SWARM_ID_LABEL]) is None
    assert await _claim(kv, cluster, "slow") is None
    assert len(agents["n1"].creates) == 0


async def test_name_held_by_a_live_container_or_a_stale_claim(world: World) -> None:
    kv, cluster, _ = world
    _agents(cluster)
    cid = await _create(cluster, "n1", "db", _body(cluster))
    body = _body(cluster)
    with pytest.raises(Conflict) as err:
        await write_intent(cluster, "db", "n2", body)
    assert err.value.message == conflict_message("db", cid)
    assert await cluster.logical.get(body["Labels"][SWARM_ID_LABEL]) is None  # nothing written
    # A claim whose holder is gone (left by a crash, or removed behind our back) is taken over.
    await kv.put(cluster.keys.name("old"), b"f" * 64)
    intent = await write_intent(cluster, "old", "n2", body)
    assert intent.record is not None and await _claim(kv, cluster, "old") == b""


async def test_client_swarm_id_of_a_live_container_keeps_its_record(world: World) -> None:
    kv, cluster, _ = world
    _agents(cluster)
    first = _body(cluster)
    sid = first["Labels"][SWARM_ID_LABEL]
    older = await _create(cluster, "n1", "a", first)
    newer = await _create(cluster, "n2", "b", _body(cluster, sid))
    rec, _ = await _record(cluster, first)
    assert (rec.container_id, rec.name) == (older, "a")  # the older container stays the identity
    assert await _claim(kv, cluster, "b") == newer.encode()
    assert await kv.get(cluster.keys.container(newer)) is not None


async def test_crash_after_the_node_created_it_adopts(world: World) -> None:
    kv, cluster, resched = world
    agents = _agents(cluster)
    body = _body(cluster)
    await write_intent(cluster, "api", "n2", body)  # then the manager died...
    made = await agents["n2"].ContainerCreate(  # ...after the node made it
        pb.ContainerCreateRequest(json=json.dumps(body).encode(), name="api")
    )
    await resched.step()
    rec, _ = await _record(cluster, body)
    assert (rec.state, rec.container_id, rec.node_id) == (PLACED, made.id, "n2")
    assert await _claim(kv, cluster, "api") == made.id.encode()
    assert await kv.get(cluster.keys.container(made.id)) is not None
    assert len(agents["n2"].creates) == 1 and agents["n2"].started == []  # never made again


async def test_crash_before_the_node_was_asked_drops_after_settling(world: World) -> None:
    kv, cluster, resched = world
    agents = _agents(cluster)
    body = _body(cluster)
    await write_intent(cluster, "gone", "n1", body)
    await resched.step()  # a create under it could still be running: nothing decided yet
    rec, _ = await _record(cluster, body)
    assert rec.state == PLACING and await _claim(kv, cluster, "gone") == b""
    resched.intent_settle_ns = 0
    await resched.step()
    assert await cluster.logical.get(body["Labels"][SWARM_ID_LABEL]) is None
    assert await _claim(kv, cluster, "gone") is None
    assert agents["n1"].creates == [] and agents["n2"].creates == []  # not made for the user


class Silent(Agent):
    async def ContainerList(self, req: pb.ContainerListRequest) -> pb.ContainerListReply:  # noqa: N802
        raise DockerError("node n1 is not available", 503)


async def test_a_node_that_cannot_be_asked_decides_nothing(world: World) -> None:
    kv, cluster, resched = world
    _agents(cluster)
    resched.intent_settle_ns = 0
    body = _body(cluster)
    await write_intent(cluster, "wait", "n1", body)
    silent = Silent("n1")
    silent.seen_at_create, silent.removed, silent.cluster = [], [], cluster
    cluster.agents["n1"] = silent
    await resched.step()
    assert (await _record(cluster, body))[0].state == PLACING
    await kv.delete(cluster.keys.node("n1"))  # its node gone: kept, never failed nor moved
    while "n1" in cluster.nodes:
        await asyncio.sleep(0.05)
    await resched.step()
    rec, _ = await _record(cluster, body)
    assert (rec.state, rec.node_id) == (PLACING, "n1")
    assert await _claim(kv, cluster, "wait") == b""
    assert cluster.agents["n2"].creates == []


async def test_a_create_under_way_is_not_resolved(world: World) -> None:
    _, cluster, resched = world
    agents = _agents(cluster)
    resched.intent_settle_ns = 0
    agents["n1"].hold = asyncio.Event()
    body = _body(cluster)
    create = asyncio.create_task(_create(cluster, "n1", "busy", body))
    while not agents["n1"].seen_at_create:
        await asyncio.sleep(0.01)
    await resched.step()  # the intent is this manager's own create in flight
    assert (await _record(cluster, body))[0].state == PLACING
    agents["n1"].hold.set()
    cid = await create
    rec, _ = await _record(cluster, body)
    assert (rec.state, rec.container_id) == (PLACED, cid)
    assert len(agents["n1"].creates) == 1


async def test_intent_whose_name_was_taken_over_removes_its_container(world: World) -> None:
    kv, cluster, _ = world
    agents = _agents(cluster)
    body = _body(cluster)
    await write_intent(cluster, "dup", "n1", body)  # crashed after the node made it
    orphan = await agents["n1"].ContainerCreate(
        pb.ContainerCreateRequest(json=json.dumps(body).encode(), name="dup")
    )
    newer = await _create(cluster, "n2", "dup", _body(cluster))  # took the stale claim over
    rec, rev = await _record(cluster, body)
    await resolve(cluster, rec, rev, settle_ns=0)
    assert agents["n1"].removed == [orphan.id]
    assert await cluster.logical.get(body["Labels"][SWARM_ID_LABEL]) is None
    assert await _claim(kv, cluster, "dup") == newer.encode()
