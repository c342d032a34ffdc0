"""Overlay networks end to end: a real 3-node dev cluster (agents in their own network
namespaces, real vxlan between them), driven by the real docker CLI through the manager.

Containers on one overlay network reach each other across hosts by address, name and alias
(ICMP and TCP), nothing else reaches them (another network, an `--internal` network's way out),
running containers are connected and disconnected, addresses are never handed out twice under
concurrent runs, the kernel's entries follow a rescheduled container, and nothing is left once
the network is removed or a node dies."""

from __future__ import annotations

import concurrent.futures
import json
import socket
from collections.abc import Iterator

import pytest

from deploy import dev_drills
from deploy import devcluster as dc
from tests.fixtures import dev_cluster, docker
from tests.manager.overlay_helpers import (
    SERVE,
    address,
    fdb_macs,
    overlay_links,
    reaches,
    run,
    sh,
    vni_of_the_one_network,
)
from tests.manager.swarm_compat import heal_and_reset, inspect, wait_for

POLICY = "reschedule:on-node-failure"


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(3) as nodes:
        yield nodes


@pytest.fixture
def clean(cluster: dict[str, object]) -> Iterator[None]:
    yield
    heal_and_reset(cluster)
    for net in docker("network", "ls", "--filter", "driver=overlay", "-q").stdout.split():
        docker("network", "rm", net, check=False)


def test_cross_host_by_address_name_alias_and_tcp(clean: None) -> None:
    docker("network", "create", "web")
    run("alpha", "node-0", "--network", "web")
    run("bravo", "node-1", "--network", "web", "--network-alias", "bee", cmd=("sh", "-c", SERVE))
    assert (
        inspect("alpha")["Node"]["Name"] == "node-0"
        and inspect("bravo")["Node"]["Name"] == "node-1"
    )
    b_ip = address("bravo", "web")
    assert reaches("alpha", b_ip)
    assert reaches("alpha", "bravo") and reaches("alpha", "bee") and reaches("bravo", "alpha")

    def fetch() -> str:
        return sh("alpha", "nc -w 3 bee 8080 </dev/null").stdout

    wait_for(lambda: fetch().startswith("hello-from-"), 20, "TCP by alias across hosts")
    answer = sh("alpha", "nslookup bravo 127.0.0.11")
    assert answer.returncode == 0 and b_ip in answer.stdout
    # The network's inspect shows both containers, cluster-wide.
    net = json.loads(docker("network", "inspect", "web").stdout)[0]
    names = sorted(c["Name"] for c in net["Containers"].values())
    assert names == ["alpha", "bravo"]


def test_networks_are_isolated_and_internal_has_no_way_out(clean: None) -> None:
    docker("network", "create", "one")
    docker("network", "create", "two")
    docker("network", "create", "--internal", "sealed")
    run("xray", "node-0", "--network", "one")
    run("yankee", "node-1", "--network", "two")
    run("zulu", "node-1", "--network", "sealed")
    run("whisky", "node-2", "--network", "sealed")
    assert not reaches("xray", address("yankee", "two"))
    assert not reaches("yankee", address("xray", "one"))
    # The outside: node-2's own underlay address, reached through node-0's NAT.
    assert reaches("xray", "10.99.0.12")
    assert not reaches("zulu", "10.99.0.12")
    # An internal network still joins its own containers across hosts.
    assert reaches("zulu", "whisky")


def test_connect_and_disconnect_a_running_container(clean: None) -> None:
    docker("network", "create", "web")
    run("alpha", "node-0", "--network", "web")
    run("echo", "node-2")  # the node's default bridge only
    docker("network", "connect", "--alias", "echo2", "web", "echo")
    e_ip = address("echo", "web")
    assert e_ip and reaches("alpha", e_ip) and reaches("alpha", "echo2")
    assert reaches("echo", address("alpha", "web"))
    docker("network", "disconnect", "web", "echo")
    assert "web" not in inspect("echo")["NetworkSettings"]["Networks"]
    assert not reaches("alpha", e_ip)
    out = docker("network", "disconnect", "web", "echo", check=False)
    assert out.returncode != 0 and "is not connected to" in out.stderr


