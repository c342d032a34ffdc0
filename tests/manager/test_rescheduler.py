"""The rescheduler's state machine on a real etcd, with fake agents (no dev cluster): placed ->
failed -> placing -> placed, pending until a node fits, resume of a `placing` record, and the
policy and the logical records written by the manager."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from manager.cluster import Cluster, placement_from_body
from manager.create_intent import create_on_node
from manager.logical import POLICY_LABEL, is_reschedulable, with_generation
from manager.metrics import Metrics
from manager.rescheduler import Rescheduler
from manager.scheduler import Scheduler, parse_placement
from proto import agent_pb2 as pb
from proto.keys import Keys
from proto.kv import KV
from proto.logical import (
    FAILED,
    FIRST_GENERATION,
    GENERATION_LABEL,
    PENDING,
    PLACED,
    PLACING,
    SWARM_ID_LABEL,
)
from proto.records_pb2 import ContainerStatus, LogicalContainer, NodeImages, NodeRecord

DEADLINE_S = 20.0


@dataclass
class FakeAgent:
    """The RPCs the rescheduler and the scheduler's view use, on an in-memory node."""

    node_id: str
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)
    creates: list[dict[str, Any]] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    lists: int = 0  # ContainerList calls
    waited_for_ready: list[bool] = field(default_factory=list)  # each create's gRPC flag

    async def ImageList(self, req: pb.ImageListRequest) -> pb.JsonReply:  # noqa: N802
        return pb.JsonReply(json=json.dumps([{"Id": "sha256:bb", "RepoTags": ["busybox:latest"]}]))

    async def Ping(self, req: pb.PingRequest) -> pb.PingReply:  # noqa: N802
        return pb.PingReply(version="test")

    async def ContainerList(self, req: pb.ContainerListRequest) -> pb.ContainerListReply:  # noqa: N802
        self.lists += 1
        rows = [json.dumps(c).encode() for c in self.containers.values()]
        return pb.ContainerListReply(rows=rows)

    async def ContainerCreate(  # noqa: N802
        self, req: pb.ContainerCreateRequest, wait_for_ready: bool = False
    ) -> pb.ContainerCreateReply:
        body = json.loads(req.json)
        cid = f"{self.node_id}-{len(self.creates)}".ljust(64, "0")
        self.creates.append(body)
        self.waited_for_ready.append(wait_for_ready)
        self.containers[cid] = {"Id": cid, "Names": [f"/{req.name}"], "Labels": body["Labels"]}
        if req.start:
            self.started.append(cid)
        return pb.ContainerCreateReply(id=cid, started=req.start)

    async def ContainerStart(self, req: pb.ContainerStartRequest) -> pb.Empty:  # noqa: N802
        self.started.append(req.id)
        return pb.Empty()


class FakeCluster(Cluster):
    agents: dict[str, FakeAgent]

    def stub(self, node_id: str) -> Any:  # noqa: ANN401 - a FakeAgent stands for the stub
        if node_id not in self.nodes:
            from proto.docker.errors import DockerError

            raise DockerError(f"node {node_id} is not available", 503)
        return self.agents[node_id]


async def _until(check: Callable[[], Any], what: str) -> Any:  # noqa: ANN401
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def world(etcd: Any) -> AsyncIterator[tuple[KV, FakeCluster, Rescheduler]]:  # noqa: ANN401
    kv = await KV.connect([etcd.endpoint])
    keys = Keys("/t")
    for i in (1, 2):
        await _put_node(kv, keys, f"n{i}")
    cluster = FakeCluster(kv, keys)
    cluster.agents = {"n1": FakeAgent("n1"), "n2": FakeAgent("n2")}
    await cluster.start()
    resched = Rescheduler(cluster, lambda: Scheduler("spread"), 0.2, Metrics())
    try:
        yield kv, cluster, resched
    finally:
        await resched.close()
        await cluster.close()
        await kv.close()


