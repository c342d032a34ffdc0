"""The agents' gRPC port as an attacker on the network finds it, against a real dev cluster
(whose agents and manager run with the certificates of its own CA): without a client
certificate, or with one from another CA, ContainerCreate never reaches the agent (the
handshake fails); the manager, with its certificate, drives the nodes as before."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from deploy import certs
from deploy import devcluster as dc
from proto import agent_pb2 as pb
from proto import agent_pb2_grpc
from proto.rpc import CHANNEL_OPTIONS, TlsConfig, agent_channel
from tests.fixtures import dev_cluster, docker


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(2) as nodes:
        yield nodes


CREATE = pb.ContainerCreateRequest(
    json=json.dumps({"Image": "busybox", "Cmd": ["true"]}).encode(), name="intruder"
)


async def _create(make: Callable[[], grpc.aio.Channel]) -> Any:
    channel = make()  # an aio channel belongs to the running loop
    try:
        return await agent_pb2_grpc.AgentStub(channel).ContainerCreate(CREATE, timeout=10)
    finally:
        await channel.close()


def _refused(make: Callable[[], grpc.aio.Channel]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        asyncio.run(_create(make))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value


def test_the_manager_drives_the_nodes_over_mutual_tls(cluster: dict[str, object]) -> None:
    out = docker("run", "--rm", "-e", "constraint:node==node-1", "busybox", "echo", "over-tls")
    assert out.stdout.strip() == "over-tls"


def test_unauthenticated_clients_cannot_create_containers(
    cluster: dict[str, object], tmp_path: Any
) -> None:
    addr = f"{dc.node_ip(1)}:4243"
    # Plaintext: no TLS at all.
    _refused(lambda: grpc.aio.insecure_channel(addr, options=CHANNEL_OPTIONS))
    # TLS trusting the cluster's CA but without a client certificate.
    with open(dc.dev_tls().ca, "rb") as f:
        ca = f.read()
    creds = grpc.ssl_channel_credentials(ca)
    _refused(lambda: grpc.aio.secure_channel(addr, creds, CHANNEL_OPTIONS))
    # A certificate from another CA (for the right name and address).
    other = str(tmp_path / "other")
    certs.make_ca(other)
    stranger = certs.make_cert(other, "node-1", ["node-1", dc.node_ip(1)])
    _refused(lambda: agent_channel(addr, TlsConfig(stranger.cert, stranger.key, dc.dev_tls().ca)))
    names = docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert not any(n.endswith("intruder") for n in names)


def test_a_cluster_client_certificate_gets_in(cluster: dict[str, object]) -> None:
    async def ping() -> str:
        channel = agent_channel(f"{dc.node_ip(1)}:4243", dc.dev_tls())
        try:
            return (
                await agent_pb2_grpc.AgentStub(channel).Ping(pb.PingRequest(), timeout=10)
            ).version
        finally:
            await channel.close()

    assert asyncio.run(ping())


def test_a_node_certificate_cannot_drive_another_node(cluster: dict[str, object]) -> None:
    """Root on node-0 can read node-0's key; with it, node-1's agent answers the peer check of
    fencing and refuses everything else (PERMISSION_DENIED), so no container appears there."""
    addr = f"{dc.node_ip(1)}:4243"

    async def calls() -> tuple[Any, grpc.aio.AioRpcError]:
        channel = agent_channel(addr, dc.dev_tls("node-0"))
        try:
            stub = agent_pb2_grpc.AgentStub(channel)
            peer = await stub.PeerEtcdStatus(pb.PeerEtcdStatusRequest(), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ContainerCreate(CREATE, timeout=10)
            return peer, info.value
        finally:
            await channel.close()

    peer, refused = asyncio.run(calls())
    assert peer.etcd_reachable
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused.details() == (
        "certificate 'node-0' is a flotilla-node's: it may not call ContainerCreate"
    )
    names = docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert not any(n.endswith("intruder") for n in names)
