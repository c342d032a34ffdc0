"""`flotilla manage`: classic Swarm's `swarm manage` flags, and the process that serves them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import signal
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from manager.api.container_list import warm_rows
from manager.app import make_app
from manager.cluster import Cluster
from manager.metrics import Metrics, metrics_app
from manager.placing import scheduler_for
from manager.rescheduler import DEFAULT_MARGIN_S, Rescheduler
from proto.etcd_flags import add_etcd_security_arguments, etcd_security_from_args
from proto.keys import Keys
from proto.kv import KV, EtcdSecurity, parse_discovery
from proto.rpc import TlsConfig

log = logging.getLogger(__name__)

DEFAULT_DISCOVERY = "etcd://127.0.0.1:2379/flotilla"
DEFAULT_HOST = "tcp://127.0.0.1:2375"
STRATEGIES = ("spread", "binpack", "random")
FILTERS = (
    "health",
    "port",
    "containerslots",
    "dependency",
    "affinity",
    "constraint",
    "whitelist",
)


INSECURE_TCP = (
    "binding to an IP address without --tlsverify is insecure and gives root access on every "
    "node of the cluster to everyone who can reach it: use --tlsverify --tlscacert --tlscert "
    "--tlskey, or --insecure-tcp if that is really meant"
)


@dataclass(frozen=True)
class ApiTls:
    """The Engine API listener's TLS, as dockerd's flags: `verify` requires client
    certificates signed by `ca` (a client without one is turned away in the handshake)."""

    cert: str
    key: str
    ca: str = ""
    verify: bool = False

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # dockerd's default minimum
        ctx.load_cert_chain(self.cert, self.key)
        if self.verify:
            ctx.load_verify_locations(self.ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def is_loopback(host: str) -> bool:
    """Whether tcp://`host` listens on loopback only (an empty host is every interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name may resolve anywhere: not trusted to be local


@dataclass
class ManagerConfig:
    etcd: list[str]
    prefix: str
    hosts: list[str] = field(default_factory=lambda: [DEFAULT_HOST])
    strategy: str = "spread"
    filters: list[str] = field(default_factory=lambda: list(FILTERS))
    # The Engine API's TLS on tcp:// listeners (unix sockets are guarded by their mode).
    api_tls: ApiTls | None = None
    # What the manager presents to agents and the CA their certificates must be from.
    tls: TlsConfig | None = None
    reschedule_margin_s: float = DEFAULT_MARGIN_S
    metrics: str = ""  # HOST:PORT of the Prometheus endpoint, "" for none
    etcd_security: EtcdSecurity | None = None


def add_manage_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "discovery",
        nargs="?",
        default=DEFAULT_DISCOVERY,
        help=f"etcd://host:port[,host:port]/prefix (default {DEFAULT_DISCOVERY})",
    )
    parser.add_argument(
        "-H",
        "--host",
        action="append",
        default=[],
        help=f"listen address, tcp://ip:port or unix:///path (repeatable; default {DEFAULT_HOST})",
    )
    parser.add_argument("--strategy", default="spread", choices=STRATEGIES)
    parser.add_argument(
        "-f",
        "--filter",
        action="append",
        default=[],
        help=f"scheduler filter (repeatable; default all: {', '.join(FILTERS)})",
    )
    parser.add_argument(
        "--tls", action="store_true", help="serve the Engine API over TLS (implied by --tlsverify)"
    )
    parser.add_argument(
        "--tlsverify",
        action="store_true",
        help="TLS and require client certificates signed by --tlscacert",
    )
    parser.add_argument("--tlscacert", default="", help="CA clients' certificates are from")
    parser.add_argument("--tlscert", default="", help="the Engine API's certificate")
    parser.add_argument("--tlskey", default="", help="the Engine API's key")
    parser.add_argument(
        "--node-tlscacert",
        default="",
        help="CA the agents' certificates are from (default: --tlscacert)",
    )
    parser.add_argument(
        "--node-tlscert",
        default="",
        help="client certificate presented to agents (default: --tlscert)",
    )
    parser.add_argument("--node-tlskey", default="", help="its key (default: --tlskey)")
    parser.add_argument(
        "--insecure-tcp",
        action="store_true",
        help="allow a tcp:// listener on a non-loopback address without --tlsverify "
        "(anyone who reaches it drives the cluster)",
    )
    add_etcd_security_arguments(parser)
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--reschedule-margin",
        type=float,
        default=DEFAULT_MARGIN_S,
        help="seconds to wait after a node's lease is gone before its containers are "
        f"rescheduled (covers the fence of their old copies; default {DEFAULT_MARGIN_S})",
    )
    parser.add_argument(
        "--metrics", default="", help="serve Prometheus metrics on HOST:PORT (/metrics)"
    )


