"""`flotilla join`: one node's agent. Opens the runtime (re-adopting running containers), serves
the manager over gRPC, registers the node in etcd under a lease and reports container state.
On SIGTERM it deregisters and exits; containers keep running (they belong to their shims)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import re
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from agent import nodeid
from agent.events import EventBus
from agent.metrics import AgentMetrics
from agent.registration import Counts, Registration, describe_host
from agent.server import start_grpc_server
from agent.status import StatusReporter
from proto.keys import DEFAULT_PREFIX, Keys
from proto.kv import KV, parse_discovery
from proto.rpc import TlsConfig
from runtime.containers import Runtime

log = logging.getLogger(__name__)

DEFAULT_DATA_ROOT = "/var/lib/flotilla"
DEFAULT_PORT = 4243


@dataclass
class AgentConfig:
    etcd_endpoints: list[str]
    advertise: str  # "ip:port" the manager dials
    prefix: str = DEFAULT_PREFIX
    listen: str = ""  # default: advertise
    name: str = field(default_factory=socket.gethostname)
    labels: dict[str, str] = field(default_factory=dict)
    data_root: str = DEFAULT_DATA_ROOT
    heartbeat_s: float = 5.0
    ttl_s: float = 15.0
    cgroup_parent: str = ""  # default: flotilla/<name>
    metrics_listen: str = ""  # "ip:port"; empty: no metrics endpoint
    bridge_subnet: str = "172.17.0.0/16"
    tls: TlsConfig | None = None

    def __post_init__(self) -> None:
        self.listen = self.listen or self.advertise
        self.cgroup_parent = self.cgroup_parent or f"flotilla/{self.name}"
        if not 0 < self.heartbeat_s < self.ttl_s:
            raise ValueError(
                f"heartbeat ({self.heartbeat_s}s) must be shorter than ttl ({self.ttl_s}s)"
            )


def parse_duration(text: str) -> float:
    """Seconds from 5s, 500ms, 1m, 1m30s or a plain number."""
    text = text.strip()
    with contextlib.suppress(ValueError):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r} (e.g. 5s, 500ms, 1m)")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"invalid label {text!r}: expected key=value")
    return key, value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_join_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "discovery",
        nargs="?",
        help="etcd://host:port[,host:port]/prefix (or use --etcd)",
    )
    parser.add_argument(
        "--etcd",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="etcd endpoint (repeatable)",
    )
    parser.add_argument(
        "--prefix", default=None, help=f"etcd key prefix (default {DEFAULT_PREFIX})"
    )
    parser.add_argument(
        "--advertise", required=True, metavar="IP:PORT", help="address the manager dials"
    )
    parser.add_argument("--listen", default="", metavar="IP:PORT", help="default: --advertise")
    parser.add_argument("--name", default="", help="node name (default: hostname)")
    parser.add_argument(
        "--label", action="append", default=[], type=_label, metavar="KEY=VALUE", help="repeatable"
    )
    parser.add_argument("--data-root", default=DEFAULT_DATA_ROOT)
    parser.add_argument("--heartbeat", type=_duration, default=5.0, help="e.g. 5s")
    parser.add_argument("--ttl", type=_duration, default=15.0, help="node record TTL, e.g. 15s")
    parser.add_argument("--metrics", default="", metavar="IP:PORT", help="serve /metrics here")
    parser.add_argument("--cgroup-parent", default="", help="default: flotilla/<name>")
    parser.add_argument("--bridge-subnet", default="172.17.0.0/16")
    parser.add_argument("--tlscacert", default="", help="CA the manager's certificate is from")
    parser.add_argument("--tlscert", default="", help="this agent's certificate")
    parser.add_argument("--tlskey", default="", help="this agent's key")


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    endpoints = list(args.etcd)
    prefix = DEFAULT_PREFIX
    if args.discovery:
        urls, prefix = parse_discovery(args.discovery)
        endpoints += urls
    if args.prefix:
        prefix = args.prefix
    if not endpoints:
        raise ValueError("no etcd endpoints: give etcd://host:port/prefix or --etcd host:port")
    tls_files = (args.tlscert, args.tlskey, args.tlscacert)
    if any(tls_files) and not all(tls_files):
        raise ValueError("TLS needs all of --tlscert, --tlskey and --tlscacert")
    return AgentConfig(
        etcd_endpoints=endpoints,
        prefix=prefix,
        advertise=args.advertise,
        listen=args.listen,
        name=args.name or socket.gethostname(),
        labels=dict(args.label),
        data_root=args.data_root,
        heartbeat_s=args.heartbeat,
        ttl_s=args.ttl,
        cgroup_parent=args.cgroup_parent,
        metrics_listen=args.metrics,
        bridge_subnet=args.bridge_subnet,
        tls=TlsConfig(args.tlscert, args.tlskey, args.tlscacert) if all(tls_files) else None,
    )


def container_counts(runtime: Runtime) -> Counts:
    recs = runtime.list()
    running = sum(1 for r in recs if r.status == "running")
    paused = sum(1 for r in recs if r.status == "paused")
    return Counts(len(recs), running, paused, len(recs) - running - paused)


async def run_agent(config: AgentConfig, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT); then deregister, leaving containers up."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, RuntimeError):  # not the main thread (tests)
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)

    started_ns = time.time_ns()
    node_id = await asyncio.to_thread(nodeid.load_or_create, config.data_root)
    bus = EventBus()
    metrics = AgentMetrics()
    reporter: StatusReporter | None = None

    def sink(type: str, action: str, id: str, attrs: dict[str, str]) -> None:
        bus.publish(type, action, id, attrs)
        if reporter is not None:
            reporter.notify(type, action, id, attrs)

    runtime = Runtime(
        config.data_root,
        node_name=config.name,
        cgroup_parent=config.cgroup_parent,
        bridge_subnet=config.bridge_subnet,
        events=sink,
    )
    kv: KV | None = None
    server: Any = None
    registration: Registration | None = None
    metrics_runner: Any = None
    try:
        await runtime.open()  # re-adopts containers that kept running while we were away
        metrics.attach_runtime(runtime)
        kv = await KV.connect(config.etcd_endpoints)
        keys = Keys(config.prefix)
        record = await asyncio.to_thread(
            describe_host, node_id, config.name, config.advertise, config.labels, started_ns
        )
        reporter = StatusReporter(kv, keys, node_id, runtime, metrics)

        async def resync() -> None:
            assert reporter is not None
            reporter.request_resync()

        registration = Registration(
            kv,
            keys,
            record,
            ttl_s=math.ceil(config.ttl_s),
            heartbeat_s=config.heartbeat_s,
            metrics=metrics,
            counts=lambda: container_counts(runtime),
            on_registered=resync,
        )
        reporter.on_change = registration.touch
        server = await _serve(runtime, bus, config, node_id, metrics)
        if config.metrics_listen:
            metrics_runner = await metrics.serve(config.metrics_listen)
        await reporter.start()
        await registration.start()
        log.info("agent %s (%s) serving on %s", config.name, node_id, config.listen)
        await stop.wait()
        log.info("agent %s stopping; containers keep running", config.name)
    finally:
        # Deregister first so the manager stops sending work, then stop serving.
        if registration is not None:
            await registration.stop(deregister=True)
        if server is not None:
            await server.stop(grace=2)
        if reporter is not None:
            await reporter.stop()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runtime.close()
        if kv is not None:
            await kv.close()
        for signum in handled:
            loop.remove_signal_handler(signum)


async def _serve(
    runtime: Runtime, bus: EventBus, config: AgentConfig, node_id: str, metrics: AgentMetrics
) -> Any:
    labels = [f"{k}={v}" for k, v in sorted(config.labels.items())]
    return await start_grpc_server(
        runtime,
        bus,
        config.listen,
        tls=config.tls,
        info_extra={"ID": node_id, "Name": config.name, "Labels": labels},
        interceptors=[metrics.interceptor()],  # operation counts and latency
    )
