"""Classic Swarm behaviours through the real docker CLI on a real 3-node dev cluster: the
`com.docker.swarm.id` label as a container reference, published ports reported with the node's
address (and reachable there), implicit image affinity, host-mode containers in the port
filter, and volumes placed by whitelists/constraints.

One cluster serves the module; each test removes what it made, even when it fails.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.fixtures import dev_cluster, docker

COMPOSITE = "Unable to find a node that satisfies the following conditions"
SWARM_ID = "com.docker.swarm.id"
DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(3) as nodes:
        yield nodes


@pytest.fixture
def made(cluster: dict[str, object]) -> Iterator[list[str]]:
    """References of the containers a test made; all removed afterwards."""
    refs: list[str] = []
    try:
        yield refs
    finally:
        for ref in refs:
            docker("rm", "-f", ref, check=False)


def inspect(ref: str) -> dict[str, object]:
    return json.loads(docker("inspect", ref).stdout)[0]


def node_of(ref: str) -> str:
    return str(inspect(ref)["Node"]["Name"])  # type: ignore[index]


def swarm_id(ref: str) -> str:
    return str(inspect(ref)["Config"]["Labels"][SWARM_ID])  # type: ignore[index]


def run(made: list[str], *args: str) -> str:
    cid = docker("run", "-d", *args).stdout.strip()
    made.append(cid)
    return cid


# ----------------------------------------------------------------- com.docker.swarm.id


def test_swarm_id_label_is_a_reference(made: list[str]) -> None:
    cid = run(made, "busybox", "sh", "-c", "echo hello-from-sid; sleep 300")
    other = run(made, "busybox", "sleep", "300")
    sid = swarm_id(cid)
    assert re.fullmatch(r"[0-9a-f]{64}", sid), sid
    assert sid != cid  # Swarm's own random ID, not the engine's
    assert swarm_id(other) != sid

    assert inspect(sid)["Id"] == cid
    assert inspect(sid[:12])["Id"] == cid  # Swarm also takes the truncated form
    deadline = time.monotonic() + DEADLINE_S
    while "hello-from-sid" not in docker("logs", sid).stdout:
        assert time.monotonic() < deadline, docker("logs", sid).stdout
        time.sleep(0.2)
    assert docker("exec", sid, "echo", "exec-ok").stdout.strip() == "exec-ok"
    docker("exec", sid, "sh", "-c", "echo copied > /tmp/in-container")
    assert "in-container" in docker("cp", f"{sid}:/tmp/in-container", "-").stdout
    docker("stop", "-t", "1", sid)
    assert inspect(cid)["State"]["Running"] is False  # type: ignore[index]
    docker("start", sid)
    assert inspect(cid)["State"]["Running"] is True  # type: ignore[index]
    found = docker("ps", "-q", "--no-trunc", "--filter", f"label={SWARM_ID}={sid}").stdout
    assert found.split() == [cid]

    # Attach by the Swarm ID: `docker start -a` attaches, then starts.
    once = docker("create", "busybox", "echo", "attached-out").stdout.strip()
    made.append(once)
    out = docker("start", "-a", swarm_id(once))
    assert out.stdout.strip() == "attached-out"

    docker("rm", "-f", sid)
    gone = docker("inspect", cid, check=False)
    assert gone.returncode == 1 and "No such" in gone.stderr


def test_swarm_id_names_dependencies(made: list[str]) -> None:
    """`--link`, `--volumes-from` and `--net container:` take the Swarm ID too: the container
    lands on its node and the node is given the container's ID."""
    cid = run(made, "-v", "/data", "busybox", "sleep", "300")
    sid = swarm_id(cid)
    home = node_of(cid)
    for args in (
        ["--link", f"{sid}:peer"],
        ["--volumes-from", f"{sid}:ro"],
        ["--net", f"container:{sid[:12]}"],
    ):
        dep = run(made, *args, "busybox", "sleep", "300")
        assert node_of(dep) == home, args
        assert inspect(dep)["State"]["Running"] is True, args  # type: ignore[index]


def test_swarm_id_from_the_client_is_kept(made: list[str]) -> None:
    mine = "ab" * 32
    cid = run(made, "--label", f"{SWARM_ID}={mine}", "busybox", "sleep", "300")
    assert swarm_id(cid) == mine
    assert inspect(mine)["Id"] == cid
    found = docker("ps", "-q", "--no-trunc", "--filter", f"label={SWARM_ID}={mine}").stdout
    assert found.split() == [cid]


# ----------------------------------------------------------------- published ports


