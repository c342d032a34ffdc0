"""Helpers for the overlay-network e2e tests (tests/manager/test_overlay*_e2e.py): containers
pinned to a node through the manager, probes run inside them, and a node's kernel entries read
in its network namespace (`ip`/`bridge` JSON output: the tests check the kernel, not flotilla's
own idea of it)."""

from __future__ import annotations

import json
import subprocess

from deploy.dev_layout import node_index, node_ip
from tests.fixtures import docker
from tests.manager.swarm_compat import inspect

# A TCP server: every connection to 8080 gets one line. (busybox-static's wget crashes here,
# so nc is the client too.)
SERVE = "while true; do echo hello-from-$(hostname) | nc -l -p 8080; done"


def run(name: str, node: str, *args: str, cmd: tuple[str, ...] = ("sleep", "3600")) -> str:
    """`docker run -d` pinned by constraint (`node-1`, or a soft `~node-1`); its full ID."""
    return docker(
        "run", "-d", "--name", name, "-e", f"constraint:node=={node}", *args, "busybox", *cmd
    ).stdout.strip()


def sh(container: str, script: str) -> subprocess.CompletedProcess[str]:
    return docker("exec", container, "sh", "-c", script, check=False)


def reaches(container: str, target: str) -> bool:
    return sh(container, f"ping -c1 -W2 {target}").returncode == 0


def address(container: str, network: str) -> str:
    return str(inspect(container)["NetworkSettings"]["Networks"][network]["IPAddress"])


def in_netns(node: str, *cmd: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", node, *cmd], capture_output=True, text=True, check=True
    ).stdout


def vni_of_the_one_network(node: str = "node-0") -> int:
    """The VNI of the only overlay network in use, read from a node's kernel."""
    links = json.loads(in_netns(node, "ip", "-j", "-d", "link", "show", "type", "vxlan"))
    ids = [link["linkinfo"]["info_data"]["id"] for link in links]
    assert len(ids) == 1, links
    return int(ids[0])


def fdb_entries(node: str, vni: int) -> dict[str, str]:
    """The static FDB entries of a node's vxlan device: remote container MAC -> its node's
    address (the all-zero MAC, a flood entry, is not a container's)."""
    rows = json.loads(in_netns(node, "bridge", "-j", "fdb", "show", "dev", f"fl-vx-{vni}"))
    return {r["mac"]: r["dst"] for r in rows if r.get("dst") and r["mac"] != "00:00:00:00:00:00"}


def fdb_macs(node: str, vni: int) -> set[str]:
    return set(fdb_entries(node, vni))


def neigh_entries(node: str, vni: int) -> dict[str, str]:
    """The neighbour entries of a node's vxlan device: remote container IP -> MAC."""
    rows = json.loads(in_netns(node, "ip", "-j", "neigh", "show", "dev", f"fl-vx-{vni}"))
    return {r["dst"]: r.get("lladdr", "") for r in rows}


Endpoint = tuple[str, str, str]  # a running container's (IP, MAC, node) on one network


def endpoint(container: str, network: str) -> Endpoint:
    """From its inspect; it holds while the container runs (read it once: inspect needs the
    container's agent, which a drill may have taken away)."""
    doc = inspect(container)
    net = doc["NetworkSettings"]["Networks"][network]
    return str(net["IPAddress"]), str(net["MacAddress"]), str(doc["Node"]["Name"])


def remote_view(node: str, endpoints: list[Endpoint]) -> dict[str, tuple[str, str]]:
    """What `node`'s vxlan device must hold for these endpoints: IP -> (MAC, address of the
    node it runs on), the ones running elsewhere only."""
    return {ip: (mac, node_ip(node_index(where))) for ip, mac, where in endpoints if where != node}


def kernel_view(node: str, vni: int) -> dict[str, tuple[str, str]]:
    """The same shape read from the kernel: neighbour IP -> (MAC, FDB destination of that MAC).
    An FDB entry with no neighbour (or the reverse) shows as a mismatch with `remote_view`."""
    fdb = fdb_entries(node, vni)
    neigh = neigh_entries(node, vni)
    view = {ip: (mac, fdb.get(mac, "")) for ip, mac in neigh.items()}
    for mac, dst in fdb.items():
        if mac not in neigh.values():
            view[f"fdb-only:{mac}"] = (mac, dst)
    return view


def overlay_links(node: str) -> list[str]:
    links = json.loads(in_netns(node, "ip", "-j", "link", "show"))
    return [link["ifname"] for link in links if link["ifname"].startswith(("fl-br-", "fl-vx-"))]
