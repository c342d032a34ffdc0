"""bench/attacks.py's attacks on the control plane: the API fuzz against the manager and the
unauthenticated clients (secured manager and etcd, the dev agents' mutual TLS, and the dev
cluster's own plaintext listeners, reported apart)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import secrets
import ssl
import tempfile
from collections.abc import Callable, Iterator

from bench.attack_support import API, PREFIX, ControlFailed, Outcome, docker, log, manager_conn
from deploy import devcluster
from deploy.dev_layout import AGENT_PORT
from deploy.etcd import EtcdServer
from tests.secured_kit import (
    PING,
    Pki,
    api_request,
    client_context,
    make_pki,
    refused,
    register_node,
    tls_etcd,
    tls_manager,
)

# ----------------------------------------------------------------------------- API fuzz


def _snapshot() -> dict[str, set[str]]:
    return {
        "container": set(docker("ps", "-aq", "--no-trunc").stdout.split()),
        "network": set(docker("network", "ls", "-q", "--no-trunc").stdout.split()),
        "volume": set(docker("volume", "ls", "-q").stdout.split()),
        "image": set(docker("images", "-aq", "--no-trunc").stdout.split()),
    }


def attack_api_fuzz(n: int) -> tuple[Outcome, int, int]:
    import aiohttp

    from bench import api_fuzz

    before = _snapshot()

    async def go() -> api_fuzz.Result:
        async with aiohttp.ClientSession(f"http://{devcluster.MANAGER_ADDR}") as session:

            async def send(
                method: str, path: str, params: dict[str, str], body: bytes | None
            ) -> tuple[int, bytes]:
                headers = {"Content-Type": "application/json"} if body is not None else {}
                try:
                    resp = await asyncio.wait_for(
                        session.request(method, path, params=params, data=body, headers=headers),
                        30,
                    )
                except (TimeoutError, aiohttp.ClientError) as e:
                    return 599, json.dumps({"message": f"no answer: {e!r}"}).encode()
                async with resp:
                    if resp.status < 400:
                        return resp.status, b""  # a success may be a stream (events, logs)
                    return resp.status, await asyncio.wait_for(resp.read(), 30)

            # A live cluster's login and push reach registries (api_fuzz.UPSTREAM).
            return await api_fuzz.run(send, n, upstream=False)

    try:
        result = asyncio.run(go())
    finally:
        after = _snapshot()
        if made := after["container"] - before["container"]:
            docker("rm", "-f", "-v", *made, check=False)
        if made := after["network"] - before["network"]:
            docker("network", "rm", *made, check=False)
        if made := after["volume"] - before["volume"]:
            docker("volume", "rm", "-f", *made, check=False)
        if made := after["image"] - before["image"]:
            docker("rmi", "-f", *made, check=False)
    out = Outcome("API fuzz (hypothesis) against the manager", result.fuzz_cases,
                  result.fuzz_5xx, label="5xx")  # fmt: skip
    out.notes.append(f"{len(result.failures)} bad answers")
    for failure in result.failures[:5]:
        log(f"fuzz: {failure}")
    return out, result.fuzz_cases, result.fuzz_5xx


# ----------------------------------------------------------------------------- unauthenticated


SECURED_PREFIX = f"/{PREFIX}secured"
DEV_PLAINTEXT = "plaintext on loopback by design (dev cluster only; docs/security.md)"


@contextlib.contextmanager
def secured_control_plane() -> Iterator[tuple[Pki, EtcdServer, int]]:
    """A fresh PKI, an etcd with client-certificate auth and a `flotilla manage --tlsverify`
    that reaches it with its own certificate: what docs/install.md "Certificates" deploys."""
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}pki-") as d:
        pki = make_pki(d)
        with tls_etcd(pki) as etcd:
            discovery = f"etcd://{etcd.endpoint}{SECURED_PREFIX}"
            log_path = os.path.join(d, "manager.log")
            flags = pki.etcd_flags(pki.manager)
            with tls_manager(discovery, pki, log_path, *flags) as port:
                yield pki, etcd, port


def _api_requests() -> dict[str, bytes]:
    body = json.dumps({"Image": "busybox", "Cmd": ["true"]}).encode()
    create = (
        f"POST {API}/containers/create?name={PREFIX}intruder-api HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    info = f"GET {API}/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    return {"_ping": PING, "info": info, "create": create + body}


def unauth_engine_api(pki: Pki, port: int) -> list[Outcome]:
    """`_ping`, info and a container create on `flotilla manage --tlsverify`, without a client
    certificate and with another CA's; any HTTP answer counts as getting in."""
    requests = _api_requests()
    operator = client_context(pki.ca, ssl.TLSVersion.MAXIMUM_SUPPORTED, pki.client)
    for what, request in requests.items():
        if refused(port, operator, request):
            raise ControlFailed(f"the operator's certificate got no answer to {what}")
    v12, v13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
    clients: dict[str, dict[str, ssl.SSLContext | None]] = {
        "no cert": {
            "plain HTTP": None,
            "TLS 1.2": client_context(pki.ca, v12),
            "TLS 1.3": client_context(pki.ca, v13),
        },
        "other CA's cert": {
            "TLS 1.2": client_context(pki.ca, v12, pki.stranger),
            "TLS 1.3": client_context(pki.ca, v13, pki.stranger),
        },
    }
    outcomes = []
    for who, contexts in clients.items():
        out = Outcome(f"unauthenticated: Engine API --tlsverify, {who}", label="ok")
        for how, context in contexts.items():
            for what, request in requests.items():
                out.tries += 1
                if not refused(port, context, request):
                    out.escapes += 1
                    out.notes.append(f"{how} {what} answered")
        if not out.escapes:
            out.notes.append(f"{', '.join(contexts)}: no answer; control answered")
        outcomes.append(out)
    # A node's certificate is the cluster CA's too (and on that node's disk): answered, 403.
    out = Outcome("unauthorized: Engine API --tlsverify, a node's cert", label="ok")
    node = client_context(pki.ca, ssl.TLSVersion.MAXIMUM_SUPPORTED, pki.node)
    for what, request in requests.items():
        out.tries += 1
        if not api_request(port, node, request).startswith(b"HTTP/1.1 403 "):
            out.escapes += 1
            out.notes.append(f"{what} answered other than 403")
    if not out.escapes:
        out.notes.append("403 to each")
    outcomes.append(out)
    return outcomes


