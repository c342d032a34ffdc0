"""The node fence in the shim (docs/failover.md "Agent side"): a reschedulable container is
SIGKILLed by its own shim once the deadline in the fence file has passed, shows it in
State.Error, and is never restarted by this runtime."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest

from runtime import fence
from runtime.containers import Runtime
from runtime.views import inspect
from tests.fixtures import SUBNET, runtime_for_tests

RESCHEDULABLE = {fence.RESCHEDULE_LABEL: json.dumps([fence.ON_NODE_FAILURE])}


@pytest.fixture
async def rt(busybox_tar: str) -> AsyncIterator[Runtime]:
    async with runtime_for_tests(busybox_tar) as runtime:
        runtime.fence_path = os.path.join(runtime.paths.root, "fence")
        yield runtime


def set_deadline(rt: Runtime, seconds_from_now: float) -> None:
    deadline = time.clock_gettime_ns(time.CLOCK_BOOTTIME) + int(seconds_from_now * 1e9)
    tmp = rt.fence_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{deadline}\n")
    os.rename(tmp, rt.fence_path)


async def until(cond: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def started(rt: Runtime, labels: dict[str, str], restart: str = "no") -> str:
    rec = await rt.create(
        {
            "Image": "busybox",
            "Cmd": ["sleep", "1000"],
            "Labels": labels,
            "HostConfig": {"NetworkMode": "none", "RestartPolicy": {"Name": restart}},
        }
    )
    await rt.start(rec.id)
    return rec.id


def spec_has_fence(rt: Runtime, cid: str) -> bool:
    with open(os.path.join(rt.paths.container(cid), "spec"), "rb") as f:
        return b"fence_path=" in f.read()


async def test_past_deadline_kills_and_never_restarts(rt: Runtime) -> None:
    set_deadline(rt, 60)
    cid = await started(rt, RESCHEDULABLE, restart="always")
    pid = rt.get(cid).pid
    assert spec_has_fence(rt, cid)
    set_deadline(rt, -1)
    await until(lambda: rt.get(cid).status == "exited")
    state = inspect(rt, rt.get(cid))["State"]
    assert state["Error"] == fence.FENCED_ERROR
    assert state["ExitCode"] == 137
    assert not os.path.exists(f"/proc/{pid}")
    # Restart policy "always" would bring it back within 100 ms: give it many times that.
    await asyncio.sleep(1.0)
    assert rt.get(cid).status == "exited" and rt.get(cid).restart_count == 0
    # Only an explicit start (the manager's) runs it again, and that clears the fence mark.
    set_deadline(rt, 60)
    await rt.start(cid)
    assert rt.get(cid).status == "running" and not rt.get(cid).fenced
    assert inspect(rt, rt.get(cid))["State"]["Error"] == ""


async def test_future_deadline_keeps_running_until_it_passes(rt: Runtime) -> None:
    set_deadline(rt, 60)
    cid = await started(rt, RESCHEDULABLE)
    await asyncio.sleep(0.5)  # five shim checks
    assert rt.get(cid).status == "running"
    set_deadline(rt, 0.3)
    await until(lambda: rt.get(cid).status == "exited")
    assert rt.get(cid).fenced


async def test_missing_file_fences_a_reschedulable_container(rt: Runtime) -> None:
    cid = await started(rt, RESCHEDULABLE)
    await until(lambda: rt.get(cid).status == "exited")
    assert rt.get(cid).fenced


async def test_other_containers_are_not_fenced(rt: Runtime) -> None:
    set_deadline(rt, -1)
    plain = await started(rt, {})
    off = await started(rt, {fence.RESCHEDULE_LABEL: '["off"]'})
    fenced = await started(rt, RESCHEDULABLE)
    await until(lambda: rt.get(fenced).status == "exited")
    assert not spec_has_fence(rt, plain) and not spec_has_fence(rt, off)
    assert rt.get(plain).status == "running" and rt.get(off).status == "running"


async def test_runtime_without_fence_file_never_fences(rt: Runtime) -> None:
    rt.fence_path = ""
    cid = await started(rt, RESCHEDULABLE)
    assert not spec_has_fence(rt, cid)
    await asyncio.sleep(0.3)
    assert rt.get(cid).status == "running"


async def reopen(rt: Runtime) -> Runtime:
    """A second Runtime on the same data root and fence file, as after an agent restart."""
    again = Runtime(
        rt.paths.root,
        node_name=rt.node_name,
        bridge_name=rt.bridge.name,
        bridge_subnet=SUBNET,
        fence_path=rt.fence_path,
    )
    await again.open()
    return again


async def test_fenced_while_agent_away_stays_stopped_after_restart(rt: Runtime) -> None:
    set_deadline(rt, 60)
    cid = await started(rt, RESCHEDULABLE, restart="always")
    pid = rt.get(cid).pid
    await rt.close()  # the agent dies; the shims keep watching the file
    set_deadline(rt, -1)
    exit_json = os.path.join(rt.paths.container(cid), "exit.json")
    await until(lambda: os.path.exists(exit_json))
    assert not os.path.exists(f"/proc/{pid}")
    again = await reopen(rt)
    try:
        rec = again.get(cid)
        assert rec.status == "exited" and rec.fenced
        assert inspect(again, rec)["State"]["Error"] == fence.FENCED_ERROR
        assert again.deferred_boot == []
        await again.remove(cid, force=True)
    finally:
        await again.close()


async def test_restart_on_boot_of_reschedulable_waits_for_the_agent(rt: Runtime) -> None:
    set_deadline(rt, 60)
    moving = await started(rt, RESCHEDULABLE, restart="always")
    plain = await started(rt, {}, restart="always")
    await rt.close()
    for cid in (moving, plain):  # the host went down: every process died, no fence involved
        os.kill(rt.get(cid).pid, signal.SIGKILL)
        exit_json = os.path.join(rt.paths.container(cid), "exit.json")
        await until(lambda p=exit_json: os.path.exists(p))  # type: ignore[misc]
    again = await reopen(rt)
    try:
        assert again.get(plain).status == "running"
        assert again.get(moving).status == "exited" and not again.get(moving).fenced
        assert again.deferred_boot == [moving]
        for cid in (moving, plain):
            await again.remove(cid, force=True)
    finally:
        await again.close()
