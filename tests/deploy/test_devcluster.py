"""The dev cluster end to end: real etcd, real `flotilla join` agents in network namespaces.

One 2-node cluster serves the whole module (bringing it up is the slow part); the tests run in
file order and each leaves it as it found it: both agents running and registered.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from deploy import dev_cleanup, dev_network, dev_processes
from deploy import devcluster as dc
from deploy.dev_drills import DRILLS
from tests.fixtures import dev_cluster, dev_cluster_skip_reason

TTL_S = 3.0  # the dev cluster's agents run with --ttl 3s (deploy/dev_layout.py)
MARGIN_S = 4.0
LABELS = {"node-1": {"region": "eu", "disk": "ssd"}}


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(2, LABELS, need_docker=False) as nodes:
        yield nodes


def wait_for(cond, timeout: float, what: str) -> float:  # noqa: ANN001
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not after {timeout:.0f}s")
        time.sleep(0.1)
    return time.monotonic() - start


def reachable_from(node: str, host: str, port: int) -> bool:
    """Can a process in `node`'s netns open a TCP connection to host:port?"""
    code = (
        "import socket,sys\n"
        f"try: socket.create_connection(({host!r}, {port}), timeout=1).close()\n"
        "except OSError: sys.exit(1)\n"
    )
    res = subprocess.run(
        ["nsenter", f"--net=/run/netns/{node}", sys.executable, "-c", code], timeout=10
    )
    return res.returncode == 0


def test_nodes_registered_with_labels(cluster: dict[str, object]) -> None:
    assert sorted(cluster) == ["node-0", "node-1"]
    n0, n1 = cluster["node-0"], cluster["node-1"]
    assert n0.addr == "10.99.0.10:4243" and n1.addr == "10.99.0.11:4243"
    assert dict(n1.labels).items() >= LABELS["node-1"].items()
    assert not {"region", "disk"} & dict(n0.labels).keys()
    for n in (n0, n1):
        assert n.ncpu >= 1 and n.memory_bytes > 0
        assert len(n.id.split(":")) == 12
    assert n0.id != n1.id
    assert reachable_from("node-0", "10.99.0.1", 2379)
    assert reachable_from("node-0", "10.99.0.11", 4243)  # node-1's agent, over the underlay


def test_flotilla_list(cluster: dict[str, object]) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "list"], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "node-0  10.99.0.10:4243  healthy",
        "node-1  10.99.0.11:4243  healthy",
    ]
    explicit = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "list", "etcd://127.0.0.1:2379/flotilla"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert explicit.stdout == res.stdout
    other = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "list", "etcd://127.0.0.1:2379/elsewhere"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert other.returncode == 0 and other.stdout == ""


def test_status(cluster: dict[str, object]) -> None:
    st = dc.status()
    assert st.etcd
    assert [(n.name, n.netns, n.agent, n.link, n.registered) for n in st.nodes] == [
        ("node-0", True, "running", "up", True),
        ("node-1", True, "running", "up", True),
    ]
    res = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "dev", "status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    assert "etcd  127.0.0.1:2379  up" in res.stdout
    assert "node-1  netns=yes  agent=running" in res.stdout


def test_kill_then_start_same_id(cluster: dict[str, object]) -> None:
    node_id = cluster["node-1"].id
    dc.kill("node-1")
    assert dc.status().nodes[1].agent == "stopped"
    wait_for(lambda: "node-1" not in dc.registered(), TTL_S + MARGIN_S, "node key gone")
    assert "node-0" in dc.registered()
    rec = dc.start("node-1", timeout=30)
    assert rec.id == node_id
    assert dc.status().nodes[1].agent == "running"


def test_stop_then_start(cluster: dict[str, object]) -> None:
    node_id = cluster["node-0"].id
    dc.stop("node-0")
    assert dc.status().nodes[0].agent == "stopped"
    # A clean stop may revoke the lease at once; at the latest the TTL removes the key.
    wait_for(lambda: "node-0" not in dc.registered(), TTL_S + MARGIN_S, "node key gone")
    assert dc.start("node-0", timeout=30).id == node_id


def test_partition_then_heal(cluster: dict[str, object]) -> None:
    node_id = cluster["node-1"].id
    dc.partition("node-1")
    try:
        assert dc.status().nodes[1].link == "down"
        assert not reachable_from("node-1", "10.99.0.1", 2379)
        wait_for(lambda: "node-1" not in dc.registered(), TTL_S + MARGIN_S, "node key gone")
        assert dc.status().nodes[1].agent == "running"  # cut off, not dead
    finally:
        dc.heal("node-1")
    assert dc.status().nodes[1].link == "up"
    wait_for(lambda: "node-1" in dc.registered(), 30, "node-1 re-registered after heal")
    assert dc.registered()["node-1"].id == node_id


