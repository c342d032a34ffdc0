"""Prometheus metrics of one agent, on its own registry, served over HTTP by aiohttp (in the
event loop, so collectors read the runtime without crossing threads)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Protocol

import grpc
import grpc.aio
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from agent.grpc_wrap import Behavior, WrappingInterceptor, around

STATES = ("created", "running", "paused", "restarting", "exited", "dead", "removing")


class _Lists(Protocol):
    def list(self) -> list[Any]: ...


class _ContainersByState(Collector):
    def __init__(self, runtime: _Lists | None) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "flotilla_containers", "Containers on this node by state", labels=["state"]
        )
        counts = dict.fromkeys(STATES, 0)
        if self.runtime is not None:
            for rec in self.runtime.list():
                counts[rec.status] = counts.get(rec.status, 0) + 1
        for state, n in counts.items():
            family.add_metric([state], n)
        yield family


class AgentMetrics:
    def __init__(self, runtime: _Lists | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.containers = _ContainersByState(runtime)
        self.registry.register(self.containers)
        self.operations = Counter(
            "flotilla_operations",
            "Operations served (gRPC calls) by operation and outcome",
            ["op", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "flotilla_operation_duration_seconds",
            "Latency of operations served (streams: until they end)",
            ["op"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.lease_renewals = Counter(
            "flotilla_lease_renewals", "Successful lease renewals", registry=self.registry
        )
        self.lease_failures = Counter(
            "flotilla_lease_failures",
            "Failed lease renewals, lost leases and failed registrations",
            registry=self.registry,
        )
        self.registrations = Counter(
            "flotilla_registrations",
            "Node registrations (first and after an outage or a lost lease)",
            registry=self.registry,
        )
        self.fence_actions = Counter(
            "flotilla_fence_actions",
            "Times this node's reschedulable containers were fenced, by reason "
            "(lease: the deadline passed unrenewed; stop: the agent left)",
            ["reason"],
            registry=self.registry,
        )
        self.fence_deadline = Gauge(
            "flotilla_fence_deadline_seconds",
            "The fence deadline (CLOCK_BOOTTIME seconds; 0: none yet)",
            registry=self.registry,
        )
        self.fence_remaining = Gauge(
            "flotilla_fence_remaining_seconds",
            "Seconds until the fence deadline (negative once passed)",
            registry=self.registry,
        )
        self.fence_peers = Gauge(
            "flotilla_fence_peers",
            "Other nodes this one asks when its keep-alives fail (from its last nodes/ read)",
            registry=self.registry,
        )
        self.peer_checks = Counter(
            "flotilla_peer_checks",
            "PeerEtcdStatus questions to other nodes while etcd was unreachable, by answer "
            "(reachable, unreachable, no_answer)",
            ["outcome"],
            registry=self.registry,
        )
        self.status_writes = Counter(
            "flotilla_status_writes",
            "Container status records written to etcd by outcome",
            ["outcome"],
            registry=self.registry,
        )

    def attach_runtime(self, runtime: _Lists) -> None:
        self.containers.runtime = runtime

    def observe(self, op: str, seconds: float, ok: bool) -> None:
        self.operations.labels(op, "ok" if ok else "error").inc()
        self.latency.labels(op).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        """Counts and times every gRPC call; pass it to the gRPC server's interceptors."""
        return _MetricsInterceptor(self)

    async def serve(self, listen: str) -> web.AppRunner:
        """Serve /metrics on `ip:port`; stop with `await runner.cleanup()`."""
        host, _, port = listen.rpartition(":")

        async def handle(_: web.Request) -> web.Response:
            body = self.render()
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()
        return runner


class _MetricsInterceptor(WrappingInterceptor):
    def __init__(self, metrics: AgentMetrics) -> None:
        self.metrics = metrics

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        return _timed(behavior, method, self.metrics)


def _ok(context: Any) -> bool:
    try:
        code = context.code()
    except Exception:  # older grpc: no code() on aio contexts
        return True
    return code in (None, grpc.StatusCode.OK)


def _timed(behavior: Behavior, op: str, m: AgentMetrics) -> Behavior:
    async def start(_: Any) -> float:
        return time.monotonic()

    def done(context: Any, t0: float | None, finished: bool) -> None:
        if t0 is not None:
            m.observe(op, time.monotonic() - t0, finished and _ok(context))

    return around(behavior, start, done)
