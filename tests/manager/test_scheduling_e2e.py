"""Classic Swarm's scheduling through the real docker CLI on a real 3-node dev cluster: each
filter (health, port, containerslots, dependency, affinity, constraint, whitelist) and each
strategy (spread, binpack, random, chosen with `flotilla manage --strategy`).

One cluster serves the module; tests run in file order and each removes what it made. The health
test stops an agent and the strategy tests restart the manager, so they come last.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from deploy import devcluster as dc
from tests.fixtures import dev_cluster, docker

LABELS = {
    "node-0": {"containerslots": "3"},
    "node-1": {"region": "eu", "disk": "ssd"},
    "node-2": {"region": "us"},
}
COMPOSITE = "Unable to find a node that satisfies the following conditions"


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(3, LABELS) as nodes:
        yield nodes


@pytest.fixture
def made(cluster: dict[str, object]) -> Iterator[list[str]]:
    """IDs of the containers a test made; all removed afterwards."""
    ids: list[str] = []
    try:
        yield ids
    finally:
        for cid in ids:
            docker("rm", "-f", cid, check=False)


def run(made: list[str], *args: str) -> str:
    """`docker run -d ARGS busybox sleep 300`; the node it landed on."""
    cid = docker("run", "-d", *args, "busybox", "sleep", "300").stdout.strip()
    made.append(cid)
    return node_of(cid)


def node_of(ref: str) -> str:
    return json.loads(docker("inspect", ref).stdout)[0]["Node"]["Name"]


def labels_of(ref: str) -> dict[str, str]:
    return json.loads(docker("inspect", ref).stdout)[0]["Config"]["Labels"] or {}


def refused(*args: str) -> str:
    """stderr of a `docker run` the scheduler must refuse (nothing may be left behind)."""
    before = docker("ps", "-aq").stdout
    res = docker("run", "-d", *args, "busybox", "true", check=False)
    assert res.returncode == 125, res.stdout + res.stderr
    assert docker("ps", "-aq").stdout == before
    return res.stderr


def test_constraints(made: list[str]) -> None:
    assert run(made, "-e", "constraint:region==eu", "--name", "eu") == "node-1"
    assert labels_of("eu")["com.docker.swarm.constraints"] == '["region==eu"]'
    assert run(made, "--label", 'com.docker.swarm.constraints=["region==us"]') == "node-2"
    assert run(made, "-e", "constraint:region!=eu", "-e", "constraint:region==/u./") == "node-2"
    assert run(made, "-e", "constraint:node==*-1") == "node-1"
    assert run(made, "-e", "constraint:disk==/(?i)SSD/") == "node-1"
    assert "[disk==SSD]" in refused("-e", "constraint:disk==SSD")  # globs are case-sensitive
    uname = os.uname().release
    for builtin in (
        "ostype==linux",
        "storagedriver==overlay2",
        f"kernelversion=={uname}",
        "operatingsystem==*Linux*",
    ):
        run(made, "-e", f"constraint:{builtin}")  # every node qualifies
    # A soft constraint nobody meets is dropped; a hard one is Swarm's composite error.
    run(made, "-e", "constraint:region==~mars")
    err = refused("-e", "constraint:storagedriver==aufs")
    assert f"{COMPOSITE} \n[available container slots]\n[storagedriver==aufs]" in err
    err = refused("-e", "constraint:region==eu", "-e", "constraint:disk!=ssd")
    assert "[region==eu disk!=ssd]" in err or "[disk!=ssd region==eu]" in err
    assert "One of operator ==, != is expected" in refused("-e", "constraint:region")


def test_affinities_and_dependencies(made: list[str]) -> None:
    assert run(made, "-e", "constraint:node==node-2", "--label", "app=x", "--name", "a1") == (
        "node-2"
    )
    assert run(made, "-e", "affinity:container==a1") == "node-2"
    assert run(made, "-e", "affinity:container!=a1") != "node-2"
    assert run(made, "-e", "affinity:app==x") == "node-2"
    assert run(made, "--label", 'com.docker.swarm.affinities=["app==x"]') == "node-2"
    run(made, "-e", "affinity:container==~nosuch")  # soft: placed anyway
    # An image only node-2 has (a commit of a1) draws its users there.
    docker("commit", "a1", "only-on-2:v1")
    try:
        assert run(made, "-e", "affinity:image==only-on-2:v1") == "node-2"
        assert run(made, "-e", "affinity:image!=only-on-2:v1") != "node-2"
    finally:
        docker("rmi", "-f", "only-on-2:v1", check=False)
    err = refused("-e", "affinity:container==nosuch")
    assert f"{COMPOSITE} \n[available container slots]\n[container==nosuch (soft=false)]" in err
    err = refused("-e", "affinity:container==a1", "-e", "constraint:node==node-1")
    assert "[container==a1 (soft=false)]\n[node==node-1]" in err

    # --link, --volumes-from and --net container: follow the container they name.
    assert run(made, "--link", "a1:db") == "node-2"
    assert run(made, "--volumes-from", "a1") == "node-2"
    assert run(made, "--net", "container:a1") == "node-2"
    # So do --ipc and --pid container: (a namespace can only be joined on its own host).
    assert run(made, "-e", "constraint:node==node-2", "--ipc", "shareable", "--name", "i1") == (
        "node-2"
    )
    assert run(made, "--ipc", "container:i1") == "node-2"
    assert run(made, "--pid", "container:a1") == "node-2"
    assert run(made, "-e", "constraint:node==node-1", "--name", "b1") == "node-1"
    err = refused("--link", "a1:db", "--volumes-from", "b1")
    assert "[--volumes-from=b1 --link=a1:db]" in err
    assert "[--link=nosuch:db]" in refused("--link", "nosuch:db")
    # A name beats an ID prefix, cluster-wide: name a node-1 container after a1's ID prefix.
    prefix = made[0][:3]
    assert run(made, "-e", "constraint:node==node-1", "--name", prefix) == "node-1"
    assert run(made, "--link", f"{prefix}:db") == "node-1"
    assert run(made, "--volumes-from", prefix) == "node-1"


def test_containerslots_and_whitelist(made: list[str]) -> None:
    # node-0 is labelled containerslots=3: stopped containers hold their slot too.
    docker("create", "-e", "constraint:node==node-0", "--name", "slot0", "busybox", "true")
    made.append("slot0")
    for _ in range(2):
        assert run(made, "-e", "constraint:node==node-0") == "node-0"
    err = refused("-e", "constraint:node==node-0")
    assert f"{COMPOSITE} \n[available container slots]\n[node==node-0]" in err
    # Full node-0 drops out of ordinary placement too.
    assert {run(made) for _ in range(4)} <= {"node-1", "node-2"}
    docker("rm", "slot0")
    assert run(made, "-e", "constraint:node==node-0") == "node-0"

    for _ in range(3):
        placed = run(made, "-e", "whitelist:node==node-1|node-2")
        assert placed in ("node-1", "node-2")
    assert labels_of(made[-1])["com.docker.swarm.whitelists"] == '["node==node-1|node-2"]'


def test_port_filter_and_spread(made: list[str]) -> None:
    nodes = [run(made, "-p", "127.0.0.1:18090:80") for _ in range(3)]
    assert sorted(nodes) == ["node-0", "node-1", "node-2"]  # spread, and one port per node
    assert "[port 18090 (Bridge mode)]" in refused("-p", "127.0.0.1:18090:80")
    assert "[port 18090 (Bridge mode)]" in refused("-p", "18090:80")  # all interfaces overlap
    # Another host IP is another binding: Swarm only refuses overlapping ones.
    assert run(made, "-p", "127.0.0.2:18090:80") in nodes


def test_health(made: list[str]) -> None:
    """A dead agent's node leaves scheduling; containers go elsewhere until it is back."""
    dc.kill("node-2")
    try:
        dc.wait_unregistered("node-2", timeout=15)
        assert {run(made) for _ in range(4)} <= {"node-0", "node-1"}
        err = refused("-e", "constraint:node==node-2")
        assert COMPOSITE in err and "[node==node-2]" in err
    finally:
        dc.start("node-2")
    assert run(made, "-e", "constraint:node==node-2") == "node-2"