async def _put_node(kv: KV, keys: Keys, node_id: str, images: bool = True) -> None:
    """A node, with busybox in its images record unless `images` is False."""
    if images:
        rows = [{"Id": "sha256:bb", "RepoTags": ["busybox:latest"]}]
        record = NodeImages(node_id=node_id, images_json=json.dumps(rows).encode())
        await kv.put(keys.images(node_id), record.SerializeToString())
    rec = NodeRecord(
        id=node_id,
        name=node_id,
        addr="127.0.0.1:1",
        ncpu=2,
        memory_bytes=1 << 30,
        started_at_ns=time.time_ns(),
    )
    await kv.put(keys.node(node_id), rec.SerializeToString())
    await kv.put(keys.member(node_id), rec.SerializeToString())


async def _place_on(
    cluster: FakeCluster, node_id: str, name: str, env: list[str], state: str = "running"
) -> tuple[str, str]:
    """A container as the create path leaves it (its intent, the agent's create, the commit),
    with the status record its agent writes."""
    body = parse_placement({"Image": "busybox", "Env": env, "Labels": {}})
    body = with_generation(cluster.with_swarm_id(body), FIRST_GENERATION)
    token = cluster.add_pending(placement_from_body(node_id, name, body))
    cid, _ = await create_on_node(cluster, node_id, token, name, body)
    st = ContainerStatus(
        id=cid, node_id=node_id, name=name, image="busybox", state=state, labels=body["Labels"]
    )
    await cluster.kv.put(cluster.keys.status(node_id, cid), st.SerializeToString())
    sid = body["Labels"][SWARM_ID_LABEL]
    await cluster.logical.set_start(sid, cid, True)
    return sid, cid


async def _logical(cluster: FakeCluster, sid: str) -> LogicalContainer:
    found = await cluster.logical.get(sid)
    assert found is not None
    return found[0]


def test_policy_from_label() -> None:
    assert is_reschedulable({POLICY_LABEL: '["on-node-failure"]'})
    assert not is_reschedulable({POLICY_LABEL: '["off"]'})
    assert not is_reschedulable({POLICY_LABEL: "not json"})
    assert not is_reschedulable({})
    body = parse_placement({"Env": ["reschedule:on-node-failure", "A=1"]})
    assert body["Env"] == ["A=1"]
    assert is_reschedulable(body["Labels"])


async def test_failed_node_reschedules_once(world: tuple[KV, FakeCluster, Rescheduler]) -> None:
    kv, cluster, resched = world
    sid, old = await _place_on(cluster, "n1", "web", ["reschedule:on-node-failure"])
    keep_sid, keep = await _place_on(cluster, "n1", "plain", [])
    rec = await _logical(cluster, sid)
    assert (rec.state, rec.node_id, rec.container_id, rec.generation) == (PLACED, "n1", old, 1)
    assert rec.reschedule and rec.start
    resched.start()
    await kv.delete(cluster.keys.node("n1"))

    async def placed() -> LogicalContainer | None:
        r = await _logical(cluster, sid)
        return r if r.state == PLACED and r.node_id == "n2" else None

    rec = await _until(placed, "web placed on n2")
    assert rec.generation == 2 and rec.name == "web"
    n2 = cluster.agents["n2"]
    assert len(n2.creates) == 1
    # Chosen by this manager and never asked for before: no listing of n2 to look for a copy.
    assert n2.lists == 0
    labels = n2.creates[0]["Labels"]
    assert labels[SWARM_ID_LABEL] == sid and labels[GENERATION_LABEL] == "2"
    # Created and started in one call, which waits for a channel still connecting.
    assert n2.started == [rec.container_id] and n2.waited_for_ready == [True]
    # The name follows the replacement; the old copy's status (Host Down) is gone.
    name = await kv.get(cluster.keys.name("web"))
    assert name is not None and name.value.decode() == rec.container_id
    assert await kv.get(cluster.keys.status("n1", old)) is None
    # The move's transaction took the old copy's desired record too, so that status deletion
    # had nothing left to remove (Cluster._moved_away).
    assert await kv.get(cluster.keys.container(old)) is None
    assert await kv.get(cluster.keys.container(rec.container_id)) is not None
    events = [e for e in cluster.events.history if e["Action"] == "reschedule"]
    assert len(events) == 1 and events[0]["Actor"]["ID"] == rec.container_id
    assert events[0]["Actor"]["Attributes"]["from_node"] == "n1"
    assert resched.metrics is not None and resched.metrics.reschedules._value.get() == 1
    # Not reschedulable: stays on its node, Host Down, never recreated.
    plain = await _logical(cluster, keep_sid)
    assert (plain.state, plain.container_id) == (PLACED, keep)
    assert await kv.get(cluster.keys.status("n1", keep)) is not None
    # More passes change nothing: one copy only.
    await resched.step()
    assert len(n2.creates) == 1


