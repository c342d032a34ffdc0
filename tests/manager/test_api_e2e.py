"""The manager end to end: a real 3-node dev cluster, driven by the real docker CLI and docker-py.

One cluster serves the module (bringing it up is the slow part); tests run in file order and
each removes the containers it made.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

from deploy import devcluster as dc
from tests.fixtures import DOCKER, dev_cluster, docker

HOST = dc.docker_host()
URL = f"http://{dc.MANAGER_ADDR}"
LABELS = {"node-1": {"region": "eu"}}


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(3, LABELS) as nodes:
        yield nodes


def http(method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(URL + path, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def reserved_memory(node: str) -> str:
    info = docker("info").stdout
    section = info[info.index(f" {node}: ") :].split("└ ServerVersion")[0]
    return section.split("└ Reserved Memory: ")[1].split(" / ")[0]


def inspect(ref: str) -> dict:
    return json.loads(docker("inspect", ref).stdout)[0]


def test_version_and_ping(cluster: dict[str, object]) -> None:
    res = docker("version", "--format", "{{json .}}")
    doc = json.loads(res.stdout)
    assert doc["Server"]["ApiVersion"] == "1.41"
    assert doc["Server"]["Components"][0]["Name"] == "flotilla"
    status, headers, body = http("GET", "/_ping")
    assert (status, body) == (200, b"OK")
    assert headers["Api-Version"] == "1.41" and headers["Ostype"] == "linux"
    assert headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
    status, headers, body = http("HEAD", "/v1.41/_ping")
    assert status == 200 and body == b"" and headers["Docker-Experimental"] == "false"


def test_api_errors(cluster: dict[str, object]) -> None:
    assert http("GET", "/v1.41/nosuchendpoint")[::2] == (404, b'{"message":"page not found"}\n')
    status, _, body = http("GET", "/v1.99/version")
    assert status == 400
    assert json.loads(body) == {
        "message": "client version 1.99 is too new. Maximum supported API version is 1.41"
    }
    status, headers, body = http("GET", "/v1.11/version")
    assert status == 400 and headers["Content-Type"].startswith("text/plain")
    assert body.decode() == (
        "client version 1.11 is too old. Minimum supported API version is 1.12, "
        "please upgrade your client to a newer version\n"
    )
    # Bad input is the client's 400 in dockerd 28's words (20.10 answered these with a 500).
    status, _, body = http("POST", "/v1.41/containers/create", b'{"Image":')
    assert (status, json.loads(body)) == (400, {"message": "invalid JSON: unexpected EOF"})
    status, _, body = http("GET", "/v1.41/containers/json?filters=%7Bbad")
    assert (status, json.loads(body)) == (400, {"message": "invalid filter"})
    status, _, body = http("GET", "/v1.41/services")
    assert status == 501 and "not supported" in json.loads(body)["message"]


def test_info_cluster_view(cluster: dict[str, object]) -> None:
    out = docker("info").stdout
    assert "Role: primary" in out
    assert "Strategy: spread" in out
    assert (
        "Filters: health, port, containerslots, dependency, affinity, constraint, whitelist" in out
    )
    assert "Nodes: 3" in out
    for name in ("node-0", "node-1", "node-2"):
        assert f" {name}: 10.99.0." in out
    assert out.count("└ Status: Healthy") == 3
    assert "└ Containers: 0 (0 Running, 0 Paused, 0 Stopped)" in out
    assert "└ Reserved CPUs: 0 / " in out
    assert "└ Reserved Memory: 0 B / " in out
    assert "region=eu" in out and "storagedriver=overlay2" in out
    assert "└ UpdatedAt: " in out and "└ ServerVersion: " in out
    doc = json.loads(docker("info", "--format", "{{json .}}").stdout)
    records = cluster.values()
    assert doc["NCPU"] == sum(r.ncpu for r in records)
    assert doc["MemTotal"] == sum(r.memory_bytes for r in records)
    assert doc["Images"] == 3  # busybox on every node


def test_container_lifecycle(cluster: dict[str, object]) -> None:
    cid = docker("run", "-d", "--name", "web", "busybox", "sleep", "300").stdout.strip()
    try:
        assert len(cid) == 64
        doc = inspect("web")
        assert doc["Id"] == cid and doc["State"]["Running"]
        node = doc["Node"]
        assert node["Name"].startswith("node-") and node["Addr"] == f"{node['IP']}:4243"
        assert node["Cpus"] >= 1 and node["Memory"] > 0 and "Labels" in node
        full = f"{node['Name']}/web"
        ps = docker("ps", "--format", "{{.ID}} {{.Names}} {{.Status}}").stdout
        assert f"{cid[:12]} {full} Up" in ps
        # Every way to name it.
        for ref in (cid, cid[:10], "/web", full):
            assert inspect(ref)["Id"] == cid
        docker("stop", "-t", "1", "web")
        assert not inspect("web")["State"]["Running"]
        assert docker("ps", "-q").stdout.strip() == ""
        assert cid[:12] in docker("ps", "-aq").stdout
        docker("start", "web")
        assert inspect("web")["State"]["Running"]
        docker("restart", "-t", "1", "web")
        assert inspect("web")["State"]["Running"]
        docker("pause", "web")
        assert inspect("web")["State"]["Status"] == "paused"
        docker("unpause", "web")
        assert inspect("web")["State"]["Status"] == "running"
        docker("rename", "web", "web2")
        assert inspect("web2")["Id"] == cid
        docker("kill", "web2")
        assert inspect("web2")["State"]["Running"] is False
    finally:
        docker("rm", "-f", cid, check=False)
    res = docker("inspect", cid, check=False)
    assert res.returncode != 0


def test_errors_from_cli(cluster: dict[str, object]) -> None:
    cid = docker("create", "--name", "dup", "busybox", "true").stdout.strip()
    try:
        res = docker("create", "--name", "dup", "busybox", "true", check=False)
        assert res.returncode != 0
        assert (
            f'Conflict. The container name "/dup" is already in use by container "{cid}". '
            "You have to remove (or rename) that container to be able to reuse that name."
        ) in res.stderr
    finally:
        docker("rm", "-f", "dup")
    again = docker("create", "--name", "dup", "busybox", "true").stdout.strip()  # name released
    docker("rm", again)
    res = docker("stop", "nosuchcontainer", check=False)
    assert res.returncode != 0
    assert "No such container: nosuchcontainer" in res.stderr
    res = docker("inspect", "nosuchcontainer", check=False)  # every lookup the CLI tries 404s
    assert res.returncode == 1 and "No such object: nosuchcontainer" in res.stderr
    status, _, body = http("DELETE", "/v1.41/containers/nosuchcontainer")
    assert (status, json.loads(body)) == (404, {"message": "No such container: nosuchcontainer"})


def test_wait_exit_code(cluster: dict[str, object]) -> None:
    cid = docker("run", "-d", "busybox", "sh", "-c", "exit 7").stdout.strip()
    try:
        assert docker("wait", cid).stdout.strip() == "7"
        exited = docker("ps", "-a", "--filter", "exited=7", "-q", "--no-trunc").stdout.split()
        assert cid in exited
    finally:
        docker("rm", "-f", cid)


def test_constraint_and_ps_filters(cluster: dict[str, object]) -> None:
    pytest.importorskip("manager.scheduler", reason="scheduler not available")
    ids = []
    try:
        for i in range(3):
            ids.append(
                docker(
                    "run",
                    "-d",
                    "-e",
                    "constraint:node==node-1",
                    "--name",
                    f"c{i}",
                    "--label",
                    f"n={i}",
                    "busybox",
                    "sleep",
                    "300",
                ).stdout.strip()
            )
        for cid in ids:
            doc = inspect(cid)
            assert doc["Node"]["Name"] == "node-1"
            assert "constraint:node==node-1" not in (doc["Config"]["Env"] or [])
        on_node1 = docker("ps", "-q", "--no-trunc", "--filter", "node=node-1").stdout.split()
        assert sorted(on_node1) == sorted(ids)
        assert docker("ps", "-q", "--filter", "node=node-2").stdout.strip() == ""
        assert docker("ps", "-q", "--no-trunc", "--filter", "label=n=1").stdout.split() == [ids[1]]
        assert docker("ps", "-q", "--no-trunc", "--filter", "name=c2").stdout.split() == [ids[2]]
        assert docker("ps", "-q", "--no-trunc", "-l").stdout.split() == [ids[2]]
        assert docker("ps", "-q", "--no-trunc", "-n", "2").stdout.split() == [ids[2], ids[1]]
        since = docker("ps", "-q", "--no-trunc", "--filter", "since=c0").stdout.split()
        assert sorted(since) == sorted(ids[1:])
        anc = docker("ps", "-q", "--no-trunc", "--filter", "ancestor=busybox").stdout.split()
        assert sorted(anc) == sorted(ids)
        running = docker("ps", "-q", "--no-trunc", "--filter", "status=running").stdout.split()
        assert sorted(running) == sorted(ids)
        bad = docker("ps", "--filter", "status=sleepy", check=False)
        assert "Invalid filter 'status=sleepy'" in bad.stderr
        bridged = docker("ps", "-q", "--no-trunc", "--filter", "network=bridge").stdout.split()
        assert sorted(bridged) == sorted(ids)
        sized = docker("ps", "-s", "--format", "{{.Names}}").stdout.split()
        assert sorted(sized) == ["node-1/c0", "node-1/c1", "node-1/c2"]
        ids.append(
            docker(
                "run", "-d", "-m", "64m", "--name", "mem", "busybox", "sleep", "300"
            ).stdout.strip()
        )
        mem_node = inspect("mem")["Node"]["Name"]
        assert reserved_memory(mem_node) == "64 MiB"
        ids.append(
            docker(
                "run", "-d", "-p", "18080:80", "--name", "p0", "busybox", "sleep", "300"
            ).stdout.strip()
        )
        ids.append(
            docker(
                "run", "-d", "-p", "18080:80", "--name", "p1", "busybox", "sleep", "300"
            ).stdout.strip()
        )
        ids.append(
            docker(
                "run", "-d", "-p", "18080:80", "--name", "p2", "busybox", "sleep", "300"
            ).stdout.strip()
        )
        assert len({inspect(f"p{i}")["Node"]["Name"] for i in range(3)}) == 3
        res = docker("run", "-d", "-p", "18080:80", "busybox", "true", check=False)
        assert res.returncode != 0
        assert "Unable to find a node that satisfies the following conditions" in res.stderr
        assert "[port 18080 (Bridge mode)]" in res.stderr
        res = docker("run", "-d", "-e", "constraint:node==nosuch", "busybox", "true", check=False)
        assert res.returncode != 0
        assert "Unable to find a node that satisfies the following conditions" in res.stderr
    finally:
        for cid in ids:
            docker("rm", "-f", cid, check=False)


def test_manager_restart_keeps_view(cluster: dict[str, object]) -> None:
    cid = docker("run", "-d", "-m", "32m", "--name", "keep", "busybox", "sleep", "300").stdout
    cid = cid.strip()
    try:
        node = inspect("keep")["Node"]["Name"]
        dc.stop_manager()
        assert not dc.manager_healthy()
        dc.start_manager()
        assert f"{node}/keep" in docker("ps", "--format", "{{.Names}}").stdout
        res = docker("create", "--name", "keep", "busybox", "true", check=False)
        assert f'is already in use by container "{cid}"' in res.stderr
        assert reserved_memory(node) == "32 MiB"  # reservations come back from etcd
        docker("stop", "-t", "1", "keep")
        assert docker("wait", "keep").stdout.strip() in ("137", "143")
    finally:
        docker("rm", "-f", cid, check=False)


def test_reservations_of_containers_made_on_the_node(cluster: dict[str, object]) -> None:
    """A container created on an agent directly (not through this manager) and `docker update`
    both count in the node's reservations: the status record carries the HostConfig."""
    import asyncio

    from proto import agent_pb2 as pb
    from proto.rpc import agent_client

    body = {"Image": "busybox", "Cmd": ["sleep", "300"], "HostConfig": {"Memory": 96 << 20}}

    async def create() -> str:
        stub = agent_client(f"{dc.node_ip(2)}:4243", dc.dev_tls())
        try:
            req = pb.ContainerCreateRequest(json=json.dumps(body).encode(), name="direct")
            return (await stub.ContainerCreate(req, timeout=30)).id
        finally:
            await stub.channel.close()  # type: ignore[attr-defined]

    cid = asyncio.run(create())
    try:
        deadline = time.monotonic() + 10
        while reserved_memory("node-2") != "96 MiB":
            assert time.monotonic() < deadline, docker("info").stdout
            time.sleep(0.2)
        docker("update", "-m", "48m", "--memory-swap", "96m", "direct")
        while reserved_memory("node-2") != "48 MiB":
            assert time.monotonic() < deadline + 10, docker("info").stdout
            time.sleep(0.2)
    finally:
        docker("rm", "-f", cid, check=False)


