"""Classic Swarm's own network tests (docker/swarm test/integration/api/network.bats, and the
network cases of api/ps.bats, api/run.bats and compose/up.bats), re-expressed as docker CLI
calls against a 2-node dev cluster. Each test names the bats file and case it stands for;
docs/swarm-compat.md has the whole map.

Swarm's `network create -d bridge NAME` (no node prefix) made a network on one engine; through
flotilla's manager it makes an overlay network spanning every node (the CLI always sends
Driver=bridge; without a node prefix that means the default, overlay). Where a case used a
node-local network only as "some user network" (`node-0/test`), an overlay network stands in;
node-local user networks (`node-0/NAME`) answer 501 for now, so the cases that need them
stay excluded.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import dev_cluster, docker
from tests.manager.swarm_compat import inspect, out, ps_ids, ps_names, reset
from tests.manager.test_compose_e2e import compose

# 2 nodes x (bridge, host, none), plus the header line: Swarm's `[ "${#lines[@]}" -eq 7 ]`.
BUILTIN_LINES = 7

SIMPLE_V2 = """\
version: "2"
services:
  service1:
    image: busybox
    command: sleep 100
    networks:
      - testn
networks:
  testn:
    driver: bridge
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(2) as nodes:
        yield nodes


@pytest.fixture(autouse=True)
def clean(cluster: dict[str, object]) -> Iterator[None]:
    yield
    reset(cluster)
    for net in docker("network", "ls", "--filter", "type=custom", "-q").stdout.split():
        docker("network", "rm", net, check=False)


def ls_lines(*args: str) -> list[str]:
    return out("network", "ls", *args)


def containers_of(network: str) -> dict[str, dict]:
    """`docker network inspect NET`'s `Containers` (Swarm's tests grep for `"Containers": {}`)."""
    return dict(json.loads(docker("network", "inspect", network).stdout)[0]["Containers"])


# --- api/network.bats --------------------------------------------------------------------------


def test_network_ls_filter_type() -> None:
    """network.bats "docker network ls --filter type" (its builtin half is also
    test_networks_e2e::test_ls_filters)."""
    assert len(ls_lines("--filter", "type=builtin")) == BUILTIN_LINES
    assert len(ls_lines("--filter", "type=custom")) == 1
    assert docker("network", "ls", "--filter", "type=foo", check=False).returncode != 0
    docker("network", "create", "-d", "bridge", "test")
    assert len(ls_lines()) == BUILTIN_LINES + 1
    assert len(ls_lines("--filter", "type=custom")) == 2


def test_network_ls_filter_name() -> None:
    """network.bats "docker network ls --filter name"."""
    docker("network", "create", "networknameone")
    docker("network", "create", "networknametwo")
    lines = ls_lines("--filter", "name=networkname")
    assert len(lines) == 3
    assert sorted(line.split()[1] for line in lines[1:]) == ["networknameone", "networknametwo"]


def test_network_create() -> None:
    """network.bats "docker network create": its `test1` half (its `node-1/test2` half needs a
    node-local network: excluded, 501). `node-2/test3` names no node of the cluster."""
    assert len(ls_lines()) == BUILTIN_LINES
    docker("network", "create", "-d", "bridge", "test1")
    assert len(ls_lines()) == BUILTIN_LINES + 1
    assert docker("network", "create", "-d", "bridge", "node-2/test3", check=False).returncode
    assert len(ls_lines()) == BUILTIN_LINES + 1


def test_network_rm() -> None:
    """network.bats "docker network rm", with an overlay `test` in place of `node-0/test`."""
    assert docker("network", "rm", "test_network", check=False).returncode != 0
    assert docker("network", "rm", "bridge", check=False).returncode != 0
    docker("network", "create", "-d", "bridge", "test")
    assert len(ls_lines()) == BUILTIN_LINES + 1
    docker("network", "rm", "test")
    assert len(ls_lines()) == BUILTIN_LINES


def test_network_connect_ip() -> None:
    """network.bats "docker network connect --ip"."""
    docker("network", "create", "-d", "bridge", "--subnet", "10.0.0.0/24", "testn")
    assert containers_of("testn") == {}
    cid = docker("run", "-d", "--name", "test_container", "busybox", "sleep", "100").stdout
    docker("network", "connect", "--ip", "10.0.0.42", "testn", "test_container")
    doc = inspect("test_container")
    assert doc["NetworkSettings"]["Networks"]["testn"]["IPAddress"] == "10.0.0.42"
    assert list(containers_of("testn")) == [cid.strip()]


def test_network_connect_alias() -> None:
    """network.bats "docker network connect --alias"."""
    docker("network", "create", "-d", "bridge", "testn")
    assert containers_of("testn") == {}
    cid = docker("run", "-d", "--name", "test_container", "busybox", "sleep", "100").stdout
    docker("network", "connect", "--alias", "testa", "testn", "test_container")
    doc = inspect("test_container")
    assert "testa" in doc["NetworkSettings"]["Networks"]["testn"]["Aliases"]
    assert list(containers_of("testn")) == [cid.strip()]


# --- api/ps.bats, api/run.bats -----------------------------------------------------------------


def test_ps_filter_network() -> None:
    """ps.bats "docker ps --filter network", with one overlay `test1` on both nodes in place of
    `node-0/test1` and `node-1/test1` (node-local), and an overlay `test2`."""
    assert len(ls_lines()) == BUILTIN_LINES
    docker("network", "create", "-d", "bridge", "test1")
    docker("network", "create", "-d", "bridge", "test2")
    assert len(ls_lines()) == BUILTIN_LINES + 2
    placed = (("c1", "node-0", "test1"), ("c2", "node-1", "test1"), ("c3", "node-1", "test2"))
    for name, node, net in placed:
        docker(
            "run", "--name", name, "-e", f"constraint:node=={node}", "--net", net, "-d",
            "busybox:latest", "sleep", "100",
        )  # fmt: skip
    names = ps_names("--filter", "network=test1")
    assert "node-0/c1" in names and "node-1/c2" in names and "node-1/c3" not in names


def test_run_ip() -> None:
    """run.bats "docker run --ip" (`sh` ends at once: the asked address stays in inspect)."""
    docker("network", "create", "-d", "bridge", "--subnet", "10.0.0.0/24", "testn")
    docker("run", "--name", "testc", "--net", "testn", "-d", "--ip", "10.0.0.42", "busybox", "sh")
    assert "10.0.0.42" in docker("inspect", "testc").stdout


def test_run_network_alias() -> None:
    """run.bats "docker run --network-alias"."""
    docker("network", "create", "-d", "bridge", "testn")
    docker(
        "run", "--name", "testc", "--net", "testn", "-d", "--network-alias=testa", "busybox", "sh"
    )
    assert "testa" in inspect("testc")["NetworkSettings"]["Networks"]["testn"]["Aliases"]


# --- compose/up.bats ---------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_up_bridge_network(tmp_path: Path) -> None:
    """up.bats "docker-compose up - check bridge network" (its simple_v2.yml; project `flt`
    here, so the network is `flt_testn`)."""
    (tmp_path / "docker-compose.yml").write_text(SIMPLE_V2)
    workdir = str(tmp_path)
    try:
        compose(workdir, "up", "-d")
        assert len(ps_ids()) == 1
        assert 'testn"' in docker("inspect", "flt_service1_1").stdout
    finally:
        compose(workdir, "down", "-t", "1", check=False)