async def test_hard_constraint_pending_until_node_returns(
    world: tuple[KV, FakeCluster, Rescheduler],
) -> None:
    kv, cluster, resched = world
    sid, _ = await _place_on(
        cluster, "n1", "pinned", ["reschedule:on-node-failure", "constraint:node==n1"]
    )
    resched.start()
    await kv.delete(cluster.keys.node("n1"))

    async def pending() -> bool:
        return (await _logical(cluster, sid)).state == PENDING

    await _until(pending, "pending")

    async def listed_pending() -> bool:  # what `docker ps -a` shows as "Pending reschedule"
        rec = cluster.logical_records.get(sid)  # the watched records the view lists from
        return rec is not None and rec.state == PENDING

    await _until(listed_pending, "the pending view")
    assert cluster.agents["n2"].creates == []
    cluster.agents["n1"].containers.clear()  # the node comes back without its old copy
    await _put_node(kv, cluster.keys, "n1")

    async def placed() -> LogicalContainer | None:
        r = await _logical(cluster, sid)
        return r if r.state == PLACED else None

    rec = await _until(placed, "placed on n1 again")
    assert rec.node_id == "n1" and rec.generation == 2
    assert len(cluster.agents["n1"].creates) == 2  # the original and the replacement


async def test_resume_placing_finds_existing_copy(
    world: tuple[KV, FakeCluster, Rescheduler],
) -> None:
    """A manager that died after the create but before `placed`: the copy with the record's
    swarm id and generation is adopted, not created again."""
    kv, cluster, resched = world
    sid, old = await _place_on(cluster, "n1", "db", ["reschedule:on-node-failure"])
    await kv.delete(cluster.keys.node("n1"))

    async def gone() -> bool:
        return "n1" not in cluster.nodes

    await _until(gone, "n1 gone")
    found = await cluster.logical.get(sid)
    assert found is not None
    rec, rev = found
    rec.state, rec.node_id, rec.container_id, rec.generation = PLACING, "n2", "", 2
    rec.previous_node_id, rec.previous_container_id = "n1", old
    assert await cluster.logical.swap(rec, rev)
    n2 = cluster.agents["n2"]
    labels = {SWARM_ID_LABEL: sid, GENERATION_LABEL: "2"}
    n2.containers["made-before-crash"] = {"Id": "made-before-crash", "Labels": labels}
    resched.start()

    async def placed() -> LogicalContainer | None:
        r = await _logical(cluster, sid)
        return r if r.state == PLACED else None

    rec = await _until(placed, "resumed")
    assert rec.container_id == "made-before-crash" and n2.creates == []