def restart_manager(*flags: str) -> None:
    dc.stop_manager()
    dc.start_manager(flags)


def test_binpack_strategy(made: list[str]) -> None:
    restart_manager("--strategy", "binpack")
    try:
        assert "Strategy: binpack" in docker("info").stdout
        # binpack fills the most used node first: every container joins the first one.
        assert run(made, "-m", "64m", "-e", "constraint:node==node-1") == "node-1"
        assert [run(made, "-m", "64m") for _ in range(4)] == ["node-1"] * 4
        assert run(made, "-e", "constraint:node!=node-1", "-m", "64m") != "node-1"
    finally:
        restart_manager()


def test_random_strategy_and_filter_flag(made: list[str]) -> None:
    restart_manager("--strategy", "random", "--filter", "health", "--filter", "constraint")
    try:
        info = docker("info").stdout
        assert "Strategy: random" in info and "Filters: health, constraint" in info
        placed = [run(made) for _ in range(12)]
        assert set(placed) > {placed[0]}  # all 12 on one node: odds 1 in 177,147
        # Without the port filter a clash is the node's own error, not the scheduler's.
        run(made, "-e", "constraint:node==node-0", "-p", "18091:80")
        made.append("clash")
        res = docker(
            "run", "-d", "--name", "clash", "-e", "constraint:node==node-0", "-p", "18091:80",
            "busybox", "true", check=False,
        )  # fmt: skip
        assert res.returncode != 0 and COMPOSITE not in res.stderr
        assert "port is already allocated" in res.stderr
    finally:
        restart_manager()
    assert "Strategy: spread" in docker("info").stdout
