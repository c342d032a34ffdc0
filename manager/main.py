"""`flotilla manage`: classic Swarm's `swarm manage` flags, and the process that serves them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from manager.app import make_app
from manager.cluster import Cluster
from manager.metrics import Metrics, metrics_app
from manager.placing import scheduler_for
from manager.rescheduler import DEFAULT_MARGIN_S, Rescheduler
from proto.keys import Keys
from proto.kv import KV, parse_discovery
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


@dataclass
class ManagerConfig:
    etcd: list[str]
    prefix: str
    hosts: list[str] = field(default_factory=lambda: [DEFAULT_HOST])
    strategy: str = "spread"
    filters: list[str] = field(default_factory=lambda: list(FILTERS))
    tls: TlsConfig | None = None
    reschedule_margin_s: float = DEFAULT_MARGIN_S
    metrics: str = ""  # HOST:PORT of the Prometheus endpoint, "" for none


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
    parser.add_argument("--tls", action="store_true", help="accepted; TLS towards agents")
    parser.add_argument("--tlsverify", action="store_true")
    parser.add_argument("--tlscacert", default="")
    parser.add_argument("--tlscert", default="")
    parser.add_argument("--tlskey", default="")
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
    tls = None
    if args.tls or args.tlsverify:
        if not (args.tlscert and args.tlskey):
            raise ValueError("--tlscert and --tlskey must be provided when using --tls")
        if args.tlsverify and not args.tlscacert:
            raise ValueError("--tlscacert must be provided when using --tlsverify")
        tls = TlsConfig(cert=args.tlscert, key=args.tlskey, ca=args.tlscacert)
    elif args.tlscert or args.tlskey or args.tlscacert:
        raise ValueError(
            "--tlscert, --tlskey and --tlscacert require the use of either --tls or --tlsverify"
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
        tls=tls,
    )


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid --metrics {text!r}: want HOST:PORT")
    return host.strip("[]"), int(port)


def _site(runner: web.AppRunner, host: str) -> web.BaseSite:
    parts = urlsplit(host)
    if parts.scheme == "unix":
        path = parts.path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return web.UnixSite(runner, path)
    return web.TCPSite(runner, parts.hostname or "127.0.0.1", parts.port or 2375)


async def run_manager(config: ManagerConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT when no event is given)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    kv = await KV.connect(config.etcd)
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
        runner = web.AppRunner(
            make_app(cluster, settings), access_log=None, handler_cancellation=True
        )
        await runner.setup()
        for host in config.hosts:
            await _site(runner, host).start()
            log.info("listening on %s", host)
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


async def _start_cluster(cluster: Cluster, stop: asyncio.Event) -> None:
    # etcd may come up after the manager: keep trying rather than exit.
    from proto.kv import KVError

    while not stop.is_set():
        try:
            await cluster.start()
            return
        except KVError as e:
            log.warning("cannot read the cluster from etcd yet: %s", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