def test_freeze_then_heal(cluster: dict[str, object]) -> None:
    node_id = cluster["node-0"].id
    dc.freeze("node-0")
    try:
        assert dc.status().nodes[0].agent == "frozen"
        wait_for(lambda: "node-0" not in dc.registered(), TTL_S + MARGIN_S, "node key gone")
    finally:
        dc.heal("node-0")
    assert dc.status().nodes[0].agent == "running"
    wait_for(lambda: "node-0" in dc.registered(), 30, "node-0 re-registered after thaw")
    assert dc.registered()["node-0"].id == node_id


async def _agent_call(addr: str, fn):  # noqa: ANN001, ANN202
    from proto import agent_pb2_grpc
    from proto.rpc import agent_channel

    channel = agent_channel(addr, dc.dev_tls())
    try:
        return await fn(agent_pb2_grpc.AgentStub(channel))
    finally:
        await channel.close()


async def _logs(stub, cid: str) -> bytes:  # noqa: ANN001
    from proto import agent_pb2

    req = agent_pb2.ContainerLogsRequest(id=cid, stdout=True, stderr=True)
    return b"".join([chunk.data async for chunk in stub.ContainerLogs(req)])


def test_restart_readopts_container(cluster: dict[str, object], busybox_tar: str) -> None:
    """kill -9 the agent: its container keeps running; the restarted agent re-adopts it."""
    from proto import agent_pb2

    addr = cluster["node-1"].addr

    async def run(stub) -> tuple[str, int]:  # noqa: ANN001
        async def image():  # noqa: ANN202
            opts = agent_pb2.ImageImportOptions(reference="busybox:latest", changes=['CMD ["sh"]'])
            yield agent_pb2.ImageImportInput(options=opts)
            with open(busybox_tar, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield agent_pb2.ImageImportInput(data=chunk)

        await stub.ImageImport(image())
        body = {
            "Image": "busybox:latest",
            "Cmd": ["sh", "-c", "echo hello-from-node-1; sleep 1000"],
        }
        req = agent_pb2.ContainerCreateRequest(json=json.dumps(body).encode(), name="readopt")
        cid = (await stub.ContainerCreate(req)).id
        await stub.ContainerStart(agent_pb2.ContainerStartRequest(id=cid))
        for _ in range(50):
            if b"hello-from-node-1" in await _logs(stub, cid):
                break
            await asyncio.sleep(0.1)
        info = json.loads((await stub.ContainerInspect(agent_pb2.ContainerRef(id=cid))).json)
        return cid, info["State"]["Pid"]

    async def inspect(stub) -> tuple[dict, bytes]:  # noqa: ANN001
        ref = agent_pb2.ContainerRef(id="readopt")
        info = json.loads((await stub.ContainerInspect(ref)).json)
        return info, await _logs(stub, info["Id"])

    async def remove(stub) -> None:  # noqa: ANN001
        await stub.ContainerRemove(agent_pb2.ContainerRemoveRequest(id="readopt", force=True))

    cid, pid = asyncio.run(_agent_call(addr, run))
    try:
        assert pid > 0
        node_id = cluster["node-1"].id
        dc.kill("node-1")
        assert dc.proc_state(pid) not in (None, "Z")  # the container outlives its agent
        assert dc.start("node-1", timeout=30).id == node_id
        info, logs = asyncio.run(_agent_call(addr, inspect))
        assert info["Id"] == cid
        assert info["State"]["Running"] and info["State"]["Pid"] == pid
        assert b"hello-from-node-1" in logs
    finally:
        asyncio.run(_agent_call(addr, remove))


def test_etcd_outage_recovers(cluster: dict[str, object], busybox_tar: str) -> None:
    """etcd down for 10 s: agents re-register by themselves; their containers keep running."""
    from proto import agent_pb2

    addr = cluster["node-0"].addr

    async def run(stub) -> str:  # noqa: ANN001
        async def image():  # noqa: ANN202
            yield agent_pb2.ImageImportInput(
                options=agent_pb2.ImageImportOptions(reference="busybox:latest")
            )
            with open(busybox_tar, "rb") as f:
                yield agent_pb2.ImageImportInput(data=f.read())

        await stub.ImageImport(image())
        body = {"Image": "busybox:latest", "Cmd": ["sleep", "1000"]}
        req = agent_pb2.ContainerCreateRequest(json=json.dumps(body).encode(), name="outage")
        cid = (await stub.ContainerCreate(req)).id
        await stub.ContainerStart(agent_pb2.ContainerStartRequest(id=cid))
        return cid

    async def state(stub) -> dict:  # noqa: ANN001
        ref = agent_pb2.ContainerRef(id="outage")
        return json.loads((await stub.ContainerInspect(ref)).json)["State"]

    async def remove(stub) -> None:  # noqa: ANN001
        await stub.ContainerRemove(agent_pb2.ContainerRemoveRequest(id="outage", force=True))

    ids = {name: rec.id for name, rec in dc.registered().items()}
    asyncio.run(_agent_call(addr, run))
    pid = asyncio.run(_agent_call(addr, state))["Pid"]
    try:
        dc.stop_etcd()
        assert not dc.status().etcd
        time.sleep(10)
        dc.start_etcd()
        wait_for(lambda: dc.registered().keys() == ids.keys(), 15, "both nodes re-registered")
        assert {name: rec.id for name, rec in dc.registered().items()} == ids
        st = asyncio.run(_agent_call(addr, state))
        assert st["Running"] and st["Pid"] == pid
    finally:
        asyncio.run(_agent_call(addr, remove))


def _run_sleeper(addr: str, busybox_tar: str, name: str) -> tuple[str, int]:
    """Start a `sleep 1000` container on the agent at `addr`; its ID and pid."""
    from proto import agent_pb2

    async def run(stub) -> tuple[str, int]:  # noqa: ANN001
        async def image():  # noqa: ANN202
            yield agent_pb2.ImageImportInput(
                options=agent_pb2.ImageImportOptions(reference="busybox:latest")
            )
            with open(busybox_tar, "rb") as f:
                yield agent_pb2.ImageImportInput(data=f.read())

        await stub.ImageImport(image())
        body = {"Image": "busybox:latest", "Cmd": ["sleep", "1000"]}
        req = agent_pb2.ContainerCreateRequest(json=json.dumps(body).encode(), name=name)
        cid = (await stub.ContainerCreate(req)).id
        await stub.ContainerStart(agent_pb2.ContainerStartRequest(id=cid))
        info = json.loads((await stub.ContainerInspect(agent_pb2.ContainerRef(id=cid))).json)
        return cid, info["State"]["Pid"]

    return asyncio.run(_agent_call(addr, run))


def _remove(addr: str, name: str) -> None:
    from proto import agent_pb2

    async def remove(stub) -> None:  # noqa: ANN001
        await stub.ContainerRemove(agent_pb2.ContainerRemoveRequest(id=name, force=True))

    asyncio.run(_agent_call(addr, remove))


def _cgroup_procs(top: str) -> list[int]:
    out: list[int] = []
    for d, _, _ in os.walk(top):
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def test_crash_then_heal(cluster: dict[str, object], busybox_tar: str) -> None:
    """The whole host goes down: agent, shims and container processes die, nothing answers;
    heal brings the node back with its identity."""
    addr, node_id = cluster["node-1"].addr, cluster["node-1"].id
    cid, pid = _run_sleeper(addr, busybox_tar, "crashme")
    try:
        assert dev_cleanup.node_shims("node-1") and dc.proc_state(pid) not in (None, "Z")
        dc.crash("node-1")
        st = dc.status().nodes[1]
        assert (st.agent, st.link) == ("stopped", "down")
        assert dc.proc_state(pid) in (None, "Z")
        assert dev_cleanup.node_shims("node-1") == []
        assert dev_cleanup.node_cgroups("node-1")
        assert all(_cgroup_procs(top) == [] for top in dev_cleanup.node_cgroups("node-1"))
        assert not reachable_from("node-0", "10.99.0.11", 4243)
        wait_for(lambda: "node-1" not in dc.registered(), TTL_S + MARGIN_S, "node key gone")
        assert "node-0" in dc.registered()
        dc.heal("node-1")
        st = dc.status().nodes[1]
        assert (st.agent, st.link) == ("running", "up")
        assert dc.registered()["node-1"].id == node_id
        assert reachable_from("node-0", "10.99.0.11", 4243)
    finally:
        dc.heal("node-1")
        _remove(addr, "crashme")


@pytest.mark.parametrize("drill", ["kill", "stop", "freeze", "partition", "etcd-outage"])
def test_heal_from_any_drill(cluster: dict[str, object], drill: str) -> None:
    node_id = cluster["node-0"].id
    DRILLS[drill][0]("node-0")
    try:
        if drill == "etcd-outage":
            assert not reachable_from("node-0", "10.99.0.1", 2379)
            assert reachable_from("node-0", "10.99.0.11", 4243)  # only etcd is cut off
        wait_for(lambda: "node-0" not in dc.registered(), TTL_S + MARGIN_S, "node key gone")
    finally:
        dc.heal("node-0")
    st = dc.status().nodes[0]
    assert (st.agent, st.link) == ("running", "up")
    assert reachable_from("node-0", "10.99.0.1", 2379)
    wait_for(lambda: "node-0" in dc.registered(), 30, "node-0 registered after heal")
    assert dc.registered()["node-0"].id == node_id


def test_drill_rpc_freeze_is_undone_by_the_agents_watchdog(cluster: dict[str, object]) -> None:
    """The agent (started with --allow-drills) freezes itself; its watchdog thaws it: no heal."""
    from proto import agent_pb2

    async def drill(stub):  # noqa: ANN001, ANN202
        return await stub.Drill(agent_pb2.DrillRequest(kind="freeze", duration_ms=2000))

    reply = asyncio.run(_agent_call(cluster["node-1"].addr, drill))
    assert reply.kind == "freeze" and reply.undo_at_ns - reply.started_at_ns == 2_000_000_000
    try:
        wait_for(lambda: dc.status().nodes[1].agent == "frozen", 5, "agent frozen")
        wait_for(lambda: dc.status().nodes[1].agent == "running", 15, "agent thawed")
    finally:
        dc.heal("node-1")
    wait_for(lambda: "node-1" in dc.registered(), 30, "node-1 registered")


def test_flotilla_drill_reports_and_heals(cluster: dict[str, object]) -> None:
    """`flotilla drill crash NODE --containers 3 --json`: the host goes down, its reschedulable
    containers run on the other node, none twice, none lost; the node is healed, the drill's
    containers removed."""
    import docker

    res = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "drill", "crash", "node-1", "--json"]
        + ["--containers", "3", "--timeout", "30"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["kind"] == "crash" and report["node"] == "node-1" and report["via"] == "dev"
    assert report["detection_s"] is not None
    moved = [(c["name"][-2:], c["from_node"], c["to_node"]) for c in report["containers"]]
    assert moved == [(f"-{i}", "node-1", "node-0") for i in range(3)]
    assert all(c["name"].startswith("drill-node-1-") for c in report["containers"])
    assert all(c["after_s"] is not None for c in report["containers"])
    assert report["healed"] and report["duplicates"] == 0 and report["lost"] == 0
    assert dc.status().nodes[1].agent == "running"
    wait_for(lambda: "node-1" in dc.registered(), 30, "node-1 registered")
    client = docker.APIClient(base_url=dc.docker_host())
    try:
        names = [n for r in client.containers(all=True) for n in r.get("Names") or []]
    finally:
        client.close()
    assert [n for n in names if "drill-node-1" in n] == []
    bad = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "drill", "kill", "node-9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert (
        bad.stderr.strip()
        == "flotilla drill: node-9 is not registered (no healthy node of that name)"
    )


