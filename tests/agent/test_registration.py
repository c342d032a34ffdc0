"""Node registration and status reporting against a real etcd (and a real runtime)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable

import pytest

from agent import nodeid
from agent.main import AgentConfig, run_agent
from agent.metrics import AgentMetrics
from agent.registration import Registration, describe_host
from agent.status import StatusReporter
from deploy.etcd import EtcdServer, free_port
from proto.keys import Keys
from proto.kv import KV
from proto.nodes import list_nodes
from proto.records_pb2 import ContainerStatus, NodeRecord
from runtime import image_transfer
from runtime.cgroups import Cgroups
from runtime.containers import Runtime
from tests.fixtures import remove_runtime, runtime_for_tests

pytestmark = pytest.mark.timeout(90)

KEYS = Keys("/flotilla")


async def wait_for(predicate: Callable[[], object], timeout: float, step: float = 0.1) -> float:
    """Poll an async predicate until truthy; returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        with contextlib.suppress(Exception):
            if await predicate():  # type: ignore[misc]
                return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)


async def read_node(kv: KV, node_id: str) -> NodeRecord | None:
    entry = await kv.get(KEYS.node(node_id))
    if entry is None:
        return None
    rec = NodeRecord()
    rec.ParseFromString(entry.value)
    return rec


def make_registration(kv: KV, ttl: int = 2, heartbeat: float = 0.5) -> Registration:
    record = describe_host(
        nodeid.generate(), "node-t", "127.0.0.1:4243", {"region": "eu", "disk": "ssd"}, 1
    )
    return Registration(kv, KEYS, record, ttl_s=ttl, heartbeat_s=heartbeat, metrics=AgentMetrics())


async def test_record_renewed_then_expires(kv: KV) -> None:
    reg = make_registration(kv)
    node_id = reg.record.id
    await reg.start()
    try:
        await asyncio.wait_for(reg.registered.wait(), 5)
        rec = await read_node(kv, node_id)
        assert rec is not None
        assert rec.name == "node-t" and rec.addr == "127.0.0.1:4243"
        assert dict(rec.labels) == {"region": "eu", "disk": "ssd"}
        assert rec.ncpu >= 1 and rec.memory_bytes > 0 and rec.kernel_version
        assert rec.storage_driver == "overlay2" and rec.os_type == "linux"
        assert (await kv.get(KEYS.node(node_id))).lease == reg.lease_id  # type: ignore[union-attr]

        await asyncio.sleep(4)  # twice the TTL: renewals keep it
        assert await read_node(kv, node_id) is not None
        assert reg.metrics.lease_renewals._value.get() >= 4
    finally:
        await reg.stop(deregister=False)  # like a killed agent: the lease just runs out
    # Gone once the lease runs out (TTL 2 s); the bound only keeps a broken run from hanging.
    await wait_for(lambda: _absent(kv, node_id), timeout=30)


async def _absent(kv: KV, node_id: str) -> bool:
    return await kv.get(KEYS.node(node_id)) is None


async def test_deregister_and_lost_lease(kv: KV) -> None:
    reg = make_registration(kv, ttl=3, heartbeat=0.5)
    node_id = reg.record.id
    await reg.start()
    try:
        await asyncio.wait_for(reg.registered.wait(), 5)
        first_lease = reg.lease_id
        await kv.lease_revoke(first_lease)  # someone revoked our lease: the record goes...
        assert await read_node(kv, node_id) is None
        await wait_for(lambda: read_node(kv, node_id), timeout=5)  # ... and comes back
        assert reg.lease_id != first_lease
        assert reg.metrics.lease_failures._value.get() >= 1
    finally:
        await reg.stop(deregister=True)
    assert await read_node(kv, node_id) is None


async def test_recovers_after_etcd_outage(etcd: EtcdServer, kv: KV) -> None:
    """After the outage the registration dials etcd afresh, and so does the agent's other
    client (status writes, address claims) handed to it in `redial_with`."""
    reg = make_registration(kv, ttl=3, heartbeat=0.5)
    shared = await KV.connect([etcd.endpoint])
    redials: list[int] = []
    reconnect = shared.reconnect

    async def counted() -> None:
        redials.append(1)
        await reconnect()

    shared.reconnect = counted  # type: ignore[method-assign]
    reg.redial_with = (shared,)
    node_id = reg.record.id
    await reg.start()
    try:
        await asyncio.wait_for(reg.registered.wait(), 5)
        assert not redials
        etcd.stop()
        await asyncio.sleep(10)
        assert not reg.registered.is_set()
        assert reg.metrics.lease_failures._value.get() >= 1
        etcd.start()
        await wait_for(lambda: _registered_and_present(reg, kv, node_id), timeout=30)
        assert redials
        await shared.put("/test/shared-after-outage", b"1")  # the new connection works
        await asyncio.sleep(4)  # and it stays (renewals work again)
        assert await read_node(kv, node_id) is not None
    finally:
        await reg.stop()
        await shared.close()


async def _registered_and_present(reg: Registration, kv: KV, node_id: str) -> bool:
    return reg.registered.is_set() and await read_node(kv, node_id) is not None


