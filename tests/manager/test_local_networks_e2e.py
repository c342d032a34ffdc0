"""Node-local networks (classic Swarm's `node/NAME`) end to end: a real dev cluster driven by the
real docker CLI through the manager. `docker network create node-1/loc` makes a network on
node-1 only (a bridge, no vxlan device), listed as `node-1/loc`; `docker run --net node-1/loc`
lands on node-1, where its containers reach each other by name; the name is taken on that node;
`docker network rm` takes it away with its bridge."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.fixtures import dev_cluster, docker
from tests.manager.swarm_compat import inspect, node_of, reset

# A TCP server: every connection to 8080 gets one line (busybox's wget crashes here: nc).
SERVE = "while true; do echo hello-from-$(hostname) | nc -l -p 8080; done"


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(2) as nodes:
        yield nodes


@pytest.fixture
def clean(cluster: dict[str, object]) -> Iterator[None]:
    yield
    reset(cluster)
    for net in docker("network", "ls", "--filter", "type=custom", "-q").stdout.split():
        docker("network", "rm", net, check=False)


def user_links(node: str) -> list[str]:
    out = subprocess.run(
        ["ip", "netns", "exec", node, "ip", "-j", "link", "show"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [link["ifname"] for link in json.loads(out) if link["ifname"].startswith("fl-")]


def test_network_on_one_node_by_name_and_rm(clean: None) -> None:
    net_id = docker("network", "create", "-d", "bridge", "node-1/loc").stdout.strip()
    rows = docker(
        "network", "ls", "--filter", "type=custom", "--format", "{{.Name}} {{.Driver}} {{.Scope}}"
    )
    assert rows.stdout.split("\n")[0] == "node-1/loc bridge local"
    doc = json.loads(docker("network", "inspect", "node-1/loc").stdout)[0]
    assert (doc["Name"], doc["Id"], doc["Scope"]) == ("loc", net_id, "local")

    # The name is taken on node-1 (dockerd's 409), free on node-0.
    res = docker("network", "create", "node-1/loc", check=False)
    assert res.returncode == 1
    assert "network with name loc already exists" in res.stderr
    docker("network", "create", "node-0/loc")
    docker("network", "rm", "node-0/loc")

    # No placement hint: the network's node is where the containers go.
    docker("run", "-d", "--name", "db", "--net", "node-1/loc", "busybox", "sh", "-c", SERVE)
    docker("run", "-d", "--name", "app", "--net", "node-1/loc", "busybox", "sleep", "3600")
    assert node_of("db") == "node-1" and node_of("app") == "node-1"
    assert inspect("app")["HostConfig"]["NetworkMode"] == "loc"
    assert docker("exec", "app", "ping", "-c1", "-W2", "db", check=False).returncode == 0
    got = docker("exec", "app", "sh", "-c", "nc db 8080 </dev/null", check=False)
    assert got.stdout.strip().startswith("hello-from-"), got

    # A bridge and no vxlan device on node-1; nothing on node-0.
    links = user_links("node-1")
    bridges = [n for n in links if n.startswith("fl-br-")]
    assert len(bridges) == 1 and not [n for n in links if n.startswith("fl-vx-")], links
    assert user_links("node-0") == []

    # A container that must go elsewhere is refused before anything is made.
    res = docker(
        "run", "-d", "--name", "away", "-e", "constraint:node==node-0", "--net", "node-1/loc",
        "busybox", "sleep", "3600", check=False,
    )  # fmt: skip
    assert res.returncode != 0 and "network node-1/loc is local to node node-1" in res.stderr
    assert docker("ps", "-aq", "--filter", "name=away").stdout.strip() == ""

    res = docker("network", "rm", "node-1/loc", check=False)
    assert res.returncode == 1 and "has active endpoints" in res.stderr
    docker("rm", "-f", "db", "app")
    docker("network", "rm", "node-1/loc")
    assert user_links("node-1") == []
    assert docker("network", "ls", "--filter", "type=custom", "-q").stdout.strip() == ""


def test_scope_local_bridge_lands_on_the_node_the_scheduler_picks(clean: None) -> None:
    # The CLI sends `bridge` for a plain `network create` too (an overlay through the manager):
    # `--scope local` is what asks for one node's bridge, as Swarm's `-d bridge NAME` gave.
    docker("network", "create", "-d", "bridge", "--scope", "local", "loc")
    row = docker("network", "ls", "--filter", "type=custom", "--format", "{{.Name}} {{.Scope}}")
    shown, scope = row.stdout.strip().split()
    node, _, name = shown.partition("/")
    assert (name, scope) == ("loc", "local") and node in ("node-0", "node-1"), row.stdout
    docker("run", "-d", "--name", "here", "--net", "loc", "busybox", "sleep", "3600")
    assert node_of("here") == node
    assert [n for n in user_links(node) if n.startswith("fl-vx-")] == []
    other = "node-1" if node == "node-0" else "node-0"
    assert user_links(other) == []
    docker("rm", "-f", "here")
    docker("network", "rm", "loc")
    assert user_links(node) == []