def test_docker_py(cluster: dict[str, object]) -> None:
    docker_sdk = pytest.importorskip("docker")
    client = docker_sdk.DockerClient(base_url=HOST)  # docker-py 7: no version = negotiate
    try:
        assert client.ping() is True
        assert client.version()["ApiVersion"] == "1.41"
        container = client.containers.run("busybox", ["sleep", "300"], detach=True, name="py")
        try:
            listed = client.containers.list(filters={"name": "py"})
            assert [c.id for c in listed] == [container.id]
            assert listed[0].name == "py"  # docker-py re-reads each container with inspect
            rows = client.api.containers(filters={"name": "py"})
            node = container.attrs["Node"]["Name"]
            assert rows[0]["Names"] == [f"/{node}/py"]
            container.stop(timeout=1)
            assert container.wait()["StatusCode"] in (137, 143)
        finally:
            container.remove(force=True)
    finally:
        client.close()


async def test_manager_on_unix_socket_without_nodes(
    etcd: object,
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`run_manager` in-process on a unix socket, against an empty etcd: an empty cluster.
    The garbage collector is paused while it reads the cluster, and on again once it serves."""
    import argparse
    import asyncio
    import gc

    from manager.cluster import Cluster
    from manager.main import add_manage_arguments, config_from_args, run_manager

    collector_during_start: list[bool] = []
    start = Cluster.start

    async def recording_start(self: Cluster) -> None:
        collector_during_start.append(gc.isenabled())
        await start(self)

    monkeypatch.setattr(Cluster, "start", recording_start)

    sock = f"{tmp_path}/flotilla.sock"
    parser = argparse.ArgumentParser()
    add_manage_arguments(parser)
    args = parser.parse_args([f"etcd://{etcd.endpoint}/e2e", "-H", f"unix://{sock}"])
    config = config_from_args(args)
    assert config.prefix == "/e2e" and config.strategy == "spread"
    for bad in (["-H", "http://x"], ["--strategy", "nope"], ["--tlscert", "c"]):
        with pytest.raises((ValueError, SystemExit)):
            config_from_args(parser.parse_args(bad))
    stop = asyncio.Event()
    task = asyncio.create_task(run_manager(config, stop))
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            await asyncio.sleep(0.05)
        env = dict(os.environ, DOCKER_HOST=f"unix://{sock}")
        res = await asyncio.to_thread(
            subprocess.run, [DOCKER, "info"], capture_output=True, text=True, env=env, timeout=30
        )
        assert res.returncode == 0, res.stderr
        assert "Nodes: 0" in res.stdout
        assert collector_during_start == [False] and gc.isenabled()
        res = await asyncio.to_thread(
            subprocess.run,
            [DOCKER, "run", "-d", "busybox", "true"],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        assert res.returncode != 0 and "No nodes available in the cluster" in res.stderr
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