# ----------------------------------------------------------------- status with a real runtime


@pytest.fixture
async def runtime(busybox_tar: str) -> AsyncIterator[tuple[Runtime, list]]:
    """A runtime whose events go to whatever callables the test appends to the list."""
    sinks: list[Callable[..., None]] = []

    def fanout(*args: object) -> None:
        for sink in sinks:
            sink(*args)

    async with runtime_for_tests(busybox_tar, events=fanout) as rt:
        yield rt, sinks


async def read_status(kv: KV, node_id: str) -> dict[str, ContainerStatus]:
    out = {}
    for entry in await kv.get_prefix(KEYS.status_prefix(node_id)):
        st = ContainerStatus()
        st.ParseFromString(entry.value)
        out[KEYS.status_ids(entry.key)[1]] = st
    return out


async def test_status_follows_container_lifecycle(
    etcd: EtcdServer,
    kv: KV,
    runtime: tuple[Runtime, list],
) -> None:
    rt, sinks = runtime
    node_id = nodeid.generate()
    stale = KEYS.status(node_id, "0" * 64)
    await kv.put(stale, b"")  # left by an earlier life of this node: resync drops it
    reporter = StatusReporter(kv, KEYS, node_id, rt)
    sinks.append(reporter.notify)
    await reporter.start()
    try:

        async def state_is(cid: str, state: str) -> bool:
            st = (await read_status(kv, node_id)).get(cid)
            return st is not None and st.state == state

        await wait_for(lambda: _synced(reporter), 5)
        assert await kv.get(stale) is None

        rec = await rt.create({"Image": "busybox", "Cmd": ["sleep", "60"], "Labels": {"a": "b"}})
        await wait_for(lambda: state_is(rec.id, "created"), 5)
        await rt.start(rec.id)
        await wait_for(lambda: state_is(rec.id, "running"), 5)
        st = (await read_status(kv, node_id))[rec.id]
        assert st.node_id == node_id and st.name == rec.name and st.pid > 0
        assert st.image == "busybox" and dict(st.labels) == {"a": "b"}
        await rt.pause(rec.id)
        await wait_for(lambda: state_is(rec.id, "paused"), 5)
        await rt.unpause(rec.id)
        await rt.kill(rec.id, "SIGKILL")
        await wait_for(lambda: state_is(rec.id, "exited"), 5)
        assert (await read_status(kv, node_id))[rec.id].exit_code == 137

        # etcd goes away while containers change; the view is right again once it is back.
        await rt.start(rec.id)
        etcd.stop()
        other = await rt.create({"Image": "busybox", "Cmd": ["sleep", "60"]})
        await rt.start(other.id)
        await rt.remove(rec.id, force=True)
        await asyncio.sleep(1)
        etcd.start()
        await wait_for(lambda: state_is(other.id, "running"), 8)
        await wait_for(lambda: _synced(reporter), 5)
        assert set(await read_status(kv, node_id)) == {other.id}

        await rt.remove(other.id, force=True)
        await wait_for(lambda: _no_status(kv, node_id), 5)
    finally:
        await reporter.stop()
        await kv.delete_prefix(KEYS.status_prefix(node_id))


async def _synced(reporter: StatusReporter) -> bool:
    return reporter.synced.is_set()


async def _no_status(kv: KV, node_id: str) -> bool:
    return not await read_status(kv, node_id)


# ----------------------------------------------------------------- the whole agent


async def test_run_agent_registers_serves_metrics_and_deregisters(
    etcd: EtcdServer,
) -> None:
    root = tempfile.mkdtemp(prefix="flt-agent-")
    name = f"a{secrets.token_hex(3)}"
    port, metrics_port = free_port(), free_port()
    config = AgentConfig(
        etcd_endpoints=[etcd.endpoint],
        advertise=f"127.0.0.1:{port}",
        name=name,
        labels={"region": "eu"},
        data_root=root,
        heartbeat_s=0.5,
        ttl_s=2,
        metrics_listen=f"127.0.0.1:{metrics_port}",
        bridge_subnet="10.79.0.0/24",
    )
    try:
        for _ in range(2):  # the second life comes back under the same node ID
            stop = asyncio.Event()
            task = asyncio.create_task(run_agent(config, stop))
            try:
                await wait_for(lambda: _listed(etcd, name), 10)
                nodes = [
                    n for n in await list_nodes([etcd.endpoint], "/flotilla") if n.name == name
                ]
                assert len(nodes) == 1
                assert nodes[0].id == nodeid.load_or_create(root)
                assert nodes[0].addr == f"127.0.0.1:{port}"
                assert dict(nodes[0].labels) == {"region": "eu"}
                body = await asyncio.to_thread(_get, f"http://127.0.0.1:{metrics_port}/metrics")
                assert 'flotilla_containers{state="running"} 0.0' in body
                assert "flotilla_lease_renewals_total" in body
            finally:
                stop.set()
                await asyncio.wait_for(task, 15)
            assert not await _listed(etcd, name)  # deregistered at once, not after the TTL
    finally:
        Cgroups(f"flotilla/{name}").remove_parent()
        shutil.rmtree(root, ignore_errors=True)


