"""The node's default bridge network (like docker0): bridge, NAT, IPAM and veth plumbing.

All iptables rules live in our own chains (jumped from the builtin ones) so teardown is a flush.
IPAM is a directory of O_EXCL files, one per address, so allocations survive agent restarts and
two racing allocations can never hand out the same address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import subprocess
import threading

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from proto.docker.errors import SystemError_

NAT_POSTROUTING = "FLOTILLA-POSTROUTING"
FILTER_FORWARD = "FLOTILLA-FORWARD"


# ---- iptables helpers (shared with runtime.ports) --------------------------------------------


def iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # -w: other tools (and other agents) may hold the xtables lock briefly.
    proc = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemError_(f"iptables {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def chain_exists(table: str, chain: str) -> bool:
    return iptables("-t", table, "-S", chain, check=False).returncode == 0


def ensure_chain(table: str, chain: str) -> None:
    if not chain_exists(table, chain):
        iptables("-t", table, "-N", chain)


def rule_exists(table: str, chain: str, rule: list[str]) -> bool:
    return iptables("-t", table, "-C", chain, *rule, check=False).returncode == 0


def ensure_rule(table: str, chain: str, rule: list[str], insert: bool = False) -> None:
    if not rule_exists(table, chain, rule):
        iptables("-t", table, "-I" if insert else "-A", chain, *rule)


def delete_rule(table: str, chain: str, rule: list[str]) -> None:
    while rule_exists(table, chain, rule):
        iptables("-t", table, "-D", chain, *rule)


def drop_chain_if_empty(table: str, chain: str, jumps: list[tuple[str, list[str]]]) -> None:
    """Remove the chain and its jumps once no rule is left (another bridge may share it)."""
    if not chain_exists(table, chain):
        return
    rules = iptables("-t", table, "-S", chain).stdout.splitlines()
    if any(r.startswith("-A ") for r in rules):
        return
    for builtin, jump in jumps:
        delete_rule(table, builtin, jump)
    iptables("-t", table, "-X", chain, check=False)


def ensure_base_chains() -> None:
    """FLOTILLA-POSTROUTING and FLOTILLA-FORWARD with their jumps, shared by every bridge."""
    ensure_chain("nat", NAT_POSTROUTING)
    ensure_rule("nat", "POSTROUTING", ["-j", NAT_POSTROUTING])
    ensure_chain("filter", FILTER_FORWARD)
    # First in FORWARD so a DROP policy or other tools' rules cannot shadow ours.
    ensure_rule("filter", "FORWARD", ["-j", FILTER_FORWARD], insert=True)


def drop_base_chains_if_empty() -> None:
    drop_chain_if_empty("nat", NAT_POSTROUTING, [("POSTROUTING", ["-j", NAT_POSTROUTING])])
    drop_chain_if_empty("filter", FILTER_FORWARD, [("FORWARD", ["-j", FILTER_FORWARD])])


def write_sysctl(name: str, value: str) -> None:
    with open("/proc/sys/" + name.replace(".", "/"), "w") as f:
        f.write(value)


# ---- helpers ---------------------------------------------------------------------------------


def mac_for_ip(ip: str) -> str:
    """Docker's derived MAC: 02:42 followed by the four IPv4 octets."""
    octets = ipaddress.IPv4Address(ip).packed
    return "02:42:" + ":".join(f"{b:02x}" for b in octets)


def net_stats(pid: int) -> dict[str, dict[str, int]]:
    """Docker's `networks` stats object, read from the container's /proc/<pid>/net/dev."""
    with open(f"/proc/{pid}/net/dev") as f:
        lines = f.read().splitlines()[2:]
    out: dict[str, dict[str, int]] = {}
    for line in lines:
        name, _, data = line.partition(":")
        name = name.strip()
        if name == "lo":
            continue
        v = [int(x) for x in data.split()]
        out[name] = {
            "rx_bytes": v[0],
            "rx_packets": v[1],
            "rx_errors": v[2],
            "rx_dropped": v[3],
            "tx_bytes": v[8],
            "tx_packets": v[9],
            "tx_errors": v[10],
            "tx_dropped": v[11],
        }
    return out


def delete_link(name: str) -> None:
    """Delete a link by name (a veth takes its peer along); a missing link is fine."""
    with IPRoute() as ipr:
        for idx in ipr.link_lookup(ifname=name):
            with contextlib.suppress(NetlinkError):
                ipr.link("del", index=idx)


# ---- the bridge ------------------------------------------------------------------------------

_local = threading.local()


def _netlink() -> IPRoute:
    """A netlink socket for this thread, kept open: opening one costs ~3 ms with pyroute2."""
    ipr = getattr(_local, "ipr", None)
    if ipr is None:
        ipr = _local.ipr = IPRoute()
    return ipr


