"""docker-compose 1.29 with a plain version-2 file and no network settings, against the manager
on a real 3-node dev cluster: compose's default `<project>_default` network is an overlay
network, services on different nodes reach each other by service name, `up --scale` adds
replicas the service name resolves to, and `down` removes the network."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest

from tests.fixtures import dev_cluster, docker
from tests.manager.test_compose_e2e import compose as compose_in
from tests.manager.test_compose_e2e import inspect

COMPOSE = shutil.which("docker-compose")
PROJECT = "flt"  # compose_in's project name
COMPOSE_FILE = """\
version: "2"
services:
  web:
    image: busybox:latest
    command: ["sh", "-c", "while true; do hostname | nc -l -p 80; done"]
    environment: ["constraint:node==node-1"]
  client:
    image: busybox:latest
    command: ["sleep", "3600"]
    environment: ["constraint:node==node-0"]
"""

pytestmark = pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("compose-overlay")
    (workdir / "docker-compose.yml").write_text(COMPOSE_FILE)
    with dev_cluster(3):
        try:
            yield str(workdir)
        finally:
            compose_in(str(workdir), "down", "-t", "1", check=False)


def client(script: str) -> str:
    res = docker("exec", "flt_client_1", "sh", "-c", script, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_default_network_spans_nodes_and_scales_by_service_name(project: str) -> None:
    compose_in(project, "up", "-d")
    net = json.loads(docker("network", "inspect", "flt_default").stdout)[0]
    assert net["Driver"] == "overlay"
    assert net["Labels"]["com.docker.compose.network"] == "default"
    assert inspect("flt_web_1")["Node"]["Name"] == "node-1"
    assert inspect("flt_client_1")["Node"]["Name"] == "node-0"
    # TCP to the service name (busybox-static's wget crashes here: nc is the client).
    web_host = client("nc -w 5 web 80 </dev/null").strip()
    assert web_host == inspect("flt_web_1")["Config"]["Hostname"]

    compose_in(project, "up", "-d", "--scale", "web=3")
    replicas = {
        inspect(f"flt_web_{i}")["NetworkSettings"]["Networks"]["flt_default"]["IPAddress"]
        for i in (1, 2, 3)
    }
    answer = client("nslookup web 127.0.0.11")
    assert len(replicas) == 3 and all(ip in answer for ip in replicas)

    compose_in(project, "down", "-t", "1")
    listed = docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert "flt_default" not in listed
