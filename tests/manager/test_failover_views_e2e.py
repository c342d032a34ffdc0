"""What `docker ps`/`inspect` show around a reschedule, through the real docker CLI on a dev
cluster (docs/failover.md, "What `docker` shows"): a container pending reschedule whose old
status record is gone is still listed and inspected; a stale copy (its logical record names
the replacement) is never listed nor resolved, whether it is a departed node's row or a
container the returned node's agent still has. No timing assertions: every wait polls with a
deadline."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from deploy import dev_drills
from deploy.dev_certs import dev_tls
from deploy.dev_layout import PREFIX, etcd_endpoint
from proto import agent_pb2 as pb
from proto.keys import Keys
from proto.kv import KV
from proto.logical import GENERATION_LABEL, PENDING, SWARM_ID_LABEL
from proto.records_pb2 import ContainerStatus
from proto.rpc import agent_client
from tests.fixtures import dev_cluster, docker
from tests.manager.swarm_compat import heal_and_reset, inspect, wait_for
from tests.manager.test_failover_e2e import POLICY, logical, run, running_names

DEADLINE_S = 60
KEYS = Keys(PREFIX)
T = TypeVar("T")


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(3) as nodes:
        yield nodes


@pytest.fixture(autouse=True)
def clean(cluster: dict[str, object]) -> Iterator[None]:
    try:
        yield
    finally:
        heal_and_reset(cluster, DEADLINE_S)


def etcd(fn: Callable[[KV], Awaitable[T]]) -> T:
    async def go() -> T:
        async with await KV.connect([etcd_endpoint()]) as kv:
            return await fn(kv)

    return asyncio.run(go())


def agent(addr: str, fn: Callable[[Any], Awaitable[T]]) -> T:
    """One call on a node's agent itself, not through the manager."""

    async def go() -> T:
        stub = agent_client(addr, dev_tls())
        try:
            return await fn(stub)
        finally:
            await stub.channel.close()

    return asyncio.run(go())


def manager_caught_up() -> None:
    """Until the manager's view has every etcd write made so far: it sees them in revision
    order, so once a marker status record written now is listed (a departed node's row), the
    writes before it were seen too."""
    node, cid, name = "no-such-node", secrets.token_hex(32), f"marker-{secrets.token_hex(4)}"
    key = KEYS.status(node, cid)
    marker = ContainerStatus(id=cid, node_id=node, name=name, image="busybox", state="exited")
    etcd(lambda kv: kv.put(key, marker.SerializeToString()))
    try:
        wait_for(
            lambda: docker("ps", "-aq", "--filter", f"name={name}").stdout.strip() != "",
            DEADLINE_S,
            "the manager sees the marker",
        )
    finally:
        etcd(lambda kv: kv.delete(key))


def rows(*args: str) -> list[str]:
    fmt = "{{.ID}}|{{.Names}}|{{.Status}}|{{.Command}}"
    return docker("ps", "--no-trunc", *args, "--format", fmt).stdout.splitlines()


def names_of(swarm_id: str, *args: str) -> list[str]:
    """`docker ps` names of every row carrying the swarm id."""
    found = docker(
        "ps", *args, "--filter", f"label={SWARM_ID_LABEL}={swarm_id}", "--format", "{{.Names}}"
    )
    return found.stdout.split()


def refused(*args: str) -> str:
    res = docker(*args, check=False)
    assert res.returncode != 0, res.stdout
    return res.stderr