def unauth_etcd_fake_node(pki: Pki, etcd: EtcdServer) -> Outcome:
    """A fake node record written into the secured manager's etcd prefix in plaintext, over
    TLS without a client certificate and with another CA's; a real node's is the control."""
    from proto.nodes import list_nodes

    out = Outcome("unauthenticated: fake node in etcd (client-cert auth)", label="ok")
    good = pki.etcd_security(pki.node)
    attempts = {
        "plaintext": None,
        "TLS, no cert": pki.etcd_security(None),
        "other CA's cert": pki.etcd_security(pki.stranger),
    }

    async def go() -> set[str]:
        await register_node(etcd.endpoint, good, SECURED_PREFIX, "control")
        for i, (how, security) in enumerate(attempts.items()):
            out.tries += 1
            try:
                await register_node(etcd.endpoint, security, SECURED_PREFIX, f"fake-{i}")
            except Exception as e:  # noqa: BLE001 - any refusal (auth, TLS) is the result sought
                out.notes.append(f"{how}: {type(e).__name__}")
        return {n.name for n in await list_nodes([etcd.endpoint], SECURED_PREFIX, good)}

    listed = asyncio.run(go())
    if "control" not in listed:
        raise ControlFailed("a node with the cluster's certificate could not register")
    out.escapes = len(listed - {"control"})
    if out.escapes:
        out.notes.append(f"registered: {sorted(listed - {'control'})}")
    return out


def dev_plaintext_engine_api() -> Outcome:
    """The dev cluster's own Engine API: a container create with no certificate at all."""
    out = Outcome("dev cluster: Engine API, no cert", tries=1, label="plaintext")
    conn = manager_conn()
    try:
        body = json.dumps({"Image": "busybox", "Cmd": ["true"]})
        try:
            conn.request("POST", f"{API}/containers/create?name={PREFIX}intruder-api", body,
                         {"Content-Type": "application/json"})  # fmt: skip
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as e:
            out.notes.append(f"refused: {e!r}")
            return out
        out.escapes = int(resp.status == 201)
        out.notes.append(f"HTTP {resp.status} on {devcluster.docker_host()}: {DEV_PLAINTEXT}")
    finally:
        conn.close()
        docker("rm", "-f", f"{PREFIX}intruder-api", check=False)
    return out


