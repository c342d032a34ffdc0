"""Prometheus metrics of the manager (`flotilla manage --metrics HOST:PORT`, path /metrics):
nodes up and down, reschedules, time to reschedule, pending logical containers."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from manager.cluster import Cluster

# From the node failure the manager saw to the replacement started: the target is 5 s.
RESCHEDULE_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.nodes = Gauge(
            "flotilla_nodes",
            "Nodes by state: up (live lease) or down (member without a live lease)",
            ["state"],
            registry=self.registry,
        )
        self.reschedules = Counter(
            "flotilla_reschedules",
            "Containers rescheduled after their node failed",
            registry=self.registry,
        )
        self.time_to_reschedule = Histogram(
            "flotilla_time_to_reschedule_seconds",
            "From the node failure seen by the manager to the replacement started",
            buckets=RESCHEDULE_BUCKETS,
            registry=self.registry,
        )
        self.pending = Gauge(
            "flotilla_pending_containers",
            "Logical containers that fit on no node now (state pending)",
            registry=self.registry,
        )

    def render(self, cluster: Cluster) -> bytes:
        self.nodes.labels("up").set(len(cluster.nodes))
        self.nodes.labels("down").set(len(set(cluster.members) - set(cluster.nodes)))
        return generate_latest(self.registry)


def metrics_app(metrics: Metrics, cluster: Cluster) -> web.Application:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(
            body=metrics.render(cluster), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", handler)
    return app
