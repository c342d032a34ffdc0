"""`flotilla join`: one node's agent. Opens the runtime (re-adopting running containers), serves
the manager over gRPC, registers the node in etcd under a lease and reports container state.
On SIGTERM it fences its reschedulable containers (they may be started elsewhere now), then
deregisters and exits; other containers keep running (they belong to their shims)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import re
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent import identity, nodeid
from agent.embedded_dns import EmbeddedDNS
from agent.events import EventBus
from agent.fencing import FENCE_FILE, Fence, FenceFile, PeerClient
from agent.image_records import ImagesReporter
from agent.metrics import AgentMetrics
from agent.overlay_directory import EtcdDirectory
from agent.overlay_peers import PeerSync
from agent.overlay_view import OverlayView
from agent.registration import Registration, describe_host
from agent.server import start_grpc_server
from agent.service_drills import DrillSettings
from agent.status import StatusReporter
from agent.tasks import cancel
from proto.docker.errors import DockerError
from proto.etcd_flags import add_etcd_security_arguments, etcd_security_from_args
from proto.keys import DEFAULT_PREFIX, Keys
from proto.kv import KV, EtcdSecurity, KVError, parse_discovery
from proto.rpc import TlsConfig
from runtime import fence as fence_policy
from runtime.containers import Runtime
from runtime.overlay import OverlayPlane
from runtime.registry_client import DEFAULT_CERTS_DIR, RegistryConfig, validate_mirror

log = logging.getLogger(__name__)

DEFAULT_DATA_ROOT = "/var/lib/flotilla"
DEFAULT_PORT = 4243
# Failover defaults (docs/failover.md "Agent side"): a node is declared down within TTL + 0.5 s
# (etcd's lessor checks every 500 ms); its reschedulable containers are dead by TTL - guard +
# 0.1 s; a blip of 2 s is survived (last success + 2 s + redial < TTL - guard - heartbeat).
DEFAULT_HEARTBEAT_S = 0.25
DEFAULT_TTL_S = 3.0  # etcd leases are whole seconds
DEFAULT_FENCE_GUARD_S = 0.25
STOP_FENCE_WAIT_S = 10.0  # SIGTERM: how long to wait for fenced containers to die


@dataclass
class AgentConfig:
    etcd_endpoints: list[str]
    advertise: str  # "ip:port" the manager dials
    prefix: str = DEFAULT_PREFIX
    listen: str = ""  # default: advertise
    name: str = field(default_factory=socket.gethostname)
    labels: dict[str, str] = field(default_factory=dict)
    data_root: str = DEFAULT_DATA_ROOT
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    ttl_s: float = DEFAULT_TTL_S
    fence_guard_s: float = DEFAULT_FENCE_GUARD_S
    cgroup_parent: str = ""  # default: flotilla/<name>
    metrics_listen: str = ""  # "ip:port"; empty: no metrics endpoint
    bridge_subnet: str = "172.17.0.0/16"
    tls: TlsConfig | None = None
    allow_drills: bool = False  # the Drill RPC may inject faults on this host
    etcd_security: EtcdSecurity | None = None
    registries: RegistryConfig = field(default_factory=RegistryConfig)

    def __post_init__(self) -> None:
        self.listen = self.listen or self.advertise
        self.cgroup_parent = self.cgroup_parent or f"flotilla/{self.name}"
        if not 0 < self.heartbeat_s < self.ttl_s:
            raise ValueError(
                f"heartbeat ({self.heartbeat_s}s) must be shorter than ttl ({self.ttl_s}s)"
            )
        if not 0 <= self.fence_guard_s < math.ceil(self.ttl_s) - self.heartbeat_s:
            raise ValueError(
                f"fence guard ({self.fence_guard_s}s) must be at least 0 and leave more than one "
                f"heartbeat of the ttl ({math.ceil(self.ttl_s)}s)"
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
    parser.add_argument(
        "--heartbeat",
        type=_duration,
        default=DEFAULT_HEARTBEAT_S,
        help=f"lease keep-alive period (default {DEFAULT_HEARTBEAT_S}s)",
    )
    parser.add_argument(
        "--ttl",
        type=_duration,
        default=DEFAULT_TTL_S,
        help=f"node lease TTL, rounded up to whole seconds (default {DEFAULT_TTL_S:g}s)",
    )
    parser.add_argument(
        "--fence-guard",
        type=_duration,
        default=DEFAULT_FENCE_GUARD_S,
        help="reschedulable containers are killed this long before the lease can expire "
        f"(default {DEFAULT_FENCE_GUARD_S}s)",
    )
    parser.add_argument("--metrics", default="", metavar="IP:PORT", help="serve /metrics here")
    parser.add_argument("--cgroup-parent", default="", help="default: flotilla/<name>")
    parser.add_argument("--bridge-subnet", default="172.17.0.0/16")
    parser.add_argument(
        "--tlscacert", default="", help="the cluster CA: callers' certificates must be from it"
    )
    parser.add_argument(
        "--tlscert",
        default="",
        help="this agent's certificate (flotilla certs node NAME --host ADVERTISE-HOST)",
    )
    parser.add_argument("--tlskey", default="", help="this agent's key")
    parser.add_argument(
        "--insecure-grpc",
        action="store_true",
        help="serve gRPC without mutual TLS (anyone who reaches the port is root on this host)",
    )
    add_etcd_security_arguments(parser)
    parser.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]|CIDR",
        help="pull from this registry over plain HTTP or unverified TLS, as dockerd's option "
        "(127.0.0.0/8 always is); repeatable",
    )
    parser.add_argument(
        "--registry-mirror",
        action="append",
        default=[],
        metavar="URL",
        help="a Docker Hub mirror (http[s]://host[:port]), tried before the hub, as dockerd's "
        "option; repeatable",
    )
    parser.add_argument(
        "--registry-certs-dir",
        default=DEFAULT_CERTS_DIR,
        metavar="DIR",
        help=f"<DIR>/<host:port>/ca.crt: CAs of registries (default {DEFAULT_CERTS_DIR})",
    )
    parser.add_argument(
        "--allow-drills",
        action="store_true",
        help="let `flotilla drill` inject faults on this host (always undone within 300s)",
    )


def etcd_and_tls_from_args(
    args: argparse.Namespace,
) -> tuple[list[str], str, TlsConfig | None]:
    """The etcd endpoints, key prefix and gRPC TLS files that `join` and `hollow` share."""
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
    if not all(tls_files) and not args.insecure_grpc:
        raise ValueError(
            "refusing to serve gRPC without mutual TLS: anyone who reaches it could run a "
            "privileged container with the host's / mounted; give --tlscacert, --tlscert and "
            "--tlskey (see `flotilla certs`), or --insecure-grpc if that is really meant"
        )
    tls = TlsConfig(args.tlscert, args.tlskey, args.tlscacert) if all(tls_files) else None
    return endpoints, prefix, tls


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    endpoints, prefix, tls = etcd_and_tls_from_args(args)
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
        fence_guard_s=args.fence_guard,
        cgroup_parent=args.cgroup_parent,
        metrics_listen=args.metrics,
        bridge_subnet=args.bridge_subnet,
        tls=tls,
        allow_drills=args.allow_drills,
        etcd_security=etcd_security_from_args(args),
        registries=RegistryConfig(
            certs_dir=args.registry_certs_dir,
            insecure=tuple(args.insecure_registry),
            mirrors=tuple(validate_mirror(url) for url in args.registry_mirror),
        ),
    )


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
    image_records: ImagesReporter | None = None
    registration: Registration | None = None

    def sink(type: str, action: str, id: str, attrs: dict[str, str]) -> None:
        bus.publish(type, action, id, attrs)
        if reporter is not None:
            reporter.notify(type, action, id, attrs)
        if action == "die" and registration is not None and fence.holding() and _fenced(id):
            # The exit of a fenced container recorded after this node renewed again (a thawed
            # agent sees its shims' kills late): the renewal's restart missed it.
            registration.rerun_hook()

    def _fenced(cid: str) -> bool:
        with contextlib.suppress(DockerError):
            return bool(runtime.get(cid).fenced)
        return False

    fence_path = os.path.join(config.data_root, FENCE_FILE)
    # Overlay networks (docs/networking.md): the view of etcd's networks and endpoints feeds
    # the peer programming, the address claims and the embedded DNS. etcd is dialled lazily,
    # so the agent starts (and re-adopts its containers) while etcd is away.
    kv = await KV.connect(config.etcd_endpoints, security=config.etcd_security)
    keys = Keys(config.prefix)
    plane = OverlayPlane(_advertise_ip(config.advertise))
    view = OverlayView(kv, keys)
    # `runtime` is made below; the sync asks it only once running.
    peers_sync = PeerSync(view, plane, node_id, lambda: runtime.user_nets.in_use())
    view.on_change = peers_sync.changed
    directory = EtcdDirectory(
        kv,
        keys,
        view,
        peers_sync,
        node_id,
        plane.vtep_ip,
        lease=lambda: registration.lease_id if registration is not None else 0,
        labels_of=lambda cid: identity.labels_of(runtime.get(cid)),
    )
    dns = directory.dns = EmbeddedDNS(directory.resolve, reverse=directory.reverse)
    runtime = Runtime(
        config.data_root,
        node_name=config.name,
        cgroup_parent=config.cgroup_parent,
        bridge_subnet=config.bridge_subnet,
        events=sink,
        fence_path=fence_path,
        directory=directory,
        plane=plane,
        registries=config.registries,
    )
    ttl_s = math.ceil(config.ttl_s)
    # As long as a keep-alive may take: an answer is worth waiting for (the extension counts
    # from the ask), a first call to a peer dials it, and the peers may be busy.
    peers = PeerClient(node_id, timeout_s=max(2 * config.heartbeat_s, 0.5), tls=config.tls)
    fence = Fence(
        FenceFile(fence_path),
        ttl_s=ttl_s,
        guard_s=config.fence_guard_s,
        heartbeat_s=config.heartbeat_s,
        metrics=metrics,
        ask=peers.ask,
    )
    fence_task: asyncio.Task[None] | None = None
    lease_kv: KV | None = None  # the registration's own: it redials after a failure
    server: Any = None
    metrics_runner: Any = None
    try:
        fence.start()
        await view.start()
        await peers_sync.start()
        await runtime.open()  # re-adopts containers that kept running while we were away
        metrics.attach_runtime(runtime)
        lease_kv = await KV.connect(config.etcd_endpoints, security=config.etcd_security)
        record = await asyncio.to_thread(
            describe_host, node_id, config.name, config.advertise, config.labels, started_ns
        )
        reporter = StatusReporter(kv, keys, node_id, runtime, metrics)
        image_records = ImagesReporter(
            kv,
            keys,
            node_id,
            runtime.images,
            lease=lambda: registration.lease_id if registration is not None else 0,
        )
        bus.listeners.append(image_records.on_event)

        async def on_registered() -> None:
            assert reporter is not None
            image_records.request_resync()  # first: it needs nothing the checks below do
            await _after_registration(runtime, kv, keys, node_id)
            await _reassert_addresses(runtime, directory)
            reporter.request_resync()

        registration = Registration(
            lease_kv,
            keys,
            record,
            ttl_s=ttl_s,
            heartbeat_s=config.heartbeat_s,
            metrics=metrics,
            on_registered=on_registered,
            fence=fence,
            redial_with=[kv],
        )
        server = await _serve(
            runtime, bus, config, node_id, metrics, fence, image_records, reporter.flush
        )
        if config.metrics_listen:
            metrics_runner = await metrics.serve(config.metrics_listen)
        await reporter.start()
        await image_records.start()
        await registration.start()
        fence_task = asyncio.create_task(fence.run(), name="fence")
        log.info("agent %s (%s) serving on %s", config.name, node_id, config.listen)
        await stop.wait()
        log.info("agent %s stopping; reschedulable containers are fenced", config.name)
        # Leaving the cluster: the manager reschedules once the lease is gone, so the copies
        # here must be dead before that.
        fence.fence_now()
        await _wait_fenced(runtime, STOP_FENCE_WAIT_S)
    finally:
        await cancel(fence_task)
        # Deregister first so the manager stops sending work, then stop serving.
        if registration is not None:
            await registration.stop(deregister=True)
        await peers.close()
        if server is not None:
            await server.stop(grace=2)
        if reporter is not None:
            await reporter.stop()
        if image_records is not None:
            await image_records.stop()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await peers_sync.stop()
        await view.stop()
        await dns.close()
        await runtime.close()
        for client in (kv, lease_kv):
            if client is not None:
                await client.close()
        for signum in handled:
            loop.remove_signal_handler(signum)


async def _after_registration(runtime: Runtime, kv: KV, keys: Keys, node_id: str) -> None:
    """Keep the copies a reschedule has not replaced yet (started again if fenced), then remove
    the stale copies etcd says were replaced (also those a reschedule claimed meanwhile), then
    start the reschedulable containers whose restart-on-boot waited for that check. etcd unreadable:
    retried while registered (this runs beside the keep-alives and is cancelled with them)."""
    while True:
        try:
            await identity.reclaim_copies(runtime, kv, keys, node_id)
            await identity.remove_stale_copies(runtime, kv, keys, node_id)
            break
        except KVError as e:
            log.warning("stale-copy check failed, retrying: %s", e)
            await asyncio.sleep(1.0)
    deferred, runtime.deferred_boot = runtime.deferred_boot, []
    for cid in deferred:
        with contextlib.suppress(DockerError):  # removed as stale, or cannot start
            if not runtime.get(cid).running:
                await runtime.start(cid)


async def _reassert_addresses(runtime: Runtime, directory: EtcdDirectory) -> None:
    """The overlay addresses of the running containers, claimed again under the new lease."""
    while True:
        try:
            await directory.reassert(runtime.user_nets.held)
            return
        except KVError as e:
            log.warning("re-claiming overlay addresses failed, retrying: %s", e)
            await asyncio.sleep(1.0)


def _advertise_ip(advertise: str) -> str:
    """The node's underlay address (the VTEP of its overlay networks): the host part of
    --advertise, resolved when it is a name."""
    host = advertise.rsplit(":", 1)[0].strip("[]")
    return socket.gethostbyname(host)


async def _wait_fenced(runtime: Runtime, timeout_s: float) -> None:
    """Until no reschedulable container runs here (their shims fence them), at most timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [
            r.id
            for r in runtime.list()
            if r.running and fence_policy.is_reschedulable(identity.labels_of(r))
        ]
        if not alive:
            return
        if time.monotonic() > deadline:
            log.error("reschedulable containers still running after the fence: %s", alive)
            return
        await asyncio.sleep(0.05)


async def _serve(
    runtime: Runtime,
    bus: EventBus,
    config: AgentConfig,
    node_id: str,
    metrics: AgentMetrics,
    fence: Fence,
    image_records: ImagesReporter,
    status_flush: Callable[[], Awaitable[None]],
) -> Any:
    labels = [f"{k}={v}" for k, v in sorted(config.labels.items())]
    return await start_grpc_server(
        runtime,
        bus,
        config.listen,
        tls=config.tls,
        info_extra={"ID": node_id, "Name": config.name, "Labels": labels},
        interceptors=[metrics.interceptor()],  # operation counts and latency
        drills=DrillSettings(config.allow_drills, list(config.etcd_endpoints)),
        fence=fence,
        image_records=image_records,
        status_flush=status_flush,
    )
