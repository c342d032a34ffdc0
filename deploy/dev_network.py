"""The dev cluster's network: the underlay bridge, one netns per host, a veth into each.

    flt-underlay 10.99.0.1/24  bridge in the netns of whoever runs `up`
      flt-u-N  ── veth ──  eth0 10.99.0.(10+N)/24 in netns node-N (default route via .1)

All through `ip` (netlink), in the caller's network namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess

from deploy.dev_layout import (
    BRIDGE,
    HOST_IP,
    NETNS_DIR,
    NODE_RE,
    DevError,
    node_index,
    node_ip,
    node_name,
    veth_name,
)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise DevError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def netns_list() -> list[str]:
    """The dev hosts' network namespaces (node-N), in node order."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted((n for n in names if NODE_RE.match(n)), key=node_index)


def netns_pids(name: str) -> set[int]:
    """Every process living in host `name`'s network namespace."""
    res = ip("netns", "pids", name, check=False)
    return {int(x) for x in res.stdout.split() if x.isdigit()}


def links() -> dict[str, bool]:
    """Links of the current netns and whether each is administratively up.

    Asks netlink (`ip`), not /sys/class/net: sysfs shows the netns it was mounted in, which is
    not ours when the caller unshared only its network namespace (as the test session does).
    """
    res = ip("-j", "link", "show", check=False)
    try:
        found = json.loads(res.stdout or "[]")
    except ValueError:
        return {}
    return {link["ifname"]: "UP" in link.get("flags", []) for link in found if "ifname" in link}


def link_up(name: str) -> bool | None:
    """Whether link `name` is up; None when there is no such link."""
    return links().get(name)


def set_link(name: str, up: bool) -> None:
    ip("link", "set", name, "up" if up else "down")


def make_underlay() -> None:
    if BRIDGE not in links():
        ip("link", "add", BRIDGE, "type", "bridge")
    ip("addr", "replace", f"{HOST_IP}/24", "dev", BRIDGE)
    ip("link", "set", BRIDGE, "up")


def make_host(i: int) -> None:
    name, veth = node_name(i), veth_name(i)
    ip("netns", "add", name)
    ns = ["-n", name]
    ip(*ns, "link", "set", "lo", "up")
    ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
    ip("link", "set", veth, "master", BRIDGE)
    ip("link", "set", veth, "up")
    ip(*ns, "addr", "add", f"{node_ip(i)}/24", "dev", "eth0")
    ip(*ns, "link", "set", "eth0", "up")
    ip(*ns, "route", "add", "default", "via", HOST_IP)
    _no_iptables_on_bridged_traffic(name)


def _no_iptables_on_bridged_traffic(netns: str) -> None:
    """br_netfilter (loaded by dockerd or kube-proxy, host-wide) passes every packet a bridge
    forwards through iptables and conntrack. flotilla's rules are all on routed traffic, so in
    a dev host, which nothing else shares, it is turned off: measured on the overlay, 8-stream
    throughput 0.54 → 0.78 of the underlay's and +47 → +35 µs RTT (docs/networking.md). The
    setting is per network namespace on current kernels; absent when br_netfilter is not
    loaded."""
    subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "sh",
            "-c",
            "f=/proc/sys/net/bridge/bridge-nf-call-iptables; [ ! -e $f ] || echo 0 > $f",
        ],
        check=True,
    )


def remove_network() -> None:
    """Delete the hosts' netns, the underlay veths and the bridge (whatever is left of them)."""
    for name in netns_list():
        ip("netns", "del", name, check=False)
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(NETNS_DIR, name))
    for veth in (n for n in links() if re.match(r"^flt-u-\d+$", n)):
        ip("link", "del", veth, check=False)
    if BRIDGE in links():
        ip("link", "del", BRIDGE, check=False)