class Bridge:
    """A local bridge network with masquerading and a persisted IPAM under `data_dir`."""

    def __init__(self, data_dir: str, name: str = "flotilla0", subnet: str = "172.17.0.0/16"):
        self.data_dir = data_dir
        self.name = name
        self.network = ipaddress.IPv4Network(subnet)
        self.gateway = str(self.network.network_address + 1)
        self.ipam_dir = os.path.join(data_dir, "ipam", name)

    @property
    def subnet(self) -> str:
        return str(self.network)

    @property
    def prefix(self) -> int:
        return self.network.prefixlen

    # ---- bridge + rules ----------------------------------------------------------------------

    def ensure(self) -> None:
        """Create (or repair) the bridge, forwarding and NAT; safe to call repeatedly."""
        with IPRoute() as ipr:
            if not ipr.link_lookup(ifname=self.name):
                ipr.link("add", ifname=self.name, kind="bridge")
            idx = ipr.link_lookup(ifname=self.name)[0]
            have = {a.get("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=2)}
            if self.gateway not in have:
                ipr.addr("add", index=idx, address=self.gateway, prefixlen=self.prefix)
            ipr.link("set", index=idx, state="up")
        write_sysctl("net.ipv4.ip_forward", "1")
        self._ensure_rules()

    def _nat_rules(self) -> list[list[str]]:
        return [["-s", self.subnet, "!", "-o", self.name, "-j", "MASQUERADE"]]

    def _forward_rules(self) -> list[list[str]]:
        established = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"]
        return [
            ["-o", self.name, *established, "-j", "ACCEPT"],
            ["-i", self.name, "!", "-o", self.name, "-j", "ACCEPT"],
            ["-i", self.name, "-o", self.name, "-j", "ACCEPT"],
        ]

    def _ensure_rules(self) -> None:
        ensure_base_chains()
        for rule in self._nat_rules():
            ensure_rule("nat", NAT_POSTROUTING, rule)
        for rule in self._forward_rules():
            ensure_rule("filter", FILTER_FORWARD, rule)

    def teardown(self) -> None:
        """Remove the bridge and its rules (keeps IPAM files: they are the containers' state)."""
        for rule in self._nat_rules():
            delete_rule("nat", NAT_POSTROUTING, rule)
        for rule in self._forward_rules():
            delete_rule("filter", FILTER_FORWARD, rule)
        drop_base_chains_if_empty()
        delete_link(self.name)

    # ---- IPAM --------------------------------------------------------------------------------

    def _ip_file(self, ip: str) -> str:
        return os.path.join(self.ipam_dir, ip)

    def list_allocations(self) -> dict[str, str]:
        """{container id: ip} for every persisted allocation."""
        out: dict[str, str] = {}
        try:
            entries = os.listdir(self.ipam_dir)
        except FileNotFoundError:
            return out
        for ip in entries:
            try:
                with open(self._ip_file(ip)) as f:
                    out[f.read().strip()] = ip
            except FileNotFoundError:
                continue
        return out

    def allocate(self, cid: str) -> tuple[str, int, str, str]:
        """Reserve an address for `cid` (idempotent): (ip, prefix, gateway, mac)."""
        existing = self.list_allocations().get(cid)
        if existing:
            return existing, self.prefix, self.gateway, mac_for_ip(existing)
        os.makedirs(self.ipam_dir, exist_ok=True)
        for host in self.network.hosts():
            ip = str(host)
            if ip == self.gateway:
                continue
            try:
                fd = os.open(self._ip_file(ip), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as f:
                f.write(cid)
            return ip, self.prefix, self.gateway, mac_for_ip(ip)
        raise SystemError_(
            f"no available IPv4 addresses on this network's address pools: {self.name}"
        )

    def release(self, cid: str) -> None:
        for owner, ip in self.list_allocations().items():
            if owner == cid:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._ip_file(ip))

    # ---- veths -------------------------------------------------------------------------------

    def attach(self, cid: str, netns_path: str, ip: str, mac: str) -> str:
        """Plug the container's netns into the bridge; returns the host-side veth name.

        The peer is created directly inside the netns as `eth0`; the shim sets its address.
        """
        del cid, ip  # the address is configured inside the netns by the shim
        host_if = "veth" + secrets.token_hex(4)[:7]
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            ipr = _netlink()
            br = ipr.link_lookup(ifname=self.name)
            if not br:
                raise SystemError_(f"bridge {self.name} does not exist")
            # One request makes the pair, enslaves and raises the host end: this is on the
            # path of every container start.
            ipr.link(
                "add",
                ifname=host_if,
                kind="veth",
                master=br[0],
                state="up",
                peer={"ifname": "eth0", "net_ns_fd": fd, "address": mac},
            )
        finally:
            os.close(fd)
        return host_if

    def detach(self, host_ifname: str) -> None:
        """Delete the veth pair by its host end; a missing link is fine."""
        delete_link(host_ifname)

    def veths(self) -> list[str]:
        """Host-side veth names currently enslaved to the bridge."""
        with IPRoute() as ipr:
            br = ipr.link_lookup(ifname=self.name)
            if not br:
                return []
            return [
                link.get("ifname")
                for link in ipr.get_links()
                if link.get("master") == br[0] and str(link.get("ifname")).startswith("veth")
            ]

    def remove_stale_veths(self, keep: set[str]) -> list[str]:
        """Delete bridge veths not in `keep` (reconcile after a crash); returns what went."""
        stale = [name for name in self.veths() if name not in keep]
        for name in stale:
            self.detach(name)
        return stale