def test_dev_errors(cluster: dict[str, object]) -> None:
    with pytest.raises(dc.DevError):
        dc.kill("node-7")
    with pytest.raises(dc.DevError):
        dc.kill("bogus")


def _leftovers() -> list[str]:
    out: list[str] = []
    out += [f"netns {n}" for n in dev_network.netns_list()]
    out += [f"link {n}" for n in dev_network.links() if n == dc.BRIDGE or n.startswith("flt-u-")]
    out += [f"shim {p}" for p in dev_processes.pids() if dev_cleanup.is_dev_shim(p)]
    out += [f"etcd {p}" for p in dev_processes.pids() if dev_processes.is_dev_etcd(p)]
    for p in dev_processes.pids():
        args = dev_processes.cmdline(p)
        if "deploy.cli" in args and any(a.startswith(dc.ROOT) for a in args):
            out.append(f"agent {p}")
    out += [f"cgroup {c}" for c in dev_cleanup.node_cgroups()]
    parents = [os.path.join(r, "flotilla") for r in dev_cleanup.cgroup_roots()]
    out += [f"cgroup {p}" for p in parents if os.path.isdir(p)]
    out += [f"mount {m}" for m in dev_cleanup.mounts_under(dc.ROOT)]
    if os.path.exists(dc.ROOT):
        out.append(f"dir {dc.ROOT}")
    return out


