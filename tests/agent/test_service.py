"""The agent's gRPC service end to end: a real Runtime behind an in-process server."""

from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from agent.events import EventBus
from agent.server import bound_port, start_grpc_server
from proto import agent_pb2 as pb
from proto import agent_pb2_grpc, cert_roles
from proto.rpc import agent_client
from proto.rpc_errors import raise_for_rpc_error
from runtime.containers import Runtime
from runtime.shim import demux
from tests.fixtures import runtime_for_tests
from tests.tarballs import tar_of


@pytest.fixture
async def rt(busybox_tar: str) -> AsyncIterator[Runtime]:
    bus = EventBus()
    async with runtime_for_tests(busybox_tar, events=bus) as runtime:
        runtime.test_bus = bus  # type: ignore[attr-defined]
        yield runtime


@pytest.fixture
async def stub(rt: Runtime) -> AsyncIterator[agent_pb2_grpc.AgentStub]:
    server = await start_grpc_server(rt, rt.test_bus, "127.0.0.1:0")  # type: ignore[attr-defined]
    client = agent_client(f"127.0.0.1:{bound_port(server)}")
    try:
        yield client
    finally:
        await client.channel.close()  # type: ignore[attr-defined]
        await server.stop(None)


async def create(stub: agent_pb2_grpc.AgentStub, **body: Any) -> str:
    reply = await stub.ContainerCreate(
        pb.ContainerCreateRequest(json=json.dumps({"Image": "busybox", **body}).encode())
    )
    return reply.id


async def output(stub: agent_pb2_grpc.AgentStub, cid: str) -> tuple[str, str]:
    out, err = b"", b""
    req = pb.ContainerLogsRequest(id=cid, stdout=True, stderr=True)
    async for chunk in stub.ContainerLogs(req):
        if chunk.stream == "stdout":
            out += chunk.data
        else:
            err += chunk.data
    return out.decode(), err.decode()


def chunked(data: bytes, size: int = 7000) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def test_lifecycle_logs_inspect_list(stub: agent_pb2_grpc.AgentStub) -> None:
    cid = await create(stub, Cmd=["sh", "-c", "echo out; echo err >&2; exit 3"])
    await stub.ContainerStart(pb.ContainerStartRequest(id=cid))
    wait = await stub.ContainerWait(pb.ContainerWaitRequest(id=cid))
    assert (wait.status_code, wait.error) == (3, "")
    assert await output(stub, cid) == ("out\n", "err\n")
    tail = [
        c.data
        async for c in stub.ContainerLogs(
            pb.ContainerLogsRequest(id=cid, stdout=True, stderr=True, tail=0)
        )
    ]
    assert tail == []
    info = json.loads((await stub.ContainerInspect(pb.ContainerRef(id=cid))).json)
    assert info["Id"] == cid and info["State"]["ExitCode"] == 3
    running = await stub.ContainerList(pb.ContainerListRequest())
    assert running.rows == []
    rows = [
        json.loads(r) for r in (await stub.ContainerList(pb.ContainerListRequest(all=True))).rows
    ]
    assert [r["Id"] for r in rows] == [cid]
    await stub.ContainerRemove(pb.ContainerRemoveRequest(id=cid))
    rows = (await stub.ContainerList(pb.ContainerListRequest(all=True))).rows
    assert rows == []


