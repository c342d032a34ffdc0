"""`flotilla hollow`: one process hosting many hollow nodes for scale runs (kubemark's idea).

Each hollow node runs the agent's own parts — `Registration` (its etcd lease, node record and
`members/` key), `StatusReporter` (its `status/<node>/<cid>` records), `ImagesReporter` (its
`images/<node>` record: busybox), `EventBus` and the gRPC
`AgentService` on its own port — over a `HollowRuntime` (runtime/hollow.py), whose containers
live in memory only. To the manager a hollow node is a node like any other.

Shared by the nodes of the process, because sharing them changes nothing the manager or etcd
sees: the host's description (CPU, memory, kernel: read once), the metrics registry (not served)
and the TLS files (one certificate for the loopback address they all listen on). Not simulated:
the node fence (there are no shims to kill), overlay networks and embedded DNS, drills.

Every node has its own gRPC server (grpc.aio, ~20 KiB each) and two etcd clients (status
writes and the lease's own, which it redials after a failure, as a real agent): sharing them
would save ~0.2 MiB a node but would also share their failures and back-offs, which is
precisely what a scale run must see per node. With `--shared-lease` the process keeps one
lease for all its nodes (agent/shared_lease.py: they live and die together) and each node one
etcd client: its records are still its own, under that lease.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
import time
from dataclasses import dataclass, field

from agent import nodeid
from agent.events import EventBus
from agent.image_records import ImagesReporter
from agent.main import (
    _after_registration,
    _duration,
    _label,
    etcd_and_tls_from_args,
)
from agent.metrics import AgentMetrics
from agent.registration import Registration, describe_host
from agent.server import bound_port, start_grpc_server
from agent.shared_lease import SharedLease
from agent.status import StatusReporter
from proto.etcd_flags import add_etcd_security_arguments, etcd_security_from_args
from proto.keys import DEFAULT_PREFIX, Keys
from proto.kv import KV, EtcdSecurity
from proto.records_pb2 import NodeRecord
from proto.rpc import TlsConfig
from runtime.hollow import HollowRuntime

log = logging.getLogger(__name__)

# A thousand nodes renewing every 250 ms (a real dev agent's beat) would be 4,000 keep-alives a
# second from one process: hollow nodes beat slower by default (`--heartbeat`, `--ttl`).
DEFAULT_HEARTBEAT_S = 1.0
DEFAULT_TTL_S = 5.0
START_CONCURRENCY = 50  # nodes starting at once (each dials etcd and binds a port)
HOLLOW_LABEL = "flotilla.hollow"


@dataclass
class HollowConfig:
    etcd_endpoints: list[str]
    count: int
    prefix: str = DEFAULT_PREFIX
    name_prefix: str = "hollow-"
    first: int = 0  # the first node's number: names are <name_prefix><first> … upwards
    listen_host: str = "127.0.0.1"  # every node listens here, on a port of its own
    labels: dict[str, str] = field(default_factory=dict)
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    ttl_s: float = DEFAULT_TTL_S
    # One lease for all the process's nodes (agent/shared_lease.py) instead of one each.
    shared_lease: bool = False
    tls: TlsConfig | None = None
    etcd_security: EtcdSecurity | None = None

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("--count must be at least 1")
        if not 0 < self.heartbeat_s < math.ceil(self.ttl_s):
            raise ValueError(
                f"heartbeat ({self.heartbeat_s}s) must be shorter than ttl ({self.ttl_s}s)"
            )

    def names(self) -> list[str]:
        return [f"{self.name_prefix}{i}" for i in range(self.first, self.first + self.count)]


class HollowNode:
    """One hollow node: runtime, event bus, gRPC service, status records and registration."""

    def __init__(
        self,
        name: str,
        config: HollowConfig,
        host: NodeRecord,
        metrics: AgentMetrics,
        lease: SharedLease | None,
    ) -> None:
        self.name = name
        self.lease = lease
        self.config = config
        self.node_id = nodeid.generate()
        self.bus = EventBus(history=64)  # a real node keeps 1000; `since` needs only a few
        self.metrics = metrics
        self.reporter: StatusReporter | None = None
        self.registration: Registration | None = None
        self.image_records: ImagesReporter | None = None
        self.runtime = HollowRuntime(name, events=self._sink)
        self.record = NodeRecord()
        self.record.CopyFrom(host)
        self.server: object | None = None
        self.kv: KV | None = None
        self.lease_kv: KV | None = None
        self.addr = ""

    def _sink(self, type: str, action: str, id: str, attrs: dict[str, str]) -> None:
        self.bus.publish(type, action, id, attrs)
        if self.reporter is not None:
            self.reporter.notify(type, action, id, attrs)

    async def start(self) -> None:
        config = self.config
        keys = Keys(config.prefix)
        labels = {**config.labels, HOLLOW_LABEL: "true"}
        self.kv = await KV.connect(config.etcd_endpoints, security=config.etcd_security)
        # A lease of its own renewed on a client of its own (redialled with the other after a
        # failure, as a real agent's), unless the host's shared lease stands for it.
        if self.lease is None:
            self.lease_kv = await KV.connect(config.etcd_endpoints, security=config.etcd_security)
        image_records = self.image_records = ImagesReporter(
            self.kv,
            keys,
            self.node_id,
            self.runtime.images,
            lease=lambda: self.registration.lease_id if self.registration is not None else 0,
        )
        self.bus.listeners.append(image_records.on_event)
        self.server = await start_grpc_server(
            self.runtime,  # type: ignore[arg-type] - the same calls, simulated
            self.bus,
            f"{config.listen_host}:0",
            tls=config.tls,
            info_extra={
                "ID": self.node_id,
                "Name": self.name,
                "Labels": [f"{k}={v}" for k, v in sorted(labels.items())],
            },
            interceptors=[self.metrics.interceptor()],
            status_flush=self._flush_status,
            image_records=image_records,
        )
        self.addr = f"{config.listen_host}:{bound_port(self.server)}"  # type: ignore[arg-type]
        self.record.id, self.record.name, self.record.addr = self.node_id, self.name, self.addr
        self.record.labels.clear()
        self.record.labels.update(labels)
        self.record.started_at_ns = time.time_ns()
        reporter = self.reporter = StatusReporter(
            self.kv, keys, self.node_id, self.runtime, self.metrics
        )
        kv, runtime, node_id = self.kv, self.runtime, self.node_id

        async def on_registered() -> None:
            # As a real agent: stale copies a reschedule replaced go, then a full resync.
            image_records.request_resync()
            await _after_registration(runtime, kv, keys, node_id)  # type: ignore[arg-type]
            reporter.request_resync()

        self.registration = Registration(
            self.lease_kv or self.kv,
            keys,
            self.record,
            ttl_s=math.ceil(config.ttl_s),
            heartbeat_s=config.heartbeat_s,
            metrics=self.metrics,
            on_registered=on_registered,
            redial_with=[self.kv] if self.lease_kv is not None else [],
            shared=self.lease,
        )
        await reporter.start()
        await image_records.start()
        await self.registration.start()

    async def _flush_status(self) -> None:
        if self.reporter is not None:
            await self.reporter.flush()

    async def stop(self, deregister: bool = True) -> None:
        """As a real agent leaving: deregister, stop serving. `deregister=False`: the record
        expires with its lease (a node lost, for failover runs)."""
        if self.registration is not None:
            await self.registration.stop(deregister=deregister)
        if self.server is not None:
            await self.server.stop(grace=1)  # type: ignore[attr-defined]
        if self.reporter is not None:
            await self.reporter.stop()
        if self.image_records is not None:
            await self.image_records.stop()
        await self.runtime.close()
        for client in (self.kv, self.lease_kv):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.close()


async def start_nodes(config: HollowConfig) -> list[HollowNode]:
    """Start every hollow node of `config` (START_CONCURRENCY at a time); they register in the
    background. On failure the ones started are stopped again."""
    host = await asyncio.to_thread(describe_host, "", "", "", {}, 0)
    metrics = AgentMetrics()
    lease = None
    if config.shared_lease:
        lease_kv = await KV.connect(config.etcd_endpoints, security=config.etcd_security)
        lease = SharedLease(lease_kv, math.ceil(config.ttl_s), config.heartbeat_s)
        await lease.start()
    nodes = [HollowNode(name, config, host, metrics, lease) for name in config.names()]
    gate = asyncio.Semaphore(START_CONCURRENCY)

    async def start(node: HollowNode) -> None:
        async with gate:
            await node.start()

    try:
        await asyncio.gather(*(start(n) for n in nodes))
    except BaseException:
        await stop_nodes(nodes)
        raise
    return nodes


async def stop_nodes(nodes: list[HollowNode], deregister: bool = True) -> None:
    results = await asyncio.gather(*(n.stop(deregister) for n in nodes), return_exceptions=True)
    for node, result in zip(nodes, results, strict=True):
        if isinstance(result, BaseException):
            log.warning("hollow node %s did not stop cleanly: %s", node.name, result)
    lease = nodes[0].lease if nodes else None
    if lease is not None:
        await lease.stop(revoke=deregister)
        await lease.kv.close()


async def run_hollow(config: HollowConfig, stop: asyncio.Event | None = None) -> None:
    """Host the hollow nodes until `stop` is set (or SIGTERM/SIGINT), then deregister them."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # One line per node and registration is noise at a thousand nodes.
    logging.getLogger("agent.registration").setLevel(logging.WARNING)
    logging.getLogger("agent.status").setLevel(logging.WARNING)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    nodes: list[HollowNode] = []
    try:
        nodes = await start_nodes(config)
        log.info(
            "%d hollow nodes serving on %s (%s … %s)",
            len(nodes),
            config.listen_host,
            nodes[0].name,
            nodes[-1].name,
        )
        await stop.wait()
        log.info("hollow nodes leaving")
    finally:
        await stop_nodes(nodes)
        for signum in handled:
            loop.remove_signal_handler(signum)


