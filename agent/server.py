"""The agent's gRPC server (its client side lives in proto/rpc.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from agent.authz import RoleInterceptor
from agent.events import EventBus
from agent.fencing import Fence
from agent.image_records import ImagesReporter
from agent.service import AgentService
from agent.service_drills import DrillSettings
from proto import agent_pb2_grpc
from proto.rpc import CHANNEL_OPTIONS, TlsConfig
from runtime.containers import Runtime


async def start_grpc_server(
    runtime: Runtime,
    events: EventBus,
    listen: str,
    tls: TlsConfig | None = None,
    info_extra: dict[str, Any] | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    drills: DrillSettings | None = None,
    fence: Fence | None = None,
    status_flush: Callable[[], Awaitable[None]] | None = None,
    image_records: ImagesReporter | None = None,
) -> grpc.aio.Server:
    """Serve the Agent service on `listen` (host:port; port 0 picks one, see `bound_port`).

    With `tls`, only clients presenting a certificate signed by `tls.ca` get in, and they may
    make the calls their certificate's role allows (agent/authz.py).
    `interceptors` see every call (the agent's metrics count operations and latency there).
    `drills`: whether (and how) the Drill RPC may inject faults on this host (default: refused).
    `fence`: the node fence PeerEtcdStatus answers from (agent/fencing.py).
    `status_flush`: what lifecycle calls await before answering (StatusReporter.flush).
    `image_records`: the node's images record; RPCs that change images wait for its write.
    """
    # With TLS, the certificate's role decides which calls it may make (agent/authz.py).
    guards = [] if tls is None else [RoleInterceptor()]
    server = grpc.aio.server(options=CHANNEL_OPTIONS, interceptors=[*interceptors, *guards])
    service = AgentService(runtime, events, info_extra)
    if drills is not None:
        service.drill_settings = drills
    service.fence = fence
    service.status_flush = status_flush
    service.image_records = image_records
    agent_pb2_grpc.add_AgentServicer_to_server(service, server)
    if tls is None:
        port = server.add_insecure_port(listen)
    else:
        cert, key, ca = tls.read()
        creds = grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=True
        )
        port = server.add_secure_port(listen, creds)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    server.bound_port = port  # type: ignore[attr-defined]
    await server.start()
    return server


def bound_port(server: grpc.aio.Server) -> int:
    """The port `start_grpc_server` bound (useful with port 0)."""
    return int(server.bound_port)  # type: ignore[attr-defined]