async def test_failed_waits_for_margin_then_moves(
    world: tuple[KV, FakeCluster, Rescheduler],
) -> None:
    kv, cluster, resched = world
    resched.margin_ns = int(1.5e9)
    sid, _ = await _place_on(cluster, "n1", "slow", ["reschedule:on-node-failure"])
    resched.start()
    await kv.delete(cluster.keys.node("n1"))

    async def failed() -> LogicalContainer | None:
        r = await _logical(cluster, sid)
        return r if r.state == FAILED else None

    rec = await _until(failed, "failed")
    assert rec.previous_node_id == "n1" and rec.node_failed_at_ns > 0
    if time.time_ns() < rec.node_failed_at_ns + resched.margin_ns - int(0.3e9):
        assert cluster.agents["n2"].creates == []  # nothing before the margin ends

    async def placed() -> bool:
        return (await _logical(cluster, sid)).state == PLACED

    await _until(placed, "placed after the margin")
    assert len(cluster.agents["n2"].creates) == 1


async def test_remove_rename_update_logical(world: tuple[KV, FakeCluster, Rescheduler]) -> None:
    _, cluster, _ = world
    sid, cid = await _place_on(cluster, "n2", "a", [])
    await cluster.logical.set_name(sid, cid, "b")
    assert (await _logical(cluster, sid)).name == "b"
    await cluster.logical.set_start(sid, cid, False)
    assert not (await _logical(cluster, sid)).start
    await cluster.logical.forget(sid, "another-container")
    assert await cluster.logical.get(sid) is not None
    await cluster.record_removed(cid, "b", sid)
    assert await cluster.logical.get(sid) is None


class HungAgent(FakeAgent):
    """Alive, answering nothing (a frozen agent whose lease has not run out yet). Nothing may
    ask it for its images: the scheduler reads them from the images records."""

    async def ImageList(self, req: pb.ImageListRequest) -> pb.JsonReply:  # noqa: N802
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_hung_agent_never_holds_the_schedule_lock(
    world: tuple[KV, FakeCluster, Rescheduler],
) -> None:
    kv, cluster, resched = world
    sid, _ = await _place_on(cluster, "n1", "svc", ["reschedule:on-node-failure"])
    cluster.agents["n3"] = HungAgent("n3")
    await _put_node(kv, cluster.keys, "n3", images=False)

    async def three() -> bool:
        return "n3" in cluster.nodes

    await _until(three, "n3 listed")
    await kv.delete(cluster.keys.node("n1"))
    await _until(lambda: _gone(cluster, "n1"), "n1 gone")
    resched.margin_ns = 0
    # Images come from the records, so nothing waits on n3 (it would hang any call).
    await resched.step()
    assert not cluster.schedule_lock.locked()
    rec = await _logical(cluster, sid)
    # n3 published no images: the implicit image affinity keeps it off n3.
    assert rec.state == PLACED and rec.node_id == "n2"


async def _gone(cluster: FakeCluster, node_id: str) -> bool:
    return node_id not in cluster.nodes


def test_manage_flags() -> None:
    from deploy.cli import build_parser
    from manager.main import config_from_args

    def parse(argv: list[str]) -> argparse.Namespace:
        return build_parser("manage").parse_args(["manage", *argv])

    config = config_from_args(parse(["--reschedule-margin", "1.5", "--metrics", "127.0.0.1:9324"]))
    assert (config.reschedule_margin_s, config.metrics) == (1.5, "127.0.0.1:9324")
    assert config_from_args(parse([])).reschedule_margin_s == 0.25
    with pytest.raises(ValueError, match="must not be negative"):
        config_from_args(parse(["--reschedule-margin", "-1"]))
    with pytest.raises(ValueError, match="want HOST:PORT"):
        config_from_args(parse(["--metrics", "9324"]))


