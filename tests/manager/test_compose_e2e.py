"""docker-compose 1.29 (Debian's package) against the manager on a real 3-node dev cluster:
up with placement hints and published ports, ps, logs, exec, scale, stop/start, down.

Services use `network_mode: bridge`: user-defined networks come with overlay networking.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

from deploy import devcluster as dc
from tests.fixtures import dev_cluster, docker

COMPOSE = shutil.which("docker-compose")
PROJECT = "flt"
COMPOSE_FILE = """\
version: "3.8"
services:
  web:
    image: busybox:latest
    network_mode: bridge
    command:
      - sh
      - -c
      - mkdir -p /www && echo hello-compose > /www/index.html && exec httpd -f -p 8080 -h /www
    ports: ["18081:8080"]
    environment: ["constraint:node==node-1"]
    labels: {role: web}
  worker:
    image: busybox:latest
    network_mode: bridge
    command: ["sh", "-c", "echo worker up as $$ROLE; exec sleep 3600"]
    depends_on: [web]
    environment: {ROLE: worker}
    mem_limit: 32m
"""

pytestmark = pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("compose")
    (workdir / "docker-compose.yml").write_text(COMPOSE_FILE)
    with dev_cluster(3):
        try:
            yield str(workdir)
        finally:
            compose(str(workdir), "down", "-t", "1", check=False)


def compose(workdir: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DOCKER_HOST=dc.docker_host(), COMPOSE_INTERACTIVE_NO_CLI="1")
    res = subprocess.run(
        [str(COMPOSE), "-p", PROJECT, "--no-ansi", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    if check and res.returncode != 0:
        raise AssertionError(f"docker-compose {' '.join(args)}: rc={res.returncode}\n{res.stderr}")
    return res


def inspect(ref: str) -> dict:
    return json.loads(docker("inspect", ref).stdout)[0]


def fetch(url: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_up_ps_logs(project: str) -> None:
    res = compose(project, "up", "-d")
    assert "Creating flt_web_1" in res.stderr and "Creating flt_worker_1" in res.stderr
    web = inspect("flt_web_1")
    assert web["Node"]["Name"] == "node-1"  # the compose environment's constraint
    assert web["Config"]["Labels"]["com.docker.swarm.constraints"] == '["node==node-1"]'
    assert web["Config"]["Labels"]["com.docker.compose.service"] == "web"
    worker = inspect("flt_worker_1")
    assert worker["HostConfig"]["Memory"] == 32 * 1024 * 1024
    # The published port answers on node-1's address.
    assert fetch(f"http://{dc.node_ip(1)}:18081/") == "hello-compose\n"

    ps = compose(project, "ps").stdout
    assert "flt_web_1" in ps and "flt_worker_1" in ps and "Up" in ps
    assert "18081->8080/tcp" in ps
    assert sorted(compose(project, "ps", "-q").stdout.split()) == sorted([web["Id"], worker["Id"]])
    deadline = time.monotonic() + 10
    while "worker up as worker" not in (logs := compose(project, "logs", "worker").stdout):
        assert time.monotonic() < deadline, logs
        time.sleep(0.2)
    assert "worker_1" in logs


def test_exec_scale_stop_start(project: str) -> None:
    res = compose(project, "exec", "-T", "worker", "sh", "-c", "echo $ROLE; exit 3", check=False)
    assert (res.returncode, res.stdout) == (3, "worker\n")

    compose(project, "up", "-d", "--scale", "worker=3")
    names = docker("ps", "--filter", "label=com.docker.compose.project=flt",
                   "--format", "{{.Names}}").stdout.split()  # fmt: skip
    assert len(names) == 4
    per_node = [sum(n.startswith(f"{dc.node_name(i)}/") for n in names) for i in range(3)]
    assert sorted(per_node) == [1, 1, 2]  # spread: the fewest containers first

    compose(project, "stop", "-t", "1")
    states = docker("ps", "-a", "--filter", "label=com.docker.compose.project=flt",
                    "--format", "{{.State}}").stdout.split()  # fmt: skip
    assert states == ["exited"] * 4
    compose(project, "start")
    assert inspect("flt_web_1")["State"]["Running"]


def test_down_removes_everything(project: str) -> None:
    res = compose(project, "down", "-t", "1")
    assert "Removing flt_web_1" in res.stderr
    left = docker("ps", "-aq", "--filter", "label=com.docker.compose.project=flt").stdout
    assert left.strip() == ""