async def _listed(etcd: EtcdServer, name: str) -> bool:
    return any(n.name == name for n in await list_nodes([etcd.endpoint], "/flotilla"))


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def test_node_id_persists(tmp_path: os.PathLike[str]) -> None:
    first = nodeid.load_or_create(str(tmp_path))
    assert nodeid.valid(first) and len(first.split(":")) == 12
    assert nodeid.load_or_create(str(tmp_path)) == first


async def test_metrics_interceptor_counts_operations() -> None:
    import grpc

    from agent.events import EventBus
    from agent.service import AgentService
    from proto import agent_pb2, agent_pb2_grpc

    root = tempfile.mkdtemp(prefix="flt-agent-m-")
    metrics = AgentMetrics()
    server = grpc.aio.server(interceptors=[metrics.interceptor()])
    try:
        rt = Runtime(root, node_name="m")
        metrics.attach_runtime(rt)
        agent_pb2_grpc.add_AgentServicer_to_server(AgentService(rt, EventBus()), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            await stub.Ping(agent_pb2.PingRequest())
            await stub.Ping(agent_pb2.PingRequest())
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.ContainerInspect(agent_pb2.ContainerRef(id="missing"))
        body = metrics.render().decode()
        assert 'flotilla_operations_total{op="Ping",outcome="ok"} 2.0' in body
        assert 'flotilla_operations_total{op="ContainerInspect",outcome="error"} 1.0' in body
        assert 'flotilla_operation_duration_seconds_count{op="Ping"} 2.0' in body
        assert 'flotilla_containers{state="running"} 0.0' in body
    finally:
        await server.stop(None)
        shutil.rmtree(root, ignore_errors=True)


async def test_agent_restart_keeps_container_and_node_id(
    etcd: EtcdServer,
    busybox_tar: str,
) -> None:
    import json

    from proto import agent_pb2
    from proto.rpc import agent_client

    root = tempfile.mkdtemp(prefix="flt-agent-rs-")
    name = f"r{secrets.token_hex(3)}"
    port = free_port()
    subnet = "10.80.0.0/24"
    with open(busybox_tar, "rb") as f:
        images = Runtime(root, node_name=name).images
        image_transfer.import_tarball(images, f, "busybox:latest", ['CMD ["sh"]'])
    config = AgentConfig(
        etcd_endpoints=[etcd.endpoint],
        advertise=f"127.0.0.1:{port}",
        name=name,
        data_root=root,
        heartbeat_s=0.5,
        ttl_s=2,
        bridge_subnet=subnet,
    )
    client = await KV.connect([etcd.endpoint])
    node_id = nodeid.load_or_create(root)

    async def status_of(cid: str) -> ContainerStatus | None:
        return (await read_status(client, node_id)).get(cid)

    async def running(cid: str) -> bool:
        st = await status_of(cid)
        return st is not None and st.state == "running"

    async def start_agent() -> tuple[asyncio.Event, asyncio.Task[None]]:
        stop = asyncio.Event()
        task = asyncio.create_task(run_agent(config, stop))
        await wait_for(lambda: read_node(client, node_id), 10)
        return stop, task

    try:
        stop, task = await start_agent()
        try:
            node_entry = await client.get(KEYS.node(node_id))
            member_entry = await client.get(KEYS.member(node_id))
            assert node_entry is not None and member_entry is not None
            stub = agent_client(f"127.0.0.1:{port}")
            body = {"Image": "busybox", "Cmd": ["sh", "-c", "echo hello; sleep 60"]}
            reply = await stub.ContainerCreate(
                agent_pb2.ContainerCreateRequest(json=json.dumps(body).encode(), name="keep")
            )
            cid = reply.id
            await stub.ContainerStart(agent_pb2.ContainerStartRequest(id=cid))
            await stub.channel.close()
            await wait_for(lambda: running(cid), 5)
            pid = (await status_of(cid)).pid  # type: ignore[union-attr]
            # A container's changes are in its status record only: the node record is written
            # at registrations alone (each also writes members/<id>), never for a container.
            node_now = await client.get(KEYS.node(node_id))
            member_now = await client.get(KEYS.member(node_id))
            assert node_now is not None and member_now is not None
            assert node_now == node_entry or member_now.mod_revision > node_now.mod_revision
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
        assert await read_node(client, node_id) is None
        os.kill(pid, 0)  # the container outlived its agent
        assert (await status_of(cid)).state == "running"  # type: ignore[union-attr]

        stop, task = await start_agent()  # same data root: same node ID, container re-adopted
        try:
            await wait_for(lambda: running(cid), 5)
            assert (await status_of(cid)).pid == pid  # type: ignore[union-attr]
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
    finally:
        rt = Runtime(root, node_name=name, bridge_subnet=subnet)
        await rt.open()
        await remove_runtime(rt)
        await client.delete_prefix(KEYS.status_prefix(node_id))
        await client.close()
        shutil.rmtree(root, ignore_errors=True)
