"""Health checks through the runtime: real probes as execs in real busybox containers.

No timing assertions: every test polls until a state is reached, within a generous deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from runtime import health, usage
from runtime.containers import Runtime
from runtime.record import ContainerRecord
from runtime.views import inspect, summary
from tests.fixtures import SUBNET, runtime_for_tests

MS = 1_000_000
DEADLINE_S = 30.0


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []

    def __call__(self, type: str, action: str, id: str, attrs: dict[str, str]) -> None:
        self.seen.append((action, id, attrs))

    def actions(self, cid: str) -> list[str]:
        return [a for a, i, _ in self.seen if i == cid]


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
async def rt(busybox_tar: str, events: Events) -> AsyncIterator[Runtime]:
    async with runtime_for_tests(busybox_tar, events=events) as runtime:
        yield runtime


async def until(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached within {DEADLINE_S}s: {what}")


async def started(rt: Runtime, test: list[str], **hc: int) -> ContainerRecord:
    rec = await rt.create(
        {
            "Image": "busybox",
            "Cmd": ["sleep", "300"],
            "Healthcheck": {"Test": test, "Interval": 100 * MS, **hc},
        }
    )
    await rt.start(rec.id)
    return rec


def state_health(rt: Runtime, rec: ContainerRecord) -> dict[str, Any] | None:
    return inspect(rt, rec)["State"].get("Health")


async def test_healthy_probe_runs_in_the_container(rt: Runtime, events: Events) -> None:
    # The probe sees the container's own filesystem: the file exists only inside it.
    rec = await rt.create(
        {
            "Image": "busybox",
            "Cmd": ["sh", "-c", "echo ok > /probe-me; sleep 300"],
            "Healthcheck": {"Test": ["CMD-SHELL", "cat /probe-me"], "Interval": 100 * MS},
        }
    )
    await rt.start(rec.id)
    assert state_health(rt, rec)["Status"] == "starting"  # type: ignore[index]
    assert summary(rt, rec)["Status"].endswith(" (health: starting)")
    await until("healthy", lambda: rec.health and rec.health["Status"] == "healthy")
    h = state_health(rt, rec)
    assert h is not None and h["FailingStreak"] == 0
    entry = h["Log"][-1]
    assert entry["ExitCode"] == 0 and entry["Output"] == "ok\n"
    assert entry["Start"] <= entry["End"]
    assert summary(rt, rec)["Status"].endswith(" (healthy)")
    assert summary(rt, rec)["Health"] == {"Status": "healthy", "FailingStreak": 0}
    actions = events.actions(rec.id)
    assert "health_status: healthy" in actions
    assert "exec_create: /bin/sh -c cat /probe-me" in actions
    assert "exec_start: /bin/sh -c cat /probe-me" in actions
    assert "exec_die" in actions
    # Probe execs are not the user's: they stay out of ExecIDs and leave nothing behind.
    assert inspect(rt, rec)["ExecIDs"] is None
    await until("probe execs forgotten", lambda: not rt.execs._records)


async def test_unhealthy_after_retries_and_back(rt: Runtime, events: Events) -> None:
    rec = await started(rt, ["CMD", "sh", "-c", "echo nope; test -e /ok"], Retries=2)
    await until("unhealthy", lambda: rec.health and rec.health["Status"] == "unhealthy")
    assert rec.health is not None and rec.health["FailingStreak"] >= 2
    assert rec.health["Log"][-1]["ExitCode"] == 1
    assert rec.health["Log"][-1]["Output"] == "nope\n"
    assert summary(rt, rec)["Status"].endswith(" (unhealthy)")
    assert events.actions(rec.id).count("health_status: unhealthy") == 1
    # A passing probe makes it healthy again.
    eid = rt.execs.create(rec.id, {"Cmd": ["touch", "/ok"]})
    await rt.execs.start(eid, detach=True)
    await until("healthy again", lambda: rec.health and rec.health["Status"] == "healthy")
    assert rec.health["FailingStreak"] == 0


async def test_timeout_kills_the_probe(rt: Runtime) -> None:
    rec = await started(rt, ["CMD", "sleep", "60"], Timeout=200 * MS, Retries=1)
    await until("unhealthy", lambda: rec.health and rec.health["Status"] == "unhealthy")
    entry = rec.health["Log"][-1]  # type: ignore[index]
    assert entry == entry | {"ExitCode": -1, "Output": "Health check exceeded timeout (200ms)"}
    # The probe was killed: no `sleep 60` is left in the container.
    top = await usage.top(rt, rec.id)
    assert not [p for p in top["Processes"] if "sleep 60" in " ".join(p)]


async def test_start_period_failures_do_not_count(rt: Runtime) -> None:
    rec = await started(rt, ["CMD", "false"], StartPeriod=60_000 * MS, Retries=1)
    await until("three failed probes", lambda: rec.health and len(rec.health["Log"]) >= 3)
    assert rec.health["Status"] == "starting" and rec.health["FailingStreak"] == 0  # type: ignore[index]


async def test_success_ends_the_start_period(rt: Runtime) -> None:
    rec = await started(
        rt, ["CMD-SHELL", "test ! -e /fail || exit 1"], StartPeriod=60_000 * MS, Retries=1
    )
    await until("healthy", lambda: rec.health and rec.health["Status"] == "healthy")
    eid = rt.execs.create(rec.id, {"Cmd": ["touch", "/fail"]})
    await rt.execs.start(eid, detach=True)
    # Inside the start period still, but after a success a failure counts.
    await until("unhealthy", lambda: rec.health and rec.health["Status"] == "unhealthy")


async def test_log_keeps_five_and_output_is_capped(rt: Runtime) -> None:
    rec = await started(rt, ["CMD-SHELL", "head -c 5000 /dev/zero | tr '\\0' x"])
    await until("five probes", lambda: rec.health and len(rec.health["Log"]) == health.MAX_LOG)
    oldest = rec.health["Log"][0]["Start"]  # type: ignore[index]
    await until("a sixth probe", lambda: rec.health and rec.health["Log"][0]["Start"] != oldest)
    entries = rec.health["Log"]  # type: ignore[index]
    assert len(entries) == health.MAX_LOG
    assert entries[-1]["ExitCode"] == 0
    assert entries[-1]["Output"] == "x" * health.MAX_OUTPUT + "..."


async def test_none_and_no_healthcheck_have_no_health(rt: Runtime, events: Events) -> None:
    plain = await rt.create({"Image": "busybox", "Cmd": ["sleep", "300"]})
    await rt.start(plain.id)
    none = await started(rt, ["NONE"])
    await asyncio.sleep(0.5)  # several intervals: nothing may be probed
    for rec in (plain, none):
        assert "Health" not in inspect(rt, rec)["State"]
        assert summary(rt, rec)["Health"] == {"Status": "none", "FailingStreak": 0}
        assert "(" not in summary(rt, rec)["Status"]
        assert not [a for a in events.actions(rec.id) if a.startswith(("exec_", "health"))]


async def test_restart_resets_to_starting(rt: Runtime) -> None:
    rec = await started(rt, ["CMD", "false"], Retries=1)
    await until("unhealthy", lambda: rec.health and rec.health["Status"] == "unhealthy")
    await rt.stop(rec.id, timeout=0)
    assert state_health(rt, rec)["Status"] == "unhealthy"  # type: ignore[index]  # kept
    assert not rt._health
    await rt.start(rec.id)
    assert rec.health is not None
    assert rec.health["Status"] == "starting" and rec.health["FailingStreak"] == 0
    await until("unhealthy again", lambda: rec.health and rec.health["Status"] == "unhealthy")


async def test_paused_container_is_not_probed(rt: Runtime) -> None:
    rec = await started(rt, ["CMD", "true"])
    await until("healthy", lambda: rec.health and rec.health["Status"] == "healthy")
    await rt.pause(rec.id)
    assert not rt._health and summary(rt, rec)["Status"].endswith("(Paused)")
    await rt.unpause(rec.id)
    assert rec.id in rt._health and rec.health["Status"] == "healthy"  # type: ignore[index]


async def test_probing_resumes_after_runtime_restart(rt: Runtime) -> None:
    rec = await started(rt, ["CMD-SHELL", "test ! -e /fail"], Retries=1)
    await until("healthy", lambda: rec.health and rec.health["Status"] == "healthy")
    await rt.close()
    events = Events()
    again = Runtime(
        rt.paths.root,
        node_name=rt.node_name,
        bridge_name=rt.bridge.name,
        bridge_subnet=SUBNET,
        events=events,
    )
    await again.open()
    try:
        adopted = again.get(rec.id)
        assert adopted.health is not None and adopted.health["Status"] == "healthy"
        eid = again.execs.create(rec.id, {"Cmd": ["touch", "/fail"]})
        await again.execs.start(eid, detach=True)
        await until("unhealthy", lambda: adopted.health and adopted.health["Status"] == "unhealthy")
        assert "health_status: unhealthy" in events.actions(rec.id)
        await again.remove(rec.id, force=True)
    finally:
        await again.close()


def test_apply_result_state_machine() -> None:
    conf = health.HealthConfig(["true"], 1, 1, start_period_ns=1000, retries=2)
    h = health.reset(None)

    def probe(code: int, start_ns: int) -> bool:
        return health.apply_result(h, conf, {"ExitCode": code}, start_ns, started_ns=0)

    assert not probe(1, 10)  # inside the start period: not counted
    assert h == h | {"Status": "starting", "FailingStreak": 0}
    assert not probe(1, 2000)
    assert h["FailingStreak"] == 1
    assert probe(2, 3000)  # any non-zero code is a failure
    assert h["Status"] == "unhealthy"
    assert probe(0, 4000) and h == h | {"Status": "healthy", "FailingStreak": 0}
    for t in range(5):
        probe(0, 5000 + t)
    assert len(h["Log"]) == health.MAX_LOG


def test_go_duration() -> None:
    cases = {
        200 * MS: "200ms",
        30_000 * MS: "30s",
        1_500 * MS: "1.5s",
        90_000 * MS: "1m30s",
        3_600_000 * MS: "1h0m0s",
        1_500_000: "1.5ms",
        0: "0s",
    }
    for ns, text in cases.items():
        assert health.go_duration(ns) == text