def test_no_address_twice_under_concurrent_runs(clean: None) -> None:
    docker("network", "create", "--subnet", "10.123.0.0/24", "busy")

    def one(i: int) -> str:
        return docker(
            "run",
            "-d",
            "--name",
            f"r{i}",
            "--network",
            "busy",
            "busybox",
            "sleep",
            "3600",
            timeout=180,
        ).stdout.strip()

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        ids = list(pool.map(one, range(50)))
    ips = [address(cid, "busy") for cid in ids]
    twice = {ip: [c[:12] for c, i in zip(ids, ips, strict=True) if i == ip] for ip in ips}
    assert len(set(ips)) == 50, {ip: cids for ip, cids in twice.items() if len(cids) > 1}
    assert all(ip.startswith("10.123.0.") for ip in ips), ips
    assert "10.123.0.1" not in ips  # the gateway
    # Addresses are freed when containers go, and handed out again.
    for cid in ids[:10]:
        docker("rm", "-f", cid)
    again = run("again", "node-0", "--network", "busy")
    assert address(again, "busy") in ips[:10] or address(again, "busy") not in ips[10:]


def test_entries_follow_a_rescheduled_container_and_go_with_its_node(clean: None) -> None:
    docker("network", "create", "web")
    run("alpha", "node-0", "--network", "web")
    run("mike", "~node-1", "--network", "web", "-e", POLICY)
    m_ip = address("mike", "web")
    old_mac = inspect("mike")["NetworkSettings"]["Networks"]["web"]["MacAddress"]
    vni = vni_of_the_one_network()
    wait_for(lambda: old_mac in fdb_macs("node-0", vni), 10, "node-0 has mike's FDB entry")
    dev_drills.kill("node-1")

    def running_on() -> list[str]:
        rows = docker("ps", "--filter", "name=mike", "--format", "{{.Names}}").stdout.split()
        return [r.split("/")[0] for r in rows]

    wait_for(lambda: running_on() in (["node-0"], ["node-2"]), 60, "mike rescheduled")
    moved_to = inspect("mike")["Node"]["Name"]
    assert address("mike", "web") == m_ip  # its address was free again: it kept it
    assert reaches("alpha", "mike")
    if moved_to == "node-2":
        wait_for(lambda: old_mac in fdb_macs("node-0", vni), 10, "entry follows mike to node-2")
    else:
        # Now local to node-0: no FDB entry for it on node-0's vxlan device any more.
        wait_for(lambda: old_mac not in fdb_macs("node-0", vni), 10, "entry of mike gone")


def test_nothing_is_left_after_network_rm(clean: None) -> None:
    docker("network", "create", "web")
    for i in range(3):
        run(f"c{i}", f"node-{i}", "--network", "web")
    assert all(overlay_links(f"node-{i}") for i in range(3))
    out = docker("network", "rm", "web", check=False)
    assert out.returncode != 0 and "has active endpoints" in out.stderr
    for i in range(3):
        docker("rm", "-f", f"c{i}")
    docker("network", "rm", "web")
    for i in range(3):
        assert overlay_links(f"node-{i}") == []


def test_published_port_of_an_overlay_container(clean: None) -> None:
    docker("network", "create", "web")
    run("pub", "node-1", "--network", "web", "-p", "18090:8080", cmd=("sh", "-c", SERVE))
    ports = inspect("pub")["NetworkSettings"]["Ports"]["8080/tcp"]
    assert ports and ports[0]["HostPort"] == "18090"

    def fetch() -> str:
        # From the test's side of the underlay, to node-1's own address.
        with socket.create_connection((dc.node_ip(1), 18090), timeout=3) as conn:
            return conn.makefile().readline()

    def answered() -> bool:
        try:
            return fetch().startswith("hello-from-")
        except OSError:
            return False

    wait_for(answered, 20, "the published port answers on node-1's address")
