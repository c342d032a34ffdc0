"""docs/networking.md "Kept in sync", end to end on a real 3-node dev cluster through the real
docker CLI: a node's vxlan FDB and neighbour entries (read from its kernel) converge to exactly
the remote containers on the network — none stale, none missing — after its agent was dead
while others changed, after it lost etcd (and with it its lease) while others changed, after
all of etcd was down, and after another node died.

The containers are not reschedulable (the default): they keep running through the drills."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from deploy import dev_drills, dev_processes
from tests.fixtures import dev_cluster, docker
from tests.manager.overlay_helpers import (
    SERVE,
    Endpoint,
    endpoint,
    fdb_macs,
    kernel_view,
    reaches,
    remote_view,
    run,
    sh,
    vni_of_the_one_network,
)
from tests.manager.swarm_compat import heal_and_reset, healthy_nodes, wait_for

NET = "web"
SUBNET = "10.123.0.0/24"
NODES = {"node-0", "node-1", "node-2"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(3) as nodes:
        yield nodes


@pytest.fixture
def clean(cluster: dict[str, object]) -> Iterator[None]:
    yield
    dev_processes.start_etcd()  # a no-op unless a test stopped it
    heal_and_reset(cluster)
    for net in docker("network", "ls", "--filter", "driver=overlay", "-q").stdout.split():
        docker("network", "rm", net, check=False)


def converged(node: str, vni: int, members: list[Endpoint]) -> None:
    """Wait until `node`'s kernel holds exactly the entries of these endpoints that run
    elsewhere; on a timeout the assertion shows both sides."""
    want = remote_view(node, members)
    try:
        wait_for(lambda: kernel_view(node, vni) == want, 60, f"{node}'s entries match")
    except AssertionError as e:
        raise AssertionError(f"{e}\nwanted {want}\nkernel {kernel_view(node, vni)}") from None


def joined(name: str, node: str, *args: str, cmd: tuple[str, ...] = ("sleep", "3600")) -> Endpoint:
    """A container started on `node` on the network; its endpoint there."""
    run(name, node, "--network", NET, *args, cmd=cmd)
    return endpoint(name, NET)


def agent_answers(container: str) -> bool:
    """Whether the manager reaches the container's agent again after that agent's restart (the
    manager's channel to it may still be in gRPC's reconnect backoff for a while)."""
    return docker("inspect", container, check=False).returncode == 0


def tcp_reaches(container: str, target: str) -> bool:
    return sh(container, f"nc -w 3 {target} 8080 </dev/null").stdout.startswith("hello-from-")


def listed(network: str) -> list[str]:
    doc = json.loads(docker("network", "inspect", network).stdout)[0]
    return sorted(c["Name"] for c in doc["Containers"].values())


def test_agent_restart_removes_stale_and_adds_missing_entries(clean: None) -> None:
    docker("network", "create", "--subnet", SUBNET, NET)
    alpha = joined("alpha", "node-0")
    bravo = joined("bravo", "node-1")
    charlie = joined("charlie", "node-2")
    vni = vni_of_the_one_network()
    converged("node-0", vni, [alpha, bravo, charlie])

    dev_drills.kill("node-0")
    # delta first, so it cannot take charlie's address (the entries would look the same).
    delta = joined("delta", "node-1", cmd=("sh", "-c", SERVE))
    docker("rm", "-f", "charlie")
    # Nobody programs node-0 while its agent is dead: charlie's entry is still there, delta's
    # is not, so what follows is the restarted agent's doing.
    assert kernel_view("node-0", vni) == remote_view("node-0", [alpha, bravo, charlie])
    assert delta[0] != charlie[0]

    dev_drills.start("node-0")
    converged("node-0", vni, [alpha, bravo, delta])
    # The other way too: node-0's claims lapsed with its dead agent's lease and were asserted
    # again under the new one, so node-1 has alpha's entry back.
    converged("node-1", vni, [alpha, bravo, delta])
    wait_for(lambda: agent_answers("alpha"), 120, "the manager reaches node-0's agent")
    assert reaches("alpha", "delta") and reaches("delta", "alpha")
    wait_for(lambda: tcp_reaches("alpha", "delta"), 30, "TCP from alpha to delta")
    assert listed(NET) == ["alpha", "bravo", "delta"]


def test_lost_etcd_and_lease_then_converges(clean: None) -> None:
    """node-0 is cut off (drill `partition`: etcd, the manager and the other nodes all out of
    reach) until its lease has expired: its watch misses the changes made elsewhere meanwhile
    and its own claims go. The docs' claim is that both heal: the watch resumes (or re-lists)
    and the claims are asserted again under the new lease.

    (Not the `etcd-outage` drill: it drops only what node-0 sends to etcd, so an open watch
    stream still delivers etcd's events to node-0 and nothing is missed.)"""
    docker("network", "create", "--subnet", SUBNET, NET)
    alpha = joined("alpha", "node-0")
    bravo = joined("bravo", "node-1")
    charlie = joined("charlie", "node-1")
    vni = vni_of_the_one_network()
    converged("node-0", vni, [alpha, bravo, charlie])
    converged("node-1", vni, [alpha, bravo, charlie])

    dev_drills.partition("node-0")
    wait_for(lambda: "node-0" not in healthy_nodes(), 60, "node-0's lease expired")
    # Its claims went with the lease: node-1 drops alpha's entry.
    wait_for(lambda: alpha[1] not in fdb_macs("node-1", vni), 60, "node-1 dropped alpha")
    delta = joined("delta", "node-1", cmd=("sh", "-c", SERVE))
    docker("rm", "-f", "charlie")
    # node-0 cannot have heard of either change (delta first: see the other test).
    assert kernel_view("node-0", vni) == remote_view("node-0", [alpha, bravo, charlie])
    assert delta[0] != charlie[0]

    dev_drills.heal("node-0")
    wait_for(lambda: healthy_nodes() == NODES, 60, "node-0 registered again")
    converged("node-0", vni, [alpha, bravo, delta])
    converged("node-1", vni, [alpha, bravo, delta])
    wait_for(lambda: agent_answers("alpha"), 120, "the manager reaches node-0's agent")
    wait_for(lambda: tcp_reaches("alpha", "delta"), 30, "TCP from alpha to delta")
    assert reaches("bravo", "alpha")
    assert listed(NET) == ["alpha", "bravo", "delta"]


def test_watches_follow_changes_after_etcd_was_down(clean: None) -> None:
    """All of etcd down and back (its data kept): no change can be made meanwhile (the
    manager's records are in etcd), so what must hold is that every agent's watch resumed —
    changes made afterwards reach every node's kernel."""
    docker("network", "create", NET)
    alpha = joined("alpha", "node-0")
    bravo = joined("bravo", "node-1")
    charlie = joined("charlie", "node-2")
    vni = vni_of_the_one_network()
    converged("node-0", vni, [alpha, bravo, charlie])

    dev_processes.stop_etcd()
    assert reaches("alpha", "charlie")  # the data plane does not need etcd
    dev_processes.start_etcd()
    wait_for(lambda: healthy_nodes() == NODES, 60, "every node registered after etcd's return")

    docker("rm", "-f", "charlie")
    delta = joined("delta", "node-2", cmd=("sh", "-c", SERVE))
    echo = joined("echo", "node-1")
    for node in sorted(NODES):
        converged(node, vni, [alpha, bravo, delta, echo])
    wait_for(lambda: tcp_reaches("alpha", "delta"), 30, "TCP from alpha to delta")
    assert listed(NET) == ["alpha", "bravo", "delta", "echo"]


def test_a_dead_nodes_containers_leave_every_view(clean: None) -> None:
    """node-2 crashes (agent, shims and containers killed, link cut): its container's claim
    goes with the node's lease, so the entries on the other nodes, the embedded DNS and
    `docker network inspect` all drop it."""
    docker("network", "create", NET)
    alpha = joined("alpha", "node-0")
    bravo = joined("bravo", "node-1")
    charlie = joined("charlie", "node-2")
    vni = vni_of_the_one_network()
    converged("node-0", vni, [alpha, bravo, charlie])
    converged("node-1", vni, [alpha, bravo, charlie])
    assert sh("alpha", "nslookup charlie 127.0.0.11").returncode == 0

    dev_drills.crash("node-2")
    converged("node-0", vni, [alpha, bravo])
    converged("node-1", vni, [alpha, bravo])
    wait_for(lambda: listed(NET) == ["alpha", "bravo"], 60, "network inspect drops charlie")
    assert sh("alpha", "nslookup charlie 127.0.0.11").returncode != 0
    assert reaches("alpha", "bravo")


def test_a_lapsed_claim_is_not_handed_out(clean: None) -> None:
    """node-0 cut off until its lease expired; its container keeps running (not reschedulable)
    and keeps its address, so a container started elsewhere meanwhile must get another one."""
    docker("network", "create", "--subnet", SUBNET, NET)
    alpha = joined("alpha", "node-0")
    dev_drills.partition("node-0")
    wait_for(lambda: "node-0" not in healthy_nodes(), 60, "node-0's lease expired")
    delta = joined("delta", "node-1")
    assert delta[0] != alpha[0]