def test_pending_without_a_status_record_is_listed_and_inspected() -> None:
    lost = run("pinned-lost", "-e", POLICY, "-e", "constraint:node==node-1")
    kept = run("pinned-kept", "-e", POLICY, "-e", "constraint:node==node-1")
    info = inspect(lost)
    assert info["Node"]["Name"] == "node-1"
    node1, swarm_id = info["Node"]["ID"], info["Config"]["Labels"][SWARM_ID_LABEL]
    dev_drills.kill("node-1")
    wait_for(
        lambda: (rec := logical(swarm_id)) is not None and rec.state == PENDING,
        DEADLINE_S,
        "pinned-lost pending",
    )
    wait_for(
        lambda: f'{kept}|node-1/pinned-kept|Pending reschedule|""' in rows("-a"),
        DEADLINE_S,
        "pinned-kept pending in ps -a (from its status record)",
    )
    # Its old copy's status record is lost (never written, or deleted by hand).
    etcd(lambda kv: kv.delete(KEYS.status(node1, lost)))
    manager_caught_up()

    listed = rows("-a")
    assert f'{lost}|node-1/pinned-lost|Pending reschedule|"sleep 1000"' in listed, listed
    assert names_of(swarm_id, "-a") == ["node-1/pinned-lost"]  # once
    assert names_of(swarm_id) == []  # not running: `-a` only
    by_name = docker("ps", "-a", "--filter", "name=pinned-lost", "--format", "{{.Names}}")
    assert by_name.stdout.split() == ["node-1/pinned-lost"]
    exited = docker("ps", "--filter", "status=exited", "--format", "{{.Names}}").stdout.split()
    assert "node-1/pinned-lost" in exited
    running = docker("ps", "--filter", "status=running", "--format", "{{.Names}}").stdout.split()
    assert "node-1/pinned-lost" not in running
    policy = "label=com.docker.swarm.reschedule-policies"
    both = docker("ps", "-a", "--filter", policy, "--format", "{{.Names}}").stdout.split()
    assert sorted(both) == ["node-1/pinned-kept", "node-1/pinned-lost"]

    # inspect answers as for any container of a down node (the row with a status record too).
    for ref in ("pinned-lost", swarm_id, lost):
        assert f"Container {ref} running on unhealthy node node-1" in refused("inspect", ref)
    assert "Container pinned-kept running on unhealthy node node-1" in refused(
        "inspect", "pinned-kept"
    )
    # Its name stays taken while it waits.
    assert "is already in use" in refused("create", "--name", "pinned-lost", "busybox")

    # node-1 comes back: running there again, one copy, listed from its new status record.
    # Which copy is a race the logical record's compare-and-swap settles: the returned agent
    # claims its old copy back (generation 1), or the manager's retry places a new one first
    # (generation 2, and the old copy is removed as stale).
    dev_drills.start("node-1")
    wait_for(
        lambda: "node-1/pinned-lost" in running_names(), DEADLINE_S, "pinned-lost placed again"
    )
    again = inspect("pinned-lost")
    generation = again["Config"]["Labels"][GENERATION_LABEL]
    assert generation == "2" or (generation == "1" and again["Id"] == lost)
    wait_for(
        lambda: names_of(swarm_id, "-a") == ["node-1/pinned-lost"],
        DEADLINE_S,
        "one pinned-lost after node-1 returned",
    )


def test_stale_copies_are_neither_listed_nor_resolved() -> None:
    old = run("web", "-e", POLICY, "-e", "constraint:node==~node-1")
    info = inspect(old)
    assert info["Node"]["Name"] == "node-1"
    node1, swarm_id = info["Node"]["ID"], info["Config"]["Labels"][SWARM_ID_LABEL]
    addr = str(info["Node"]["Addr"])
    old_key = KEYS.status(node1, old)

    async def old_status(kv: KV) -> bytes | None:
        entry = await kv.get(old_key)
        return entry.value if entry is not None else None

    wait_for(lambda: etcd(old_status) is not None, DEADLINE_S, "web's status record")
    record = etcd(old_status)
    assert record is not None
    dev_drills.kill("node-1")
    wait_for(
        lambda: any(n.endswith("/web") and not n.startswith("node-1/") for n in running_names()),
        DEADLINE_S,
        "web running on another node",
    )
    moved = inspect("web")
    live = [f"{moved['Node']['Name']}/web"]

    # 1. node-1 still down, the old copy's row written back (as an agent would that reports
    # before it removes its stale copies): not a second web.
    etcd(lambda kv: kv.put(old_key, record))
    manager_caught_up()
    assert names_of(swarm_id, "-a") == live
    assert [r for r in rows("-a") if r.startswith(old)] == []
    assert inspect("web")["Id"] == inspect(swarm_id)["Id"] == moved["Id"]
    assert "No such container" in refused("container", "inspect", old)

    # 2. node-1 back; its agent removes the stale copy. Then a copy as that agent has it before
    # the removal ran: made on the agent itself, the old name and labels, running.
    dev_drills.start("node-1")
    wait_for(lambda: etcd(old_status) is None, DEADLINE_S, "the old copy removed by node-1")
    labels = {SWARM_ID_LABEL: swarm_id, GENERATION_LABEL: "1"}
    body = {"Image": "busybox", "Cmd": ["sleep", "1000"], "Labels": labels}
    create = pb.ContainerCreateRequest(json=json.dumps(body).encode(), name="web")
    stale = agent(addr, lambda s: s.ContainerCreate(create)).id
    try:
        agent(addr, lambda s: s.ContainerStart(pb.ContainerStartRequest(id=stale)))
        key = KEYS.status(node1, stale)
        wait_for(lambda: etcd(lambda kv: kv.get(key)) is not None, DEADLINE_S, "the copy's status")
        manager_caught_up()
        on_agent = agent(addr, lambda s: s.ContainerList(pb.ContainerListRequest(all=True)))
        assert stale in [json.loads(r)["Id"] for r in on_agent.rows]  # node-1 still has it

        assert names_of(swarm_id) == live and names_of(swarm_id, "-a") == live
        assert [r for r in rows("-a") if r.startswith(stale)] == []
        assert "node-1/web" not in running_names()
        for ref in ("web", swarm_id, swarm_id[:12]):
            assert inspect(ref)["Id"] == moved["Id"], ref
        docker("logs", "web")  # the live copy's node answers
        assert "No such container" in refused("container", "inspect", stale)
        assert "No such container" in refused("container", "inspect", "node-1/web")
    finally:
        agent(addr, lambda s: s.ContainerRemove(pb.ContainerRemoveRequest(id=stale, force=True)))
