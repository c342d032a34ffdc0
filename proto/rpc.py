"""The Agent service's transport, shared by both ends: channel options, mutual TLS files and a
client stub for the manager (and tests, tools)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from proto import agent_pb2_grpc

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


def agent_channel(target: str, tls: TlsConfig | None = None) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    cert, key, ca = tls.read()
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    return grpc.aio.secure_channel(target, creds, options=CHANNEL_OPTIONS)


def agent_client(target: str, tls: TlsConfig | None = None) -> agent_pb2_grpc.AgentStub:
    """A stub for the agent at `target`; its channel is `stub.channel` (close it when done)."""
    channel = agent_channel(target, tls)
    stub = agent_pb2_grpc.AgentStub(channel)
    stub.channel = channel  # type: ignore[attr-defined]
    return stub