def test_down_leaves_nothing(cluster: dict[str, object]) -> None:
    dc.down()
    assert _leftovers() == []
    dc.down()  # idempotent
    assert _leftovers() == []
    assert not dc.status().etcd


CRASHED_AGENT = """
import asyncio, sys
from runtime import image_transfer
from runtime.containers import Runtime

async def main() -> None:
    rt = Runtime(sys.argv[1], node_name=sys.argv[2])
    await rt.open()
    with open(sys.argv[3], "rb") as f:
        image_transfer.import_tarball(rt.images, f, "busybox:latest", ['CMD ["sh"]'])
    rec = await rt.create({"Image": "busybox:latest", "Cmd": ["sleep", "1000"]}, name="crash")
    await rt.start(rec.id)
    print(rec.id)

asyncio.run(main())
"""


def test_down_after_crash(busybox_tar: str) -> None:
    """A crashed cluster (state file lost, a container still running) is found and removed."""
    reason = dev_cluster_skip_reason(need_docker=False)
    if reason:
        pytest.skip(reason)
    try:
        dc.up(1, timeout=60)
        dc.kill("node-0")
        # What a crashed agent leaves: a running container with its shim, cgroups, netns mount.
        res = subprocess.run(
            ["nsenter", "--net=/run/netns/node-0", sys.executable, "-c", CRASHED_AGENT]
            + [os.path.join(dc.ROOT, "node-0"), "node-0", busybox_tar],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=dc.REPO,
        )
        assert res.returncode == 0, res.stderr
        assert any(dev_cleanup.is_dev_shim(p) for p in dev_processes.pids())
        assert dev_cleanup.node_cgroups() and dev_cleanup.mounts_under(dc.ROOT)
        os.unlink(dc.STATE)
    finally:
        dc.down()
    assert _leftovers() == []


