"""The agent's gRPC server (and a client helper for the manager and tests)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from agent.events import EventBus
from agent.service import AgentService
from proto import agent_pb2_grpc
from runtime.containers import Runtime

# Image layers and archives are streamed in 64 KiB chunks, but create bodies, inspect JSON and
# `docker ps` of many containers can be large: allow generous single messages.
MAX_MESSAGE = 64 * 1024 * 1024
_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    # Notice a dead manager (or agent) on an idle stream (attach, events) within a minute.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


@dataclass(frozen=True)
class TlsConfig:
    """PEM files for mutual TLS: this side's certificate and key, and the CA both trust."""

    cert: str
    key: str
    ca: str

    def read(self) -> tuple[bytes, bytes, bytes]:
        with open(self.cert, "rb") as c, open(self.key, "rb") as k, open(self.ca, "rb") as a:
            return c.read(), k.read(), a.read()


async def start_grpc_server(
    runtime: Runtime,
    events: EventBus,
    listen: str,
    tls: TlsConfig | None = None,
    info_extra: dict[str, Any] | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> grpc.aio.Server:
    """Serve the Agent service on `listen` (host:port; port 0 picks one, see `bound_port`).

    With `tls`, only clients presenting a certificate signed by `tls.ca` (the manager) get in.
    `interceptors` see every call (the agent's metrics count operations and latency there).
    """
    server = grpc.aio.server(options=_OPTIONS, interceptors=list(interceptors))
    service = AgentService(runtime, events, info_extra)
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


def agent_channel(target: str, tls: TlsConfig | None = None) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(target, options=_OPTIONS)
    cert, key, ca = tls.read()
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    return grpc.aio.secure_channel(target, creds, options=_OPTIONS)


def agent_client(target: str, tls: TlsConfig | None = None) -> agent_pb2_grpc.AgentStub:
    """A stub for the agent at `target`; its channel is `stub.channel` (close it when done)."""
    channel = agent_channel(target, tls)
    stub = agent_pb2_grpc.AgentStub(channel)
    stub.channel = channel  # type: ignore[attr-defined]
    return stub
