"""The Agent service's transport, shared by both ends: channel options, mutual TLS files and a
client stub for the manager (and tests, tools)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.protobuf.message_factory import GetMessageClass

from proto import agent_pb2, agent_pb2_grpc

# Image layers and archives are streamed in 64 KiB chunks, but create bodies, inspect JSON and
# `docker ps` of many containers can be large: allow generous single messages.
MAX_MESSAGE = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    # Notice a dead manager (or agent) on an idle stream (attach, events) within a minute.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # A node that was down is dialled again within a second of its agent being back: gRPC's
    # default back-off grows to two minutes, and calls fail at once ("failed to connect to all
    # addresses") until its next attempt, long after the node is Healthy again.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
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


# The channel credentials of each TlsConfig, with the files' change times they were read at:
# a manager dialling 1,000 nodes at start read the three files 1,000 times; a renewed
# certificate (new files) is read again for the next channel.
_credentials: dict[TlsConfig, tuple[tuple[int, ...], grpc.ChannelCredentials]] = {}


def channel_credentials(tls: TlsConfig) -> grpc.ChannelCredentials:
    stamp = tuple(os.stat(path).st_mtime_ns for path in (tls.cert, tls.key, tls.ca))
    cached = _credentials.get(tls)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    cert, key, ca = tls.read()
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    _credentials[tls] = (stamp, creds)
    return creds


def agent_channel(target: str, tls: TlsConfig | None = None) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=CHANNEL_OPTIONS)


# Each Agent method: (path, channel factory name, request class, reply class), from the service
# descriptor, so the lazy stub below calls exactly what the generated AgentStub would.
_KINDS = {
    (False, False): "unary_unary",
    (False, True): "unary_stream",
    (True, False): "stream_unary",
    (True, True): "stream_stream",
}
_METHODS: dict[str, tuple[str, str, Any, Any]] = {
    m.name: (
        f"/{m.containing_service.full_name}/{m.name}",
        _KINDS[(m.client_streaming, m.server_streaming)],
        GetMessageClass(m.input_type),
        GetMessageClass(m.output_type),
    )
    for m in agent_pb2.DESCRIPTOR.services_by_name["Agent"].methods
}


class LazyAgentStub:
    """The generated AgentStub, each method made on its first use: AgentStub makes all 52 at
    once, and a manager meeting 1,000 nodes at start (one Ping each) spent a second of its
    loop making 52,000 callables it mostly never calls."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - a gRPC multi-callable
        try:
            path, kind, request, reply = _METHODS[name]
        except KeyError:
            raise AttributeError(name) from None
        method = getattr(self.channel, kind)(
            path,
            request_serializer=request.SerializeToString,
            response_deserializer=reply.FromString,
            _registered_method=True,
        )
        setattr(self, name, method)  # found as an attribute from now on
        return method


def agent_client(target: str, tls: TlsConfig | None = None) -> agent_pb2_grpc.AgentStub:
    """A stub for the agent at `target`; its channel is `stub.channel` (close it when done)."""
    return cast(agent_pb2_grpc.AgentStub, LazyAgentStub(agent_channel(target, tls)))
