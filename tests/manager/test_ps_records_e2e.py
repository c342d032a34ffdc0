"""`docker ps` from the status records, through the whole stack: the real docker CLI against
a dev cluster. What a lifecycle call did is listed as soon as the call returns (the agent
answers once its record is written), a health change shows once the record follows it, and
no agent serves a ContainerList meanwhile (their own operation counters say so)."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator

import pytest

from deploy import dev_layout
from tests.fixtures import dev_cluster, docker
from tests.manager.swarm_compat import reset, wait_for

NODES = 2
DEADLINE_S = 60
LIST_CALLS = re.compile(r"^flotilla_operations_total\{[^}]*ContainerList[^}]*\} (\S+)$", re.M)


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(NODES) as nodes:
        yield nodes


@pytest.fixture(autouse=True)
def clean(cluster: dict[str, object]) -> Iterator[None]:
    yield
    reset(cluster)


def calls(op: str) -> float:
    """The `op` calls the agents have served, from their /metrics."""
    pattern = re.compile(rf'^flotilla_operations_total\{{[^}}]*"{op}"[^}}]*\}} (\S+)$', re.M)
    total = 0.0
    for i in range(NODES):
        url = f"http://{dev_layout.node_ip(i)}:{dev_layout.METRICS_PORT}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            total += sum(float(v) for v in pattern.findall(resp.read().decode()))
    return total


def rows(*args: str) -> dict[str, str]:
    """`docker ps ARGS`: name (without its node) -> Status."""
    out = docker("ps", *args, "--format", "{{.Names}}\t{{.Status}}").stdout
    return {line.split("\t")[0].split("/", 1)[1]: line.split("\t")[1] for line in out.splitlines()}


def test_ps_follows_each_change_without_asking_nodes() -> None:
    before, creates = calls("ContainerList"), calls("ContainerCreate")
    docker("run", "-d", "--name", "ps-a", "busybox", "sleep", "300")
    assert rows()["ps-a"].startswith("Up ")  # listed as soon as `run` returned
    docker(
        "create",
        "--name",
        "ps-b",
        "--health-cmd",
        "true",
        "--health-interval",
        "200ms",
        "busybox",
        "sleep",
        "300",
    )
    assert rows("-a")["ps-b"] == "Created" and "ps-b" not in rows()
    docker("rename", "ps-a", "ps-c")
    listed = rows()
    assert "ps-a" not in listed and listed["ps-c"].startswith("Up ")
    docker("stop", "-t", "0", "ps-c")
    assert "ps-c" not in rows()
    assert re.fullmatch(r"Exited \(137\) .* ago", rows("-a")["ps-c"]), rows("-a")
    assert docker("ps", "-aq", "--filter", "exited=137").stdout.split() != []
    docker("start", "ps-b")
    assert rows()["ps-b"].startswith("Up ")
    wait_for(lambda: rows()["ps-b"].endswith(" (healthy)"), DEADLINE_S, "(healthy) in ps")
    assert list(rows("--filter", "health=healthy")) == ["ps-b"]
    docker("pause", "ps-b")
    assert rows()["ps-b"].endswith(" (Paused)")
    docker("unpause", "ps-b")
    docker("rm", "-f", "ps-b")
    assert "ps-b" not in rows("-a")
    assert calls("ContainerCreate") == creates + 2  # the counters are read right
    assert calls("ContainerList") == before  # the listings above asked no agent