class SilentAgent(FakeAgent):
    """Registered, but its agent has not answered yet."""

    async def Ping(self, req: pb.PingRequest) -> pb.PingReply:  # noqa: N802
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_info_states_healthy_pending_unhealthy(
    world: tuple[KV, FakeCluster, Rescheduler],
) -> None:
    from manager.api.system import listed_nodes, node_state, system_status

    kv, cluster, _ = world
    # The nodes found at start wait for the manager to serve (validate_nodes); a node that
    # comes later is validated as it comes.
    await asyncio.sleep(0.2)
    assert not cluster.validated
    cluster.validate_nodes()
    cluster.agents["n4"] = SilentAgent("n4")
    await _put_node(kv, cluster.keys, "n4")
    await kv.delete(cluster.keys.node("n1"))  # n1 stays a member: Unhealthy

    async def settled() -> bool:
        return "n1" not in cluster.nodes and "n4" in cluster.nodes and "n2" in cluster.validated

    await _until(settled, "the view")
    states = {rec.name: node_state(cluster, rec.id) for rec in listed_nodes(cluster)}
    assert states == {"n1": "Unhealthy", "n2": "Healthy", "n4": "Pending"}
    rows = system_status(cluster, {})
    assert ["Nodes", "3"] in rows
    assert rows[rows.index([" n1", "127.0.0.1:1"]) + 2] == ["  └ Status", "Unhealthy"]


class CutOffAgent(FakeAgent):
    """Its first ContainerCreate ends as a call does when the manager closes the node's
    channel under it (grpc.aio raises CancelledError in the caller)."""

    cut = False

    async def ContainerCreate(  # noqa: N802
        self, req: pb.ContainerCreateRequest, wait_for_ready: bool = False
    ) -> pb.ContainerCreateReply:
        if not self.cut:
            self.cut = True
            raise asyncio.CancelledError
        return await super().ContainerCreate(req, wait_for_ready)


async def test_a_call_cut_off_by_a_leaving_node_does_not_stop_the_rescheduler(
    world: tuple[KV, FakeCluster, Rescheduler],
) -> None:
    """The rescheduler's task outlives a call whose channel closed (the target's key went while
    the create was in flight): it retries and places the container."""
    kv, cluster, resched = world
    sid, _ = await _place_on(cluster, "n1", "svc", ["reschedule:on-node-failure"])
    cluster.agents["n2"] = CutOffAgent("n2")
    resched.start()
    await kv.delete(cluster.keys.node("n1"))

    async def placed() -> LogicalContainer | None:
        r = await _logical(cluster, sid)
        return r if r.state == PLACED and r.node_id == "n2" else None

    await _until(placed, "svc placed on n2 after the cut-off call")
    assert cluster.agents["n2"].cut and resched.task is not None and not resched.task.done()


async def test_closing_a_leaving_nodes_channel_fails_its_calls_as_docker_errors(
    etcd: Any,  # noqa: ANN401
) -> None:
    """With a real gRPC channel: a node's key goes while a call to it is in flight; the call
    ends as a DockerError (503), not as a cancellation of the caller."""
    import grpc

    from proto.docker.errors import DockerError

    async def slow_ping(request: bytes, context: Any) -> bytes:  # noqa: ANN401
        await asyncio.sleep(30)
        return b""

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "flotilla.agent.v1.Agent", {"Ping": grpc.unary_unary_rpc_method_handler(slow_ping)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    kv = await KV.connect([etcd.endpoint])
    keys = Keys("/cut")
    rec = NodeRecord(id="n9", name="n9", addr=f"127.0.0.1:{port}", started_at_ns=time.time_ns())
    await kv.put(keys.node("n9"), rec.SerializeToString())
    cluster = Cluster(kv, keys)
    await cluster.start()
    try:

        async def listed() -> bool:
            return "n9" in cluster.nodes

        await _until(listed, "n9 listed")
        call = asyncio.create_task(cluster.call("n9", lambda s: s.Ping(pb.PingRequest())))
        await asyncio.sleep(0.5)  # in flight
        await kv.delete(keys.node("n9"))
        with pytest.raises(DockerError) as info:
            await call
        assert info.value.status == 503 and "n9 is not available" in info.value.message
    finally:
        await cluster.close()
        await kv.delete_prefix("/cut/")
        await kv.close()
        await server.stop(None)