def config_from_args(args: argparse.Namespace) -> ManagerConfig:
    endpoints, prefix = parse_discovery(args.discovery)
    hosts = args.host or [DEFAULT_HOST]
    for host in hosts:
        scheme = urlsplit(host).scheme
        if scheme not in ("tcp", "unix"):
            raise ValueError(f"invalid -H {host!r}: want tcp://ip:port or unix:///path")
    filters = args.filter or list(FILTERS)
    for name in filters:
        if name not in FILTERS:
            raise ValueError(f"unknown filter {name!r} (known: {', '.join(FILTERS)})")
    api_tls = None
    if args.tls or args.tlsverify:
        if not (args.tlscert and args.tlskey):
            raise ValueError("--tlscert and --tlskey must be provided when using --tls")
        if args.tlsverify and not args.tlscacert:
            raise ValueError("--tlscacert must be provided when using --tlsverify")
        api_tls = ApiTls(args.tlscert, args.tlskey, args.tlscacert, args.tlsverify)
    elif args.tlscert or args.tlskey or args.tlscacert:
        raise ValueError(
            "--tlscert, --tlskey and --tlscacert require the use of either --tls or --tlsverify"
        )
    if not args.insecure_tcp and not (api_tls and api_tls.verify):
        for host in hosts:
            parts = urlsplit(host)
            if parts.scheme == "tcp" and not is_loopback(parts.hostname or ""):
                raise ValueError(f"refusing to listen on {host}: {INSECURE_TCP}")
    node_files = (
        args.node_tlscert or (args.tlscert if api_tls else ""),
        args.node_tlskey or (args.tlskey if api_tls else ""),
        args.node_tlscacert or (args.tlscacert if api_tls else ""),
    )
    tls = None
    if all(node_files):
        tls = TlsConfig(*node_files)
    elif args.node_tlscert or args.node_tlskey or args.node_tlscacert:
        raise ValueError(
            "agents' TLS needs a certificate, its key and a CA "
            "(--node-tlscert, --node-tlskey, --node-tlscacert, or the --tls ones)"
        )
    if args.reschedule_margin < 0:
        raise ValueError("--reschedule-margin must not be negative")
    if args.metrics:
        _host_port(args.metrics)
    return ManagerConfig(
        reschedule_margin_s=args.reschedule_margin,
        metrics=args.metrics,
        etcd=endpoints,
        prefix=prefix,
        hosts=hosts,
        strategy=args.strategy,
        filters=filters,
        api_tls=api_tls,
        tls=tls,
        etcd_security=etcd_security_from_args(args),
    )


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid --metrics {text!r}: want HOST:PORT")
    return host.strip("[]"), int(port)


def _site(runner: web.AppRunner, host: str, tls: ApiTls | None) -> web.BaseSite:
    parts = urlsplit(host)
    if parts.scheme == "unix":
        path = parts.path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return web.UnixSite(runner, path)
    # dockerd's default ports: 2376 with TLS, 2375 without.
    port = parts.port or (2376 if tls else 2375)
    ssl_context = tls.context() if tls else None
    # An empty host is every interface, as in dockerd's `-H tcp://:2376`.
    return web.TCPSite(runner, parts.hostname or None, port, ssl_context=ssl_context)


async def run_manager(config: ManagerConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT when no event is given)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    kv = await KV.connect(config.etcd, security=config.etcd_security)
    cluster = Cluster(kv, Keys(config.prefix), config.tls)
    runner: web.AppRunner | None = None
    metrics_runner: web.AppRunner | None = None
    rescheduler: Rescheduler | None = None
    try:
        await _start_cluster(cluster, stop)
        settings: dict[str, Any] = {
            "strategy": config.strategy,
            "filters": list(config.filters),
            "id": uuid.uuid4().hex,
        }
        metrics = Metrics() if config.metrics else None
        if metrics is not None:
            metrics_runner = web.AppRunner(metrics_app(metrics, cluster), access_log=None)
            await metrics_runner.setup()
            host, port = _host_port(config.metrics)
            await web.TCPSite(metrics_runner, host, port).start()
            log.info("metrics on http://%s/metrics", config.metrics)
        rescheduler = Rescheduler(
            cluster, lambda: scheduler_for(settings), config.reschedule_margin_s, metrics
        )
        rescheduler.start()
        # handler_cancellation: a client that walks away (the CLI abandons its `wait` after
        # `docker run -d`) cancels the handler, and with it the agent RPC it waits on.
        app = make_app(cluster, settings)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        # Start-up work in the order clients need it: the records (read above), the rows of
        # the first `docker ps` (30,000 at scale: what a client waits on after a restart), and
        # only then the nodes' validation, 1,000 TLS handshakes that only `docker info`'s
        # Healthy waits for.
        with _collector_paused():
            warm_rows(app)
        await runner.setup()
        for host in config.hosts:
            await _site(runner, host, config.api_tls).start()
            log.info("listening on %s", host)
        cluster.validate_nodes()
        await stop.wait()
    finally:
        if rescheduler is not None:
            await rescheduler.close()
        if runner is not None:
            await runner.cleanup()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await cluster.close()
        await kv.close()


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while start-up loads what the manager keeps:
    every object made then lives on, yet the allocations alone set off ~900 collections that
    walk the growing heap again and again (0.4 s of 2.5 at 30,000 containers)."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _start_cluster(cluster: Cluster, stop: asyncio.Event) -> None:
    # etcd may come up after the manager: keep trying rather than exit.
    from proto.kv import KVError

    while not stop.is_set():
        try:
            with _collector_paused():  # not while it waits for etcd
                await cluster.start()
            return
        except KVError as e:
            log.warning("cannot read the cluster from etcd yet: %s", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