def test_remains_of_a_killed_run_do_not_block_the_next() -> None:
    """A cluster whose processes were all killed (a test run stopped half-way) is only remains:
    the next dev-cluster test clears them instead of refusing to run; a live one is kept."""
    reason = dev_cluster_skip_reason(need_docker=False)
    if reason:
        pytest.skip(reason)
    try:
        dc.up(1, timeout=60)
        assert not dc.only_leftovers()
        assert dev_cluster_skip_reason(need_docker=False) is not None  # live: kept
        victims = dev_processes.manager_pids() | dev_processes.any_agent_pids()
        dev_processes.kill_all(victims | dev_processes.etcd_pids())
        assert dc.is_up() and dc.only_leftovers()
        assert dev_cluster_skip_reason(need_docker=False) is None  # cleared
        assert not dc.is_up()
    finally:
        dc.down()
    assert _leftovers() == []


def test_dev_up_with_manager_flags() -> None:
    """`flotilla dev up --strategy/--filter -- FLAGS`, as Swarm's tests start their manager."""
    import http.client

    reason = dev_cluster_skip_reason(need_docker=False)
    if reason:
        pytest.skip(reason)
    try:
        res = subprocess.run(
            [sys.executable, "-m", "deploy.cli", "dev", "up", "--nodes", "1"]
            + ["--strategy", "binpack", "--filter", "constraint", "-f", "health"]
            + ["--", "--log-level", "debug"],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        flags = ["--strategy", "binpack", "--filter", "constraint", "--filter", "health"]
        flags += ["--log-level", "debug"]
        assert f"manager: {dc.MANAGER_ADDR} and unix://{dc.MANAGER_SOCKET} {' '.join(flags)}" in (
            res.stdout
        )
        # The manager runs with the same interpreter as the command (the venv's, when installed).
        (pid,) = dev_processes.manager_pids()
        cmdline = dev_processes.cmdline(pid)
        assert cmdline[0] == sys.executable and cmdline[-len(flags) :] == flags
        host, _, port = dc.MANAGER_ADDR.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("GET", "/info")
            info = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        rows = dict(map(tuple, info["SystemStatus"][:4]))
        assert (rows["Strategy"], rows["Filters"], rows["Nodes"]) == (
            "binpack",
            "constraint, health",
            "1",
        )
        with open(os.path.join(dc.ROOT, "manager.log")) as f:
            assert " DEBUG " in f.read()  # --log-level debug reached the manager
    finally:
        dc.down()
    assert _leftovers() == []