async def test_missing_container_keeps_docker_status_and_message(
    stub: agent_pb2_grpc.AgentStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ContainerInspect(pb.ContainerRef(id="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    err = raise_for_rpc_error(info.value)
    assert (err.status, err.message) == (404, "No such container: nope")
    # Streams too, before their first message.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.ContainerLogs(pb.ContainerLogsRequest(id="nope", stdout=True)):
            pass
    err = raise_for_rpc_error(info.value)
    assert (err.status, err.message) == (404, "No such container: nope")


async def test_exec_with_exit_code(stub: agent_pb2_grpc.AgentStub) -> None:
    cid = await create(stub, Cmd=["sleep", "60"])
    await stub.ContainerStart(pb.ContainerStartRequest(id=cid))
    body = {"Cmd": ["sh", "-c", "echo hi; exit 7"], "AttachStdout": True, "AttachStderr": True}
    eid = (await stub.ExecCreate(pb.ExecCreateRequest(id=cid, json=json.dumps(body).encode()))).id

    async def requests() -> AsyncIterator[pb.ExecInput]:
        yield pb.ExecInput(options=pb.ExecStartOptions(id=eid))

    data = b"".join([c.data async for c in stub.ExecStart(requests())])
    assert demux(data) == [(1, b"hi\n")]
    view = json.loads((await stub.ExecInspect(pb.ExecRef(id=eid))).json)
    assert view["ExitCode"] == 7 and view["Running"] is False
    await stub.ContainerKill(pb.ContainerKillRequest(id=cid))


async def test_attach_with_stdin(stub: agent_pb2_grpc.AgentStub) -> None:
    cid = await create(stub, Cmd=["cat"], OpenStdin=True, StdinOnce=True, AttachStdin=True)
    await stub.ContainerStart(pb.ContainerStartRequest(id=cid, hold_output=True))
    opts = pb.AttachOptions(id=cid, stdin=True, stdout=True, stderr=True, stream=True)

    async def requests() -> AsyncIterator[pb.AttachInput]:
        yield pb.AttachInput(options=opts)
        yield pb.AttachInput(stdin=b"hello\n")
        yield pb.AttachInput(close_stdin=True)

    data = b"".join([c.data async for c in stub.ContainerAttach(requests())])
    assert demux(data) == [(1, b"hello\n")]
    wait = await stub.ContainerWait(pb.ContainerWaitRequest(id=cid))
    assert wait.status_code == 0


async def test_stats_one_shot(stub: agent_pb2_grpc.AgentStub) -> None:
    cid = await create(stub, Cmd=["sleep", "60"])
    await stub.ContainerStart(pb.ContainerStartRequest(id=cid))
    samples = [
        json.loads(s.json)
        async for s in stub.ContainerStats(pb.ContainerStatsRequest(id=cid, one_shot=True))
    ]
    assert len(samples) == 1
    assert samples[0]["id"] == cid and "precpu_stats" in samples[0]
    assert samples[0]["memory_stats"]
    await stub.ContainerKill(pb.ContainerKillRequest(id=cid))


async def test_archive_put_get_round_trip(stub: agent_pb2_grpc.AgentStub) -> None:
    cid = await create(stub, Cmd=["true"])
    payload = os.urandom(300_000)  # several 64 KiB chunks each way

    async def puts() -> AsyncIterator[pb.ArchivePutInput]:
        yield pb.ArchivePutInput(options=pb.ArchivePutOptions(id=cid, path="/tmp"))
        for part in chunked(tar_of({"blob.bin": payload})):
            yield pb.ArchivePutInput(data=part)

    await stub.ArchivePut(puts())
    chunks = [c async for c in stub.ArchiveGet(pb.ArchiveRequest(id=cid, path="/tmp/blob.bin"))]
    stat = json.loads(chunks[0].stat_json)
    assert stat["name"] == "blob.bin" and stat["size"] == len(payload)
    assert len(chunks) > 3
    with tarfile.open(fileobj=io.BytesIO(b"".join(c.data for c in chunks))) as tar:
        member = tar.extractfile("blob.bin")
        assert member is not None and member.read() == payload
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.ArchiveGet(pb.ArchiveRequest(id=cid, path="/nowhere")):
            pass
    assert raise_for_rpc_error(info.value).status == 404


async def test_image_import_list_save_load_remove(stub: agent_pb2_grpc.AgentStub) -> None:
    layer = tar_of({"hello.txt": b"hi there\n", "big": os.urandom(200_000)})

    async def imports() -> AsyncIterator[pb.ImageImportInput]:
        yield pb.ImageImportInput(
            options=pb.ImageImportOptions(reference="imported:v1", changes=['CMD ["/x"]'])
        )
        for part in chunked(layer):
            yield pb.ImageImportInput(data=part)

    reply = await stub.ImageImport(imports())
    assert reply.image_id.startswith("sha256:")
    assert json.loads(reply.progress[0]) == {"status": reply.image_id}
    rows = json.loads((await stub.ImageList(pb.ImageListRequest())).json)
    assert any("imported:v1" in r["RepoTags"] for r in rows)
    inspect = json.loads((await stub.ImageInspect(pb.ImageRef(ref="imported:v1"))).json)
    assert inspect["Id"] == reply.image_id

    saved = b"".join(
        [c.data async for c in stub.ImageSave(pb.ImageSaveRequest(refs=["imported:v1"]))]
    )
    with tarfile.open(fileobj=io.BytesIO(saved)) as tar:
        assert "manifest.json" in tar.getnames()

    removed = json.loads((await stub.ImageRemove(pb.ImageRemoveRequest(ref="imported:v1"))).json)
    assert {"Untagged": "imported:v1"} in removed
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ImageInspect(pb.ImageRef(ref="imported:v1"))
    assert raise_for_rpc_error(info.value).status == 404

    async def loads() -> AsyncIterator[pb.DataChunk]:
        for part in chunked(saved):
            yield pb.DataChunk(data=part)

    loaded = await stub.ImageLoad(loads())
    assert "Loaded image: imported:v1" in loaded.lines
    inspect = json.loads((await stub.ImageInspect(pb.ImageRef(ref="imported:v1"))).json)
    assert inspect["Id"] == reply.image_id
    tagged = await stub.ImageTag(pb.ImageTagRequest(ref="imported:v1", repo="other", tag="t"))
    assert tagged.name == "other:t"
    await stub.ImageRemove(pb.ImageRemoveRequest(ref="other:t"))
    await stub.ImageRemove(pb.ImageRemoveRequest(ref="imported:v1"))


async def test_volumes(stub: agent_pb2_grpc.AgentStub) -> None:
    body = {"Name": "data1", "Labels": {"a": "b"}}
    view = json.loads(
        (await stub.VolumeCreate(pb.VolumeCreateRequest(json=json.dumps(body).encode()))).json
    )
    assert view["Name"] == "data1" and view["Labels"] == {"a": "b"}
    listed = json.loads((await stub.VolumeList(pb.VolumeListRequest())).json)
    assert [v["Name"] for v in listed["Volumes"]] == ["data1"]
    await stub.VolumeRemove(pb.VolumeRemoveRequest(name="data1"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.VolumeInspect(pb.VolumeRef(name="data1"))
    err = raise_for_rpc_error(info.value)
    assert (err.status, err.message) == (404, "get data1: no such volume")


async def test_network_list(stub: agent_pb2_grpc.AgentStub, rt: Runtime) -> None:
    cid = await create(stub, Cmd=["sleep", "30"])
    await stub.ContainerStart(pb.ContainerStartRequest(id=cid))
    listed = json.loads((await stub.NetworkList(pb.NetworkListRequest())).json)
    assert [n["Name"] for n in listed] == ["bridge", "host", "none"]
    assert all(n["Containers"] == {} for n in listed)
    verbose = json.loads((await stub.NetworkList(pb.NetworkListRequest(verbose=True))).json)
    assert [n["Id"] for n in verbose] == [n["Id"] for n in listed]
    bridge = verbose[0]
    assert bridge["Options"]["com.docker.network.bridge.name"] == rt.bridge.name
    assert list(bridge["Containers"]) == [cid]
    await stub.ContainerRemove(pb.ContainerRemoveRequest(id=cid, force=True))


async def test_events(stub: agent_pb2_grpc.AgentStub) -> None:
    since = 1  # replay from the beginning of the history, then live
    call = stub.Events(pb.EventsRequest(since_ns=since))
    cid = await create(stub, Cmd=["true"])
    await stub.ContainerStart(pb.ContainerStartRequest(id=cid))
    await stub.ContainerWait(pb.ContainerWaitRequest(id=cid))
    await stub.VolumeCreate(pb.VolumeCreateRequest(json=b'{"Name": "ev1"}'))
    seen: list[tuple[str, str]] = []

    async def collect() -> None:
        async for msg in call:
            event = json.loads(msg.json)
            seen.append((event["Type"], event["Action"]))
            if event["Type"] == "container":
                assert event["Actor"]["ID"] == cid and event["scope"] == "local"
                assert event["from"] == "busybox" and event["status"] == event["Action"]
            # The runtime may answer wait() before it emits "die" (it tears down in between).
            if ("volume", "create") in seen and ("container", "die") in seen:
                return

    await asyncio.wait_for(collect(), 10)
    call.cancel()
    assert [a for t, a in seen if t == "container"][:3] == ["create", "start", "die"], seen


async def test_cancelled_export_cleans_up(stub: agent_pb2_grpc.AgentStub, rt: Runtime) -> None:
    cid = await create(stub, Cmd=["true"])
    call = stub.ContainerExport(pb.ContainerRef(id=cid))
    first = await call.read()
    assert len(first.data) == 64 * 1024  # chunked, and the producer is now blocked on us
    call.cancel()
    # The producer's next write fails, it unmounts its view and the container can go.
    for _ in range(50):
        with open("/proc/self/mountinfo") as f:
            if rt.paths.container(cid) not in f.read():
                break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("export view still mounted after the client went away")
    await stub.ContainerRemove(pb.ContainerRemoveRequest(id=cid))


async def test_follow_logs_and_stats_stream(stub: agent_pb2_grpc.AgentStub) -> None:
    cid = await create(stub, Cmd=["sh", "-c", "echo one; sleep 1; echo two"])
    await stub.ContainerStart(pb.ContainerStartRequest(id=cid))
    stats = stub.ContainerStats(pb.ContainerStatsRequest(id=cid, stream=True))
    first, second = json.loads((await stats.read()).json), json.loads((await stats.read()).json)
    assert second["precpu_stats"] == first["cpu_stats"]
    stats.cancel()
    req = pb.ContainerLogsRequest(id=cid, stdout=True, follow=True)
    lines = [c.data async for c in stub.ContainerLogs(req)]  # ends when the container exits
    assert lines == [b"one\n", b"two\n"]


def _openssl(command: str) -> None:
    import subprocess

    subprocess.run(["openssl", *command.split()], check=True, capture_output=True)


def _certs(d: str, names: dict[str, str]) -> None:
    """A CA and, for each name, a certificate it signed for 127.0.0.1 (server and client use)
    with the role given (the subject's OU; "" for none). Made by openssl, not deploy/certs.py,
    so the agent is seen to read a certificate it did not make itself."""
    ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    _openssl(f"req -x509 {ec} -keyout {d}/ca.key -out {d}/ca.pem -days 1 -subj /CN=test-ca")
    for name, role in names.items():
        subj = f"/CN={name}" + (f"/OU={role}" if role else "")
        _openssl(f"req {ec} -keyout {d}/{name}.key -out {d}/{name}.csr -subj {subj}")
        with open(f"{d}/{name}.ext", "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\n")
        _openssl(
            f"x509 -req -in {d}/{name}.csr -CA {d}/ca.pem -CAkey {d}/ca.key -CAcreateserial"
            f" -out {d}/{name}.pem -days 1 -extfile {d}/{name}.ext"
        )


async def test_mutual_tls(rt: Runtime, tmp_path: Any) -> None:
    from proto.rpc import TlsConfig

    d = str(tmp_path)
    _certs(d, {"agent": cert_roles.NODE, "manager": cert_roles.MANAGER})
    agent_tls = TlsConfig(f"{d}/agent.pem", f"{d}/agent.key", f"{d}/ca.pem")
    server = await start_grpc_server(rt, EventBus(), "127.0.0.1:0", tls=agent_tls)
    target = f"127.0.0.1:{bound_port(server)}"
    try:
        manager = agent_client(
            target, TlsConfig(f"{d}/manager.pem", f"{d}/manager.key", f"{d}/ca.pem")
        )
        assert (await manager.Ping(pb.PingRequest(), timeout=10)).version
        await manager.channel.close()  # type: ignore[attr-defined]
        # A client without a certificate is turned away during the handshake.
        with open(f"{d}/ca.pem", "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        async with grpc.aio.secure_channel(target, creds) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await agent_pb2_grpc.AgentStub(channel).Ping(pb.PingRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)


async def test_the_manager_checks_the_node_identity(rt: Runtime, tmp_path: Any) -> None:
    """An agent whose certificate (from the cluster's CA) is for another address — a node
    answering for an address it is not — fails the manager's TLS check of the dialled address."""
    from deploy import certs
    from proto.rpc import TlsConfig

    d = str(tmp_path)
    certs.make_ca(d)
    manager = certs.make_cert(d, "manager", ["127.0.0.1"], role=cert_roles.MANAGER)
    impostor = certs.make_cert(d, "node-2", ["node-2", "10.99.0.12"], role=cert_roles.NODE)
    server = await start_grpc_server(
        rt, EventBus(), "127.0.0.1:0", tls=TlsConfig(impostor.cert, impostor.key, impostor.ca)
    )
    stub = agent_client(
        f"127.0.0.1:{bound_port(server)}", TlsConfig(manager.cert, manager.key, manager.ca)
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Ping(pb.PingRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await stub.channel.close()  # type: ignore[attr-defined]
        await server.stop(None)


async def test_peer_etcd_status_over_mutual_tls(rt: Runtime, tmp_path: Any) -> None:
    """The peer check a node makes when its keep-alives fail, agent to agent over mutual TLS:
    each agent's own certificate serves as its client certificate."""
    from agent.fencing import Fence, FenceFile, PeerClient
    from proto.rpc import TlsConfig

    d = str(tmp_path)
    _certs(d, {"node-a": cert_roles.NODE, "node-b": cert_roles.NODE})
    tls = {
        n: TlsConfig(f"{d}/{n}.pem", f"{d}/{n}.key", f"{d}/ca.pem") for n in ("node-a", "node-b")
    }
    fence = Fence(FenceFile(f"{d}/fence"), ttl_s=3, guard_s=0.25, heartbeat_s=0.25)
    fence.renewed(fence.clock())
    fence.failed()  # node-b's own keep-alives fail too: it answers "unreachable"
    server = await start_grpc_server(
        rt, EventBus(), "127.0.0.1:0", tls=tls["node-b"], info_extra={"ID": "B"}, fence=fence
    )
    peers = PeerClient("A", timeout_s=5, tls=tls["node-a"])
    strangers = PeerClient("A", timeout_s=5, tls=None)  # no certificate: turned away
    try:
        answer = await peers.ask("B", f"127.0.0.1:{bound_port(server)}")
        assert answer is not None and answer.node_id == "B" and not answer.etcd_reachable
        assert await strangers.ask("B", f"127.0.0.1:{bound_port(server)}") is None
        # An answered peer's channel is kept for the next round; one that did not answer is
        # closed, so nothing redials it in the background.
        assert "B" in peers._stubs and "B" not in strangers._stubs
    finally:
        await peers.close()
        await strangers.close()
        await server.stop(None)


async def test_exec_tty_resize_and_stdin(stub: agent_pb2_grpc.AgentStub) -> None:
    cid = await create(stub, Cmd=["sleep", "60"])
    await stub.ContainerStart(pb.ContainerStartRequest(id=cid))
    body = {
        "Cmd": ["sh", "-c", "read line; stty size; echo got $line"],
        "Tty": True,
        "AttachStdin": True,
        "AttachStdout": True,
    }
    eid = (await stub.ExecCreate(pb.ExecCreateRequest(id=cid, json=json.dumps(body).encode()))).id

    async def requests() -> AsyncIterator[pb.ExecInput]:
        yield pb.ExecInput(options=pb.ExecStartOptions(id=eid, tty=True))
        yield pb.ExecInput(resize=pb.ResizeRequest(id=eid, height=33, width=111))
        await asyncio.sleep(0.3)
        yield pb.ExecInput(stdin=b"abc\n")

    data = b"".join([c.data async for c in stub.ExecStart(requests())])
    assert b"33 111" in data and b"got abc" in data  # raw tty output, no framing
    view = json.loads((await stub.ExecInspect(pb.ExecRef(id=eid))).json)
    assert view["ExitCode"] == 0
    await stub.ContainerKill(pb.ContainerKillRequest(id=cid))


async def test_a_certificate_may_make_the_calls_its_role_allows(rt: Runtime, tmp_path: Any) -> None:
    """One CA signs every certificate of the cluster; the role in it decides what it may call.
    A node's certificate (readable by root on that node) only asks peers about etcd: creating
    a container with it, or even listing them, is refused. So is a certificate with no role."""
    from agent.fencing import Fence, FenceFile
    from proto.rpc import TlsConfig

    d = str(tmp_path)
    roles = {
        "node-b": cert_roles.NODE,
        "node-a": cert_roles.NODE,
        "manager": cert_roles.MANAGER,
        "operator": cert_roles.CLIENT,
        "legacy": "",
    }
    _certs(d, roles)
    tls = {n: TlsConfig(f"{d}/{n}.pem", f"{d}/{n}.key", f"{d}/ca.pem") for n in roles}
    fence = Fence(FenceFile(f"{d}/fence"), ttl_s=3, guard_s=0.25, heartbeat_s=0.25)
    server = await start_grpc_server(rt, EventBus(), "127.0.0.1:0", tls=tls["node-b"], fence=fence)
    target = f"127.0.0.1:{bound_port(server)}"
    body = json.dumps({"Image": "busybox", "Cmd": ["true"]}).encode()
    try:
        for name, role in roles.items():
            stub = agent_client(target, tls[name])
            try:
                peer = await stub.PeerEtcdStatus(pb.PeerEtcdStatusRequest(), timeout=10)
                assert peer is not None
                if role in (cert_roles.MANAGER, cert_roles.CLIENT):
                    assert (await stub.ContainerList(pb.ContainerListRequest(all=True))) is not None
                    continue
                for call in (
                    stub.ContainerCreate(pb.ContainerCreateRequest(json=body, name=f"by-{name}")),
                    stub.ContainerList(pb.ContainerListRequest(all=True)),
                    stub.Ping(pb.PingRequest()),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await call
                    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
                    assert f"certificate {name!r}" in (info.value.details() or "")
            finally:
                await stub.channel.close()  # type: ignore[attr-defined]
        assert not [c for c in rt.list() if c.name.startswith("/by-")]
    finally:
        await server.stop(None)


async def test_create_with_start_runs_it_and_a_repeat_finds_it(
    stub: agent_pb2_grpc.AgentStub,
) -> None:
    """A reschedule's create and start in one call; the same call again (a manager that
    crashed before recording it) finds the running copy by swarm id and generation."""
    labels = {"com.docker.swarm.id": "c" * 64, "com.docker.swarm.generation": "2"}
    body = {"Image": "busybox", "Cmd": ["sleep", "60"], "Labels": labels}
    request = pb.ContainerCreateRequest(json=json.dumps(body).encode(), name="moved", start=True)
    first = await stub.ContainerCreate(request)
    assert first.started
    again = await stub.ContainerCreate(request)
    assert again.id == first.id and again.started
    reply = await stub.ContainerInspect(pb.ContainerRef(id=first.id))
    assert json.loads(reply.json)["State"]["Running"] is True
    await stub.ContainerRemove(pb.ContainerRemoveRequest(id=first.id, force=True))


async def test_a_create_waits_for_a_node_still_connecting(rt: Runtime) -> None:
    """A create sent while the node's channel cannot connect yet (its agent not listening)
    waits for it instead of failing at once with UNAVAILABLE."""
    import socket

    from manager.reschedule_agent import create_call

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = agent_client(f"127.0.0.1:{port}")
    body = {"Image": "busybox", "Cmd": ["true"]}
    request = pb.ContainerCreateRequest(json=json.dumps(body).encode(), name="late")
    creating = asyncio.ensure_future(create_call(client, request))
    server = None
    try:
        await asyncio.sleep(0.5)  # refused meanwhile: the channel is reconnecting
        assert not creating.done()
        server = await start_grpc_server(rt, rt.test_bus, f"127.0.0.1:{port}")  # type: ignore[attr-defined]
        reply = await asyncio.wait_for(creating, 30)
        assert reply.id
        await client.ContainerRemove(pb.ContainerRemoveRequest(id=reply.id, force=True))
    finally:
        creating.cancel()
        await client.channel.close()  # type: ignore[attr-defined]
        if server is not None:
            await server.stop(None)
