"""Health checks as dockerd 20.10 runs them (daemon/health.go).

A container whose merged config has a `Healthcheck` with `CMD`/`CMD-SHELL` gets one
`HealthMonitor` while it runs (not while paused): every interval it runs the probe as an exec in
the container (the runtime's own exec path, so `exec_create: …`/`exec_start: …`/`exec_die`
events appear as dockerd's do), kills it after the timeout, and folds the result into the
container's `State.Health` (`starting` → `healthy`/`unhealthy`, the failing streak, the last five
results). A change of status is the `health_status: <status>` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proto.docker.errors import DockerError
from runtime.timefmt import now_ns, rfc3339nano

if TYPE_CHECKING:
    from runtime.config_types import ContainerSpec
    from runtime.containers import Runtime
    from runtime.record import ContainerRecord

log = logging.getLogger(__name__)

STARTING, HEALTHY, UNHEALTHY, NONE = "starting", "healthy", "unhealthy", "none"
MAX_OUTPUT = 4096  # bytes of probe output kept per result, then "..."
MAX_LOG = 5  # results kept in State.Health.Log
DEFAULT_INTERVAL_NS = 30_000_000_000
DEFAULT_TIMEOUT_NS = 30_000_000_000
DEFAULT_START_PERIOD_NS = 0
DEFAULT_RETRIES = 3
KILL_WAIT_S = 10.0  # how long a killed probe may take to be reaped


@dataclass(frozen=True)
class HealthConfig:
    """A container's healthcheck with dockerd's defaults filled in (0 means the default)."""

    args: list[str]  # the probe's argv (shell form already wrapped in the shell)
    interval_ns: int
    timeout_ns: int
    start_period_ns: int
    retries: int

    @classmethod
    def from_spec(cls, spec: ContainerSpec) -> HealthConfig | None:
        """None when nothing is to be probed: no healthcheck, `NONE`, or an unknown type."""
        hc = spec.healthcheck or {}
        test = [str(t) for t in hc.get("Test") or []]
        if not test or test[0] not in ("CMD", "CMD-SHELL"):
            return None
        args = test[1:]
        if test[0] == "CMD-SHELL":
            args = list(spec.config_json.get("Shell") or ["/bin/sh", "-c"]) + args
        return cls(
            args=args,
            interval_ns=int(hc.get("Interval") or 0) or DEFAULT_INTERVAL_NS,
            timeout_ns=int(hc.get("Timeout") or 0) or DEFAULT_TIMEOUT_NS,
            start_period_ns=int(hc.get("StartPeriod") or 0) or DEFAULT_START_PERIOD_NS,
            retries=max(int(hc.get("Retries") or 0), 0) or DEFAULT_RETRIES,
        )


def reset(health: dict[str, Any] | None) -> dict[str, Any]:
    """State.Health of a (re)started container: `starting`, no streak; the log is kept."""
    return {"Status": STARTING, "FailingStreak": 0, "Log": list((health or {}).get("Log") or [])}


def status_of(health: dict[str, Any] | None) -> str:
    """The `health` ps filter's value: `none` without a healthcheck."""
    return str(health["Status"]) if health else NONE


def apply_result(
    health: dict[str, Any],
    conf: HealthConfig,
    result: dict[str, Any],
    start_ns: int,
    started_ns: int,
) -> bool:
    """handleProbeResult: fold one probe result in; True when the status changed."""
    old = health["Status"]
    health["Log"] = (list(health.get("Log") or []) + [result])[-MAX_LOG:]
    if result["ExitCode"] == 0:
        health["FailingStreak"] = 0
        health["Status"] = HEALTHY
    elif old != STARTING or start_ns - started_ns >= conf.start_period_ns:
        # Failures inside the start period do not count until a probe has succeeded.
        health["FailingStreak"] = int(health.get("FailingStreak") or 0) + 1
        if health["FailingStreak"] >= conf.retries:
            health["Status"] = UNHEALTHY
    return health["Status"] != old


def go_duration(ns: int) -> str:
    """Go's time.Duration.String(), as dockerd prints the timeout ("200ms", "1m30s")."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _decimal(ns, size) + unit
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = _decimal(rest, 1_000_000_000) + "s"
    if hours or minutes:
        text = f"{minutes}m" + text
    if hours:
        text = f"{hours}h" + text
    return sign + text


def _decimal(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")


class _LimitedOutput:
    """dockerd's limitedBuffer: the first MAX_OUTPUT bytes, "..." when more were dropped."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.truncated = False

    def write(self, chunk: bytes) -> None:
        keep = max(0, min(MAX_OUTPUT - len(self.data), len(chunk)))
        self.data += chunk[:keep]
        self.truncated = self.truncated or keep < len(chunk)

    def text(self) -> str:
        out = self.data.decode("utf-8", "replace")  # Go's JSON encoder replaces bad UTF-8 too
        return out + "..." if self.truncated else out