def add_hollow_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("discovery", nargs="?", help="etcd://host:port[,host:port]/prefix")
    parser.add_argument("--etcd", action="append", default=[], metavar="HOST:PORT")
    parser.add_argument(
        "--prefix", default=None, help=f"etcd key prefix (default {DEFAULT_PREFIX})"
    )
    parser.add_argument("--count", type=int, required=True, help="how many hollow nodes")
    parser.add_argument("--name-prefix", default="hollow-", help="node names: PREFIX<number>")
    parser.add_argument("--first", type=int, default=0, help="the first node's number")
    parser.add_argument("--listen-host", default="127.0.0.1", help="every node's address")
    parser.add_argument(
        "--label", action="append", default=[], type=_label, metavar="KEY=VALUE", help="repeatable"
    )
    parser.add_argument(
        "--heartbeat", type=_duration, default=DEFAULT_HEARTBEAT_S, help="lease keep-alive period"
    )
    parser.add_argument("--ttl", type=_duration, default=DEFAULT_TTL_S, help="node lease TTL")
    parser.add_argument(
        "--shared-lease",
        action="store_true",
        help="one lease for all the nodes of this process (they live and die together)",
    )
    parser.add_argument("--tlscacert", default="")
    parser.add_argument("--tlscert", default="", help="the nodes' certificate (for --listen-host)")
    parser.add_argument("--tlskey", default="")
    parser.add_argument("--insecure-grpc", action="store_true", help="serve without mutual TLS")
    add_etcd_security_arguments(parser)


def config_from_args(args: argparse.Namespace) -> HollowConfig:
    endpoints, prefix, tls = etcd_and_tls_from_args(args)
    return HollowConfig(
        etcd_endpoints=endpoints,
        count=args.count,
        prefix=prefix,
        name_prefix=args.name_prefix,
        first=args.first,
        listen_host=args.listen_host,
        labels=dict(args.label),
        heartbeat_s=args.heartbeat,
        ttl_s=args.ttl,
        shared_lease=args.shared_lease,
        tls=tls,
        etcd_security=etcd_security_from_args(args),
    )
