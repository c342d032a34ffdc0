"""Networks end to end: a real 2-node dev cluster driven by the real docker CLI and docker-py.

Every node has its built-in `bridge`, `host` and `none`, shown Swarm style as `node/name`;
overlay networks (the default driver) are stored by the manager and listed once. Node-local
user networks are not served yet and must say so clearly.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from deploy import devcluster as dc
from tests.fixtures import dev_cluster, docker

URL = f"http://{dc.MANAGER_ADDR}"
ALL = [f"node-{i}/{n}" for i in range(2) for n in ("bridge", "host", "none")]


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(2) as nodes:
        yield nodes


def status_of(method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(URL + path, data=body, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def ls(*args: str) -> list[str]:
    return sorted(docker("network", "ls", "--format", "{{.Name}}", *args).stdout.split())


def network(ref: str) -> dict:
    return json.loads(docker("network", "inspect", ref).stdout)[0]


def test_ls_shows_every_nodes_builtin_networks(cluster: dict[str, object]) -> None:
    out = docker("network", "ls").stdout.splitlines()
    assert out[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    rows = sorted((line.split() for line in out[1:]), key=lambda r: r[1])
    assert [r[1] for r in rows] == ALL
    drivers = {"bridge": "bridge", "host": "host", "none": "null"}
    for short_id, name, driver, scope in rows:
        assert re.fullmatch(r"[0-9a-f]{12}", short_id)
        assert (driver, scope) == (drivers[name.split("/")[1]], "local")
    ids = docker("network", "ls", "-q", "--no-trunc").stdout.split()
    assert len(set(ids)) == 6 and all(re.fullmatch(r"[0-9a-f]{64}", i) for i in ids)


def test_ls_filters(cluster: dict[str, object]) -> None:
    assert ls("--filter", "type=builtin") == ALL
    assert ls("--filter", "type=custom") == []
    assert ls("--filter", "node=node-1") == ALL[3:]
    assert ls("--filter", "name=bridge") == ["node-0/bridge", "node-1/bridge"]
    assert ls("--filter", "driver=null") == ["node-0/none", "node-1/none"]
    assert ls("--filter", "node=node-0", "--filter", "driver=host") == ["node-0/host"]
    res = docker("network", "ls", "--filter", "type=overlay", check=False)
    assert res.returncode == 1 and "Invalid filter: 'type'='overlay'" in res.stderr
    # The list form of the filters JSON, as docker-py sends it.
    status, rows = status_of("GET", '/v1.41/networks?filters={"node":["node-1"]}')
    assert status == 200 and sorted(r["Name"] for r in rows) == ALL[3:]
    assert all(r["Containers"] == {} and "Node" not in r for r in rows)


def test_inspect_shows_a_running_bridge_container(cluster: dict[str, object]) -> None:
    cid = docker(
        "run", "-d", "--name", "netweb", "-e", "constraint:node==node-1", "busybox", "sleep", "300"
    ).stdout.strip()
    try:
        settings = json.loads(docker("inspect", "netweb").stdout)[0]["NetworkSettings"]
        doc = network("node-1/bridge")
        assert (doc["Name"], doc["Driver"], doc["Scope"]) == ("bridge", "bridge", "local")
        assert doc["Options"]["com.docker.network.bridge.name"] == "flotilla0"
        assert doc["IPAM"]["Config"] == [{"Subnet": "172.17.0.0/16"}]
        assert doc["Containers"][cid] == {
            "Name": "netweb",
            "EndpointID": settings["EndpointID"],
            "MacAddress": settings["MacAddress"],
            "IPv4Address": f"{settings['IPAddress']}/{settings['IPPrefixLen']}",
            "IPv6Address": "",
        }
        assert network(doc["Id"])["Containers"] == doc["Containers"]
        assert network(doc["Id"][:12])["Id"] == doc["Id"]
        assert cid not in network("node-0/bridge")["Containers"]
        assert network("node-1/host")["Containers"] == {}
        name = docker("network", "inspect", "-f", "{{.Name}} {{.Driver}}", "node-0/none").stdout
        assert name.strip() == "none null"
    finally:
        docker("rm", "-f", "netweb", check=False)


def test_bare_and_unknown_names_are_not_found(cluster: dict[str, object]) -> None:
    res = docker("network", "inspect", "bridge", check=False)
    assert res.returncode == 1
    assert "network bridge is ambiguous (2 matches found based on name)" in res.stderr
    assert status_of("GET", "/v1.41/networks/bridge")[0] == 404
    res = docker("network", "inspect", "nosuchnet", check=False)
    assert res.returncode == 1 and "network nosuchnet not found" in res.stderr
    assert status_of("GET", "/v1.41/networks/nosuchnet") == (
        404,
        {"message": "network nosuchnet not found"},
    )
    # `docker inspect` tries every object type; the network step must 404 too.
    res = docker("inspect", "nosuchnet", check=False)
    assert res.returncode == 1 and "No such object: nosuchnet" in res.stderr


def test_changes_give_clear_errors(cluster: dict[str, object]) -> None:
    res = docker("network", "create", "-d", "bridge", "node-9/x", check=False)
    assert res.returncode == 1
    assert "Unable to find a node that satisfies the following conditions" in res.stderr
    res = docker("network", "create", "bridge", check=False)
    assert res.returncode == 1
    assert "operation is not permitted on predefined bridge network" in res.stderr
    res = docker("network", "rm", "node-0/bridge", check=False)
    assert res.returncode == 1
    assert "bridge is a pre-defined network and cannot be removed" in res.stderr
    assert status_of("DELETE", "/v1.41/networks/node-0/bridge")[0] == 403
    res = docker("network", "rm", "nosuchnet", check=False)
    assert res.returncode == 1 and "network nosuchnet not found" in res.stderr
    assert status_of("DELETE", "/v1.41/networks/nosuchnet") == (
        404,
        {"message": "network nosuchnet not found"},
    )
    docker("run", "-d", "--name", "netbox", "busybox", "sleep", "300")
    try:
        for verb in ("connect", "disconnect"):
            res = docker("network", verb, "node-0/host", "netbox", check=False)
            assert res.returncode == 1
            assert f"cannot {verb} containers to the nodes' built-in networks" in res.stderr
    finally:
        docker("rm", "-f", "netbox", check=False)
    assert docker("network", "prune", "-f").returncode == 0
    assert ls() == ALL


def test_overlay_create_ls_inspect_rm(cluster: dict[str, object]) -> None:
    plain = docker("network", "create", "ovl-a").stdout.strip()
    try:
        assert re.fullmatch(r"[0-9a-f]{64}", plain)
        doc = network("ovl-a")
        assert (doc["Id"], doc["Driver"], doc["Scope"], doc["Containers"]) == (
            plain,
            "overlay",
            "global",
            {},
        )
        [cfg] = doc["IPAM"]["Config"]
        assert cfg["Subnet"].startswith("10.") and cfg["Subnet"].endswith(".0/24")
        assert cfg["Gateway"] == cfg["Subnet"].replace(".0/24", ".1")
        docker(
            "network", "create", "--subnet", "10.91.0.0/16", "--gateway", "10.91.0.254",
            "--ip-range", "10.91.4.0/24", "--label", "team=a", "--internal", "--attachable",
            "--opt", "com.example.mtu=1400", "ovl-b",
        )  # fmt: skip
        doc = network("ovl-b")
        assert doc["IPAM"]["Config"] == [
            {"Subnet": "10.91.0.0/16", "Gateway": "10.91.0.254", "IPRange": "10.91.4.0/24"}
        ]
        assert (doc["Internal"], doc["Attachable"], doc["Labels"], doc["Options"]) == (
            True,
            True,
            {"team": "a"},
            {"com.example.mtu": "1400"},
        )
        assert network(doc["Id"][:12])["Name"] == "ovl-b"
        # Each overlay network once, next to the nodes' built-ins.
        assert ls() == sorted([*ALL, "ovl-a", "ovl-b"])
        assert ls("--filter", "type=custom") == ["ovl-a", "ovl-b"]
        assert ls("--filter", "label=team=a") == ["ovl-b"]
        assert ls("--filter", "driver=overlay", "--filter", "name=ovl-a") == ["ovl-a"]
        assert ls("--filter", "scope=global") == ["ovl-a", "ovl-b"]
        rows = docker("network", "ls", "--filter", "name=ovl-a").stdout.splitlines()[1:]
        assert [r.split()[1:] for r in rows] == [["ovl-a", "overlay", "global"]]
        res = docker("network", "create", "ovl-a", check=False)
        assert res.returncode == 1 and "network with name ovl-a already exists" in res.stderr
        res = docker("network", "create", "--subnet", "10.91.9.0/24", "ovl-c", check=False)
        assert res.returncode == 1
        assert "Pool overlaps with other one on this address space" in res.stderr
        res = docker("network", "create", "--ipv6", "ovl-c", check=False)
        assert res.returncode == 1 and "IPv6 is not supported" in res.stderr
        assert docker("network", "rm", "ovl-a").stdout.strip() == "ovl-a"
        res = docker("network", "inspect", "ovl-a", check=False)
        assert res.returncode == 1 and "network ovl-a not found" in res.stderr
        docker("network", "create", "--label", "keep", "ovl-d")
        out = docker("network", "prune", "-f", "--filter", "label!=keep").stdout
        assert "ovl-b" in out and "ovl-d" not in out
        assert ls("--filter", "type=custom") == ["ovl-d"]
    finally:
        for name in ("ovl-a", "ovl-b", "ovl-d"):
            docker("network", "rm", name, check=False)
    assert ls() == ALL


def test_docker_py(cluster: dict[str, object]) -> None:
    docker_py = pytest.importorskip("docker")
    client = docker_py.DockerClient(base_url=dc.docker_host())
    try:
        assert sorted(n.name for n in client.networks.list()) == ALL
        net = client.networks.get("node-1/host")
        assert (net.name, net.attrs["Driver"]) == ("host", "host")
        with pytest.raises(docker_py.errors.NotFound):
            client.networks.get("nosuchnet")
        net = client.networks.create("pynet", labels={"via": "docker-py"})
        try:
            assert client.networks.get("pynet").attrs["Driver"] == "overlay"
            with pytest.raises(docker_py.errors.APIError) as info:
                client.networks.create("pynet")
            assert info.value.status_code == 409
        finally:
            net.remove()
    finally:
        client.close()


def test_run_on_a_nodes_network(cluster: dict[str, object]) -> None:
    """`--net node-1/bridge` lands on node-1 (Swarm); an unknown network is dockerd's 404."""
    cid = docker("run", "-d", "--net", "node-1/bridge", "busybox", "sleep", "300").stdout.strip()
    try:
        doc = json.loads(docker("inspect", cid).stdout)[0]
        assert doc["Node"]["Name"] == "node-1"
        assert doc["HostConfig"]["NetworkMode"] == "bridge"
        assert doc["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    finally:
        docker("rm", "-f", cid, check=False)
    # Through the API: the CLI takes any 404 from create for a missing image and tries a pull.
    before = docker("ps", "-aq").stdout
    body = json.dumps({"Image": "busybox", "HostConfig": {"NetworkMode": "nosuchnet"}})
    status, doc = status_of("POST", "/v1.41/containers/create", body.encode())
    assert (status, doc) == (404, {"message": "network nosuchnet not found"})
    assert docker("ps", "-aq").stdout == before
