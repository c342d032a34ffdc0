"""Hollow nodes in the dev cluster, end to end: 2 real nodes and 50 hollow ones (one process),
the manager and the real docker CLI. The manager must see the hollow nodes as nodes, place
containers on them by constraint, list and remove them; `dev down` must leave nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from deploy import dev_hollow, dev_processes
from deploy import devcluster as dc
from proto.kv import KV
from tests.fixtures import dev_cluster, docker

REAL = 2
HOLLOW = 50


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(REAL, hollow=HOLLOW) as nodes:
        yield nodes


def _info_nodes() -> dict[str, str]:
    """`docker info`'s node list: name → address (classic Swarm's SystemStatus rows)."""
    status = json.loads(docker("info", "--format", "{{json .SystemStatus}}").stdout)
    nodes = {}
    for key, value in status or []:
        if key.startswith(" ") and not key.strip().startswith("└"):
            nodes[key.strip()] = value
    return nodes


def test_docker_info_lists_real_and_hollow_nodes(cluster: dict[str, object]) -> None:
    nodes = _info_nodes()
    assert len(nodes) == REAL + HOLLOW
    assert {f"node-{i}" for i in range(REAL)} <= nodes.keys()
    assert {f"hollow-{i}" for i in range(HOLLOW)} <= nodes.keys()
    hollow_addrs = {nodes[f"hollow-{i}"] for i in range(HOLLOW)}
    assert len(hollow_addrs) == HOLLOW  # each its own gRPC endpoint
    assert all(a.startswith("127.0.0.1:") for a in hollow_addrs)
    status = dc.status()
    assert sum(h.registered for h in status.hollow) == HOLLOW


def test_run_on_hollow_node_by_constraint_ps_rm(cluster: dict[str, object]) -> None:
    cid = docker(
        "run", "-d", "--name", "on-h7", "-e", "constraint:node==hollow-7", "busybox", "sleep", "600"
    ).stdout.strip()
    try:
        view = json.loads(docker("inspect", cid).stdout)[0]
        assert view["Node"]["Name"] == "hollow-7"
        assert view["State"]["Running"] is True
        rows = docker("ps", "--format", "{{.ID}} {{.Names}} {{.Status}}").stdout.splitlines()
        assert any(
            r.startswith(cid[:12]) and "hollow-7/on-h7" in r and " Up " in f" {r}" for r in rows
        )
        # A command whose end is known ends: its exit code comes back through the manager.
        ran = docker(
            "run",
            "--rm",
            "-e",
            "constraint:node==hollow-3",
            "busybox",
            "sh",
            "-c",
            "exit 3",
            check=False,
        )
        assert ran.returncode == 3, ran.stderr
        # What needs a host is refused in dockerd's shape, not a crash.
        refused = docker("exec", cid, "true", check=False)
        assert refused.returncode != 0 and "not supported on a hollow node" in refused.stderr
    finally:
        docker("rm", "-f", cid, check=False)
    assert cid[:12] not in docker("ps", "-a", "--format", "{{.ID}}").stdout


def test_dev_down_leaves_nothing(cluster: dict[str, object]) -> None:
    pid = next(iter(dev_hollow.hollow_pids()))
    docker("run", "-d", "-e", "constraint:node==hollow-1", "busybox", "sleep", "600")

    async def keys() -> list[str]:
        async with await KV.connect([dc.etcd_endpoint()]) as kv:
            return [e.key for e in await kv.get_prefix(dc.PREFIX + "/")]

    assert any("/status/" in k for k in asyncio.run(keys()))
    # The hollow host leaving deregisters every hollow node at once (leases revoked)...
    dev_hollow.stop_hollow()
    assert not dev_processes.alive(pid)
    hollow_nodes = {n for n in dc.registered() if dev_hollow.is_hollow_name(n)}
    assert hollow_nodes == set()
    # ...and `dev down` takes the rest, etcd and its data included.
    dc.down()
    assert not dev_processes.alive(pid)
    assert not dev_hollow.hollow_pids()
    assert not dev_processes.etcd_pids() and not dev_processes.manager_pids()
    assert not dev_processes.any_agent_pids()
    assert dc.registered(timeout=2.0) == {}  # etcd is gone, and its data with it
    assert not dc.is_up()