def fetch(ip: str, port: str) -> str:
    """What the container's httpd answers at ip:port, polled until it listens."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            with urllib.request.urlopen(f"http://{ip}:{port}/", timeout=5) as reply:
                return reply.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


HTTPD = [
    "busybox",
    "sh",
    "-c",
    "mkdir -p /www && echo hi > /www/index.html && httpd -f -p 80 -h /www",
]


def test_published_ports_carry_the_node_address(made: list[str]) -> None:
    cid = run(made, "-p", "18080:80", *HTTPD)
    view = inspect(cid)
    node_ip = str(view["Node"]["IP"])  # type: ignore[index]
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", node_ip) and node_ip != "0.0.0.0"

    bindings = view["NetworkSettings"]["Ports"]["80/tcp"]  # type: ignore[index]
    assert bindings == [{"HostIp": node_ip, "HostPort": "18080"}]
    ports = docker("ps", "--filter", f"id={cid}", "--format", "{{.Ports}}").stdout.strip()
    assert ports == f"{node_ip}:18080->80/tcp"
    assert docker("port", cid, "80").stdout.split() == [f"{node_ip}:18080"]
    # A client connects to what it read.
    ip, _, port = docker("port", cid, "80").stdout.split()[0].rpartition(":")
    assert fetch(ip, port) == "hi\n"

    # A port the node picked: also reported (and reachable) at the node's address.
    auto = run(made, "-p", "80", *HTTPD)
    ip, _, port = docker("port", auto, "80/tcp").stdout.split()[0].rpartition(":")
    assert ip == inspect(auto)["Node"]["IP"]  # type: ignore[index]
    assert int(port) > 0
    assert fetch(ip, port) == "hi\n"


# ----------------------------------------------------------------- implicit image affinity


def test_image_on_some_nodes_runs_where_it_is(made: list[str]) -> None:
    base = run(made, "busybox", "sleep", "300")
    home = node_of(base)
    docker("commit", base, "flt-only-here:v1")
    try:
        image_id = json.loads(docker("image", "inspect", "flt-only-here:v1").stdout)[0]["Id"]
        # Spread would use the other nodes first; the image draws every run to its node.
        for _ in range(4):
            cid = run(made, "flt-only-here:v1", "sleep", "300")
            assert node_of(cid) == home
        short = image_id.removeprefix("sha256:")[:12]
        assert node_of(run(made, short, "sleep", "300")) == home
        # The affinity is for scheduling only: it is not stored with the container.
        labels = inspect(made[-1])["Config"]["Labels"] or {}  # type: ignore[index]
        assert "com.docker.swarm.affinities" not in labels
    finally:
        for cid in made[1:]:
            docker("rm", "-f", cid, check=False)
        docker("rmi", "-f", "flt-only-here:v1", check=False)


def test_image_missing_everywhere_keeps_its_error(made: list[str]) -> None:
    before = docker("ps", "-aq").stdout
    res = docker("run", "-d", "flt-nowhere.invalid/img:v1", "true", check=False)
    assert res.returncode == 125, res.stdout + res.stderr
    assert "Unable to find image 'flt-nowhere.invalid/img:v1' locally" in res.stderr
    assert 'Get "https://flt-nowhere.invalid/v2/": dial tcp: lookup' in res.stderr
    assert docker("ps", "-aq").stdout == before


# ----------------------------------------------------------------- --net host in the port filter


def test_host_mode_exposed_ports_are_taken(made: list[str]) -> None:
    # One idle container on node-1 and node-2: the first host-mode one goes to node-0, and
    # spread alone would then send the second there too (every node holds one container).
    for node in ("node-1", "node-2"):
        run(made, "-e", f"constraint:node=={node}", "busybox", "sleep", "300")
    host = ["--net", "host", "--expose", "7777", "busybox", "sleep", "300"]
    first = node_of(run(made, *host))
    assert first == "node-0"
    second = node_of(run(made, *host))
    assert second != first
    third = node_of(run(made, *host))
    assert {first, second, third} == {"node-0", "node-1", "node-2"}
    before = docker("ps", "-aq").stdout
    res = docker("run", "-d", "--net", "host", "--expose", "7777", "busybox", "true", check=False)
    assert res.returncode == 125, res.stdout + res.stderr
    assert f"{COMPOSITE} \n[port 7777/tcp (Host mode)]" in res.stderr
    assert docker("ps", "-aq").stdout == before
    # Another protocol on the same port number is free.
    run(made, "--net", "host", "--expose", "7777/udp", "busybox", "sleep", "300")


# ----------------------------------------------------------------- volumes placed by labels


@pytest.fixture
def volumes(cluster: dict[str, object]) -> Iterator[list[str]]:
    names: list[str] = []
    try:
        yield names
    finally:
        for name in names:
            docker("volume", "rm", "-f", name, check=False)


def volume_nodes(name: str) -> set[str]:
    rows = docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
    return {row.partition("/")[0] for row in rows if row.partition("/")[2] == name}


def create_volume(volumes: list[str], name: str, *args: str) -> None:
    volumes.append(name)
    assert docker("volume", "create", *args, name).stdout.strip() == name


def test_volume_create_honours_whitelists_and_constraints(volumes: list[str]) -> None:
    create_volume(volumes, "flt-wl", "--label", 'com.docker.swarm.whitelists=["node==node-1"]')
    assert volume_nodes("flt-wl") == {"node-1"}
    both = 'com.docker.swarm.whitelists=["node==node-0|node-2"]'
    create_volume(volumes, "flt-wl2", "--label", both)
    assert volume_nodes("flt-wl2") == {"node-0", "node-2"}
    constraint = 'com.docker.swarm.constraints=["node!=node-1"]'
    create_volume(volumes, "flt-cs", "--label", constraint)
    assert volume_nodes("flt-cs") == {"node-0", "node-2"}
    create_volume(volumes, "flt-all")
    assert volume_nodes("flt-all") == {"node-0", "node-1", "node-2"}
    # The labels stay on the volume, as the engine was given them.
    labels = json.loads(docker("volume", "inspect", "node-1/flt-wl").stdout)[0]["Labels"]
    assert labels["com.docker.swarm.whitelists"] == '["node==node-1"]'

    volumes.append("flt-none")
    res = docker(
        "volume",
        "create",
        "--label",
        'com.docker.swarm.whitelists=["node==nosuch"]',
        "flt-none",
        check=False,
    )
    assert res.returncode == 1
    assert COMPOSITE in res.stderr and "[node==nosuch (soft=false)]" in res.stderr
    assert volume_nodes("flt-none") == set()

    volumes.append("flt-bad-node")
    res = docker("volume", "create", "nosuch/flt-bad-node", check=False)
    assert res.returncode == 1 and "[node==nosuch]" in res.stderr
    assert volume_nodes("flt-bad-node") == set()