async def _read_frames(reader: asyncio.StreamReader, out: _LimitedOutput) -> None:
    """Collect the stdout and stderr payloads of a non-tty exec's multiplexed stream."""
    while True:
        try:
            header = await reader.readexactly(8)
        except asyncio.IncompleteReadError:
            return
        size = int.from_bytes(header[4:8], "big")
        while size:
            chunk = await reader.read(min(size, 65536))
            if not chunk:
                return
            out.write(chunk)
            size -= len(chunk)


def _result(exit_code: int, output: str, start_ns: int) -> dict[str, Any]:
    return {
        "Start": rfc3339nano(start_ns),
        "End": rfc3339nano(now_ns()),
        "ExitCode": exit_code,
        "Output": output,
    }


async def run_probe(rt: Runtime, cid: str, conf: HealthConfig) -> dict[str, Any]:
    """One probe as an exec in the container; a HealthcheckResult in Docker's JSON shape."""
    start_ns = now_ns()
    try:
        eid = rt.execs.create(
            cid, {"Cmd": conf.args, "AttachStdout": True, "AttachStderr": True}, probe=True
        )
        streams = await rt.execs.start(eid)
    except DockerError as err:  # e.g. the probe's binary is missing
        return _result(-1, err.message, start_ns)
    assert streams is not None
    reader, writer = streams
    ex = rt.execs.get(eid)
    out = _LimitedOutput()
    try:
        async with asyncio.timeout(conf.timeout_ns / 1e9):
            await _read_frames(reader, out)
            await ex.done.wait()
    except TimeoutError:
        return _result(
            -1, f"Health check exceeded timeout ({go_duration(conf.timeout_ns)})", start_ns
        )
    finally:
        writer.close()
        if not ex.done.is_set():  # timed out or the monitor was stopped: no dying probes pile up
            with contextlib.suppress(ProcessLookupError):
                os.kill(ex.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(ex.done.wait()), KILL_WAIT_S)
    return _result(ex.exit_code if ex.exit_code is not None else -1, out.text(), start_ns)


class HealthMonitor:
    """The probing loop of one running container (dockerd's monitor goroutine)."""

    def __init__(
        self,
        rt: Runtime,
        cid: str,
        conf: HealthConfig,
        health: dict[str, Any],
        started_ns: int,
        on_change: Callable[[str], None],
    ) -> None:
        self.rt = rt
        self.cid = cid
        self.conf = conf
        self.health = health
        self.started_ns = started_ns
        self.on_change = on_change
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"health-{cid[:12]}")

    async def _run(self) -> None:
        while True:
            # 20.10: the first probe one interval after the start, the next one an interval
            # after the previous one ended.
            await asyncio.sleep(self.conf.interval_ns / 1e9)
            start_ns = now_ns()
            try:
                result = await run_probe(self.rt, self.cid, self.conf)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a probe's failure must not end the monitoring
                log.warning("health check for container %s error: %s", self.cid, err)
                result = _result(-1, str(err), start_ns)
            if apply_result(self.health, self.conf, result, start_ns, self.started_ns):
                self.on_change(self.health["Status"])

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Monitors:
    """The `HealthMonitor` of every running container with a healthcheck, by container ID."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._monitors: dict[str, HealthMonitor] = {}

    def __contains__(self, cid: str) -> bool:
        return cid in self._monitors

    def __bool__(self) -> bool:
        return bool(self._monitors)

    def watch(self, rec: ContainerRecord, fresh: bool) -> None:
        """Probe a running container that has a healthcheck; `fresh` (a start) resets its
        State.Health to `starting` as dockerd's initHealthMonitor does."""
        rt = self._rt
        conf = HealthConfig.from_spec(rt.spec(rec))
        if conf is None:
            return
        if fresh or rec.health is None:
            rec.health = reset(rec.health)
        if rec.status != "running" or rec.id in self._monitors:
            return

        def changed(status: str) -> None:
            rec.save(rt.paths.container(rec.id))
            rt.emit(f"health_status: {status}", rec)

        self._monitors[rec.id] = HealthMonitor(
            rt, rec.id, conf, rec.health, rec.started_ns, changed
        )

    async def unwatch(self, cid: str) -> None:
        monitor = self._monitors.pop(cid, None)
        if monitor is not None:
            await monitor.stop()

    async def stop_all(self) -> None:
        for cid in list(self._monitors):
            await self.unwatch(cid)
