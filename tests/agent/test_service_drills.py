"""The Drill RPC through a real gRPC server: refused unless `--allow-drills`, and the faults it
injects (iptables rules in this test session's own network namespace, a SIGSTOP) are undone by
the watchdog after the bounded time, whatever the agent does meanwhile."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from agent import drill_faults
from agent.events import EventBus
from agent.server import bound_port, start_grpc_server
from agent.service_drills import DrillSettings
from proto import agent_pb2 as pb
from proto import agent_pb2_grpc
from proto.rpc import agent_client
from proto.rpc_errors import error_from_rpc


async def _stub(settings: DrillSettings | None) -> AsyncIterator[agent_pb2_grpc.AgentStub]:
    # Drill touches the runtime only for a crash, which no test here asks for.
    server = await start_grpc_server(None, EventBus(), "127.0.0.1:0", drills=settings)  # type: ignore[arg-type]
    client = agent_client(f"127.0.0.1:{bound_port(server)}")
    try:
        yield client
    finally:
        await client.channel.close()  # type: ignore[attr-defined]
        await server.stop(None)


@pytest.fixture
async def refusing() -> AsyncIterator[agent_pb2_grpc.AgentStub]:
    async for stub in _stub(None):
        yield stub


@pytest.fixture
async def allowing() -> AsyncIterator[agent_pb2_grpc.AgentStub]:
    async for stub in _stub(DrillSettings(True, ["127.0.0.1:1"])):
        yield stub


async def await_for(cond, timeout: float) -> bool:  # noqa: ANN001
    """wait_for for tests whose server runs on this event loop."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def wait_for(cond, timeout: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


async def test_refused_without_allow_drills(refusing: agent_pb2_grpc.AgentStub) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        await refusing.Drill(pb.DrillRequest(kind="freeze", duration_ms=1000))
    err = error_from_rpc(exc.value)
    assert err.status == 403
    assert str(err) == (
        "drills are disabled on this node: start its agent with `flotilla join --allow-drills`"
    )


async def test_unknown_kind_is_a_bad_parameter(allowing: agent_pb2_grpc.AgentStub) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        await allowing.Drill(pb.DrillRequest(kind="reboot"))
    err = error_from_rpc(exc.value)
    assert err.status == 400 and "invalid drill kind 'reboot'" in str(err)


@pytest.mark.parametrize("kind", ["partition", "etcd-outage"])
async def test_firewall_drill_is_undone_by_the_watchdog(
    allowing: agent_pb2_grpc.AgentStub, kind: str
) -> None:
    try:
        t0 = time.time_ns()
        reply = await allowing.Drill(pb.DrillRequest(kind=kind, duration_ms=1500))
        assert reply.kind == kind
        assert t0 <= reply.started_at_ns and reply.undo_at_ns - reply.started_at_ns == 1_500_000_000
        want = (
            drill_faults.partition_rules()
            if kind == "partition"
            else drill_faults.etcd_rules(["127.0.0.1:1"])
        )
        # Injected just after the reply (which the fault must not hold back), then undone.
        assert await await_for(lambda: len(drill_faults.drill_rules()) == len(want), 5)
        assert await await_for(lambda: drill_faults.drill_rules() == [], 15)
    finally:
        drill_faults.remove_rules(drill_faults.drill_rules())


def test_duration_is_bounded() -> None:
    assert drill_faults.bounded_duration(10_000) == drill_faults.MAX_DURATION_S == 300
    assert drill_faults.bounded_duration(0) == drill_faults.DEFAULT_DURATION_S
    assert drill_faults.bounded_duration(2.5) == 2.5


def test_the_watchdog_thaws_a_frozen_process() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        assert wait_for(lambda: _state(proc.pid) == "T", 5)
        drill_faults.start_watchdog(0.5, cont_pid=proc.pid)
        assert _state(proc.pid) == "T"
        assert wait_for(lambda: _state(proc.pid) != "T", 15)
    finally:
        proc.kill()
        proc.wait()


def test_kill_cgroup_tree_needs_no_cgroup() -> None:
    drill_faults.kill_cgroup_tree("/nonexistent/flotilla/node-x")  # nothing there: returns


def test_kinds_agree_with_the_operator_tool() -> None:
    from deploy.drill import KINDS

    assert drill_faults.KINDS == KINDS


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]