def unauth_agent_grpc() -> Outcome:
    """A gRPC client without a certificate (plaintext, and TLS without a client certificate
    when the cluster has a CA) calls ContainerCreate on every agent; so does another node's
    agent with its own certificate (the cluster CA's, but a node's: only PeerEtcdStatus)."""
    import grpc

    from deploy.dev_certs import dev_tls
    from proto import agent_pb2 as pb
    from proto import agent_pb2_grpc
    from proto.rpc import CHANNEL_OPTIONS, agent_channel

    out = Outcome("unauthenticated: dev agents' gRPC (mTLS), no cert or a node's", label="ok")
    nodes = devcluster.load_state().get("nodes", {})
    ca = os.path.join(devcluster.ROOT, "certs", "ca.pem")
    create = pb.ContainerCreateRequest(
        json=json.dumps({"Image": "busybox", "Cmd": ["true"]}).encode(), name=f"{PREFIX}intruder"
    )

    async def attempt(make: Callable[[], grpc.aio.Channel]) -> bool:
        channel = make()
        try:
            stub = agent_pb2_grpc.AgentStub(channel)
            reply = await stub.ContainerCreate(create, timeout=10)
            await stub.ContainerRemove(pb.ContainerRemoveRequest(id=reply.id, force=True))
            return True
        except grpc.aio.AioRpcError as e:
            out.notes.append(f"{e.code().name}")
            return False
        finally:
            await channel.close()

    for name in sorted(nodes):
        addr = f"{nodes[name]['ip']}:{AGENT_PORT}"
        makers: list[Callable[[], grpc.aio.Channel]] = [
            lambda a=addr: grpc.aio.insecure_channel(a, options=CHANNEL_OPTIONS)
        ]
        if os.path.exists(ca):
            with open(ca, "rb") as f:
                creds = grpc.ssl_channel_credentials(f.read())
            makers.append(lambda a=addr, c=creds: grpc.aio.secure_channel(a, c, CHANNEL_OPTIONS))
            peer = next((n for n in sorted(nodes) if n != name), "")
            if peer:
                makers.append(lambda a=addr, p=peer: agent_channel(a, dev_tls(p)))
        for make in makers:
            out.tries += 1
            if asyncio.run(attempt(make)):
                out.escapes += 1
                out.notes.append(f"{name}: ContainerCreate succeeded")
    return out


def dev_plaintext_etcd() -> Outcome:
    """The dev cluster's own etcd: a fake node record written with no credentials at all."""
    from proto.keys import Keys
    from proto.kv import KV, KVError
    from proto.nodes import list_nodes
    from proto.records_pb2 import NodeRecord

    out = Outcome("dev cluster: fake node in etcd, no creds", tries=1, label="plaintext")
    fake = f"FLTATK{secrets.token_hex(4).upper()}"
    endpoints = [devcluster.etcd_endpoint()]

    async def go() -> bool:
        rec = NodeRecord(id=fake, name=f"{PREFIX}fake", addr="127.0.0.1:1", ncpu=1)
        async with await KV.connect(endpoints) as kv:
            lease = None
            try:
                lease = await kv.lease_grant(5)
                await kv.put(Keys(devcluster.PREFIX).node(fake), rec.SerializeToString(), lease)
                listed = await list_nodes(endpoints, devcluster.PREFIX)
                return any(n.id == fake for n in listed)
            finally:
                if lease is not None:
                    with contextlib.suppress(KVError):
                        await kv.lease_revoke(lease)

    try:
        out.escapes = int(asyncio.run(go()))
    except Exception as e:  # noqa: BLE001 - any refusal (auth, TLS) is the result sought
        out.notes.append(f"refused: {e!r:.120}")
    if out.escapes:
        out.notes.append(f"registered on etcd://{devcluster.etcd_endpoint()}: {DEV_PLAINTEXT}")
    return out
