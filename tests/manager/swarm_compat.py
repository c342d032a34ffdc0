"""Helpers for the ports of classic Swarm's own integration tests (docker/swarm,
test/integration/*.bats) in tests/manager/test_swarm_*_e2e.py; docs/swarm-compat.md maps every
bats case to its test here (or says why it does not apply).

Swarm's helpers start N dockerd engines (`start_docker_with_busybox N`, named node-0 … node-N-1)
and a manager in front of them; here that is the dev cluster (`dev_cluster(N, labels)`), whose
nodes are also named node-0 …, all with busybox. What Swarm's tests do on one engine directly
(`docker -H ${HOSTS[i]} …`) is done through the manager pinned to that node
(`-e constraint:node==node-i`), and what they read from one engine is read with
`--filter node=node-i`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from deploy import devcluster as dc
from tests.fixtures import docker

COMPOSITE = "Unable to find a node that satisfies the following conditions"


def out(*args: str) -> list[str]:
    """The lines a docker command printed on stdout (it must succeed)."""
    return docker(*args).stdout.splitlines()


def ps_ids(*args: str) -> list[str]:
    """`docker ps -q --no-trunc ARGS`: full container IDs, newest first."""
    return docker("ps", "-q", "--no-trunc", *args).stdout.split()


def ps_names(*args: str) -> list[str]:
    """`docker ps ARGS` names as Swarm shows them (`node-i/name`), newest first."""
    return docker("ps", "--format", "{{.Names}}", *args).stdout.split()


def inspect(ref: str) -> dict:
    return json.loads(docker("inspect", ref).stdout)[0]


def node_of(ref: str) -> str:
    return str(inspect(ref)["Node"]["Name"])


def state_is(name: str, status: str) -> bool:
    """Swarm's `[ -n $(docker ps -q --filter=name=N --filter=status=S) ]`."""
    return bool(ps_ids("-a", "--filter", f"name={name}", "--filter", f"status={status}"))


def image_refs(*args: str) -> list[str]:
    """`docker images ARGS` as `repo:tag` lines, in the order the CLI printed them."""
    return out("images", "--format", "{{.Repository}}:{{.Tag}}", *args)


def wait_for(check: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not met within {timeout:.0f}s"
        time.sleep(0.2)


def healthy_nodes() -> set[str]:
    """The nodes `docker info` shows as Healthy (none when the manager does not answer)."""
    info = docker("info", "--format", "{{json .SystemStatus}}", check=False).stdout
    try:
        rows = json.loads(info) or []
    except ValueError:
        return set()
    names, good = [], set()
    for key, value in rows:
        if key.startswith(" ") and not key.startswith("  "):
            names.append(key.strip())
        if key.strip() == "└ Status" and value == "Healthy" and names:
            good.add(names[-1])
    return good


def heal_and_reset(cluster: dict[str, object], timeout: float = 60) -> None:
    """After a drill, passed or not: every node healed and seen Healthy, then `reset`."""
    from deploy import dev_drills

    for name in cluster:
        dev_drills.heal(name)
    wait_for(lambda: healthy_nodes() == set(cluster), timeout, "every node back")
    reset(cluster)


def reset(records: dict[str, object]) -> None:
    """Leave the cluster as it came up: no containers, no volumes, only busybox (re-imported if
    a test removed it). Runs after every test, passed or not."""
    ids = docker("ps", "-aq", "--no-trunc", check=False).stdout.split()
    for cid in ps_ids("--filter", "status=paused"):
        docker("unpause", cid, check=False)
    if ids:
        docker("rm", "-f", "-v", *ids, check=False)
    busybox = set(docker("images", "-q", "--no-trunc", "busybox", check=False).stdout.split())
    for ref in image_refs():
        if not ref.startswith("busybox:"):
            docker("rmi", "-f", ref.replace(":<none>", ""), check=False)
    for iid in docker("images", "-aq", "--no-trunc", check=False).stdout.split():
        if iid not in busybox:
            docker("rmi", "-f", iid, check=False)
    volumes = docker("volume", "ls", "-q", check=False).stdout.split()
    if volumes:
        docker("volume", "rm", "-f", *volumes, check=False)
    lacking = [n for n in records if "busybox:latest" not in image_refs("--filter", f"node={n}")]
    if lacking:
        # One import everywhere: nodes that kept busybox would otherwise hold another image ID.
        docker("rmi", "-f", "busybox", check=False)
        dc.import_busybox(str(getattr(r, "addr", "")) for r in records.values())
