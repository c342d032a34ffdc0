"""runtime.network / runtime.ports / runtime.netns against real kernel networking.

Nothing touches the host's network: each test creates a throwaway netns ("the node") and runs
its body in a child python via `ip netns exec`, so the bridge, veths and iptables rules all live
in that namespace and vanish when the fixture deletes it. Container and "other host" namespaces
are made with runtime.netns inside it. The `_scenario_*` functions are the bodies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
while True:
    c, addr = s.accept()
    c.sendall(("hello " + addr[0] + "\\n").encode())
    c.close()
"""


# ---- fixture: the throwaway node namespace ---------------------------------------------------


@pytest.fixture
def node_ns(tmp_path: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    name = f"flt-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name, str(tmp_path)
    finally:
        # Processes the scenario started in its inner namespaces, recorded by pid.
        pidfile = os.path.join(str(tmp_path), "pids")
        if os.path.exists(pidfile):
            with open(pidfile) as f:
                for line in f:
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(line), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", name], check=False)


def _run_scenario(ns: str, func: str, tmp: str) -> None:
    code = f"import tests.runtime.test_network as t; t._main(t.{func}, {tmp!r})"
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- helpers used inside the node namespace --------------------------------------------------


def _sh(*argv: str) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True).stdout


def _rules() -> list[str]:
    """The rule set, without iptables-save's timestamped comments and packet counters."""
    return [
        line.split(" [", 1)[0]
        for line in _sh("iptables-save").splitlines()
        if line and not line.startswith("#")
    ]


def _in(path: str, *argv: str) -> str:
    return _sh("nsenter", f"--net={path}", *argv)


def _spawn(tmp: str, argv: list[str]) -> subprocess.Popen[bytes]:
    # No inherited stdout/stderr: a leftover server must not keep the caller's pipes open.
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(tmp, "pids"), "a") as f:
        f.write(f"{proc.pid}\n")
    return proc


def _connect(host: str, port: int, netns: str | None = None) -> str:
    """One TCP round trip, from this namespace or (via nsenter) from `netns`."""
    if netns:
        code = (
            "import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), 2);"
            "print(s.recv(100).decode().strip())"
        )
        return _in(netns, sys.executable, "-c", code, host, str(port)).strip()
    with socket.create_connection((host, port), timeout=2) as s:
        return s.recv(100).decode().strip()


def _wait_listening(host: str, port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            _connect(host, port)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _container(tmp: str, br: object, cid: str) -> tuple[str, str, subprocess.Popen[bytes]]:
    """A container-like netns on the bridge running SERVER on port 80: (netns, ip, proc)."""
    from runtime.netns import create_netns

    path = os.path.join(tmp, "netns", cid)
    create_netns(path)
    ip, prefix, gw, mac = br.allocate(cid)  # type: ignore[attr-defined]
    br.attach(cid, path, ip, mac)  # type: ignore[attr-defined]
    # What the shim does inside the container's netns.
    _in(path, "ip", "addr", "add", f"{ip}/{prefix}", "dev", "eth0")
    _in(path, "ip", "link", "set", "lo", "up")
    _in(path, "ip", "link", "set", "eth0", "up")
    _in(path, "ip", "route", "add", "default", "via", gw)
    proc = _spawn(tmp, ["nsenter", f"--net={path}", sys.executable, "-c", SERVER, "80"])
    _wait_listening(ip, 80)
    return path, ip, proc


def _other_host(tmp: str) -> str:
    """A third netns linked to the node by a veth: node 10.99.0.1, other host 10.99.0.2."""
    from runtime.netns import create_netns

    path = os.path.join(tmp, "netns", "otherhost")
    create_netns(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            ipr.link("add", ifname="flt-up0", kind="veth", peer={"ifname": "eth0", "net_ns_fd": fd})
    finally:
        os.close(fd)
    _sh("ip", "addr", "add", "10.99.0.1/24", "dev", "flt-up0")
    _sh("ip", "link", "set", "flt-up0", "up")
    _in(path, "ip", "addr", "add", "10.99.0.2/24", "dev", "eth0")
    _in(path, "ip", "link", "set", "lo", "up")
    _in(path, "ip", "link", "set", "eth0", "up")
    return path


def _main(scenario: Callable[[str], None], tmp: str) -> None:
    """Entry point in the node namespace: run the scenario, always reap what it spawned."""
    try:
        scenario(tmp)
    finally:
        pidfile = os.path.join(tmp, "pids")
        if os.path.exists(pidfile):
            with open(pidfile) as f:
                for line in f:
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(line), signal.SIGKILL)


# ---- scenarios (run inside the node namespace) -----------------------------------------------


def _scenario_bridge(tmp: str) -> None:
    from runtime.netns import create_netns, delete_netns, run_in_netns
    from runtime.network import Bridge, mac_for_ip, net_stats

    assert mac_for_ip("172.17.0.2") == "02:42:ac:11:00:02"
    _sh("ip", "link", "set", "lo", "up")
    data = os.path.join(tmp, "data")
    br = Bridge(data, name="flt-br0", subnet="10.200.0.0/24")
    br.ensure()
    rules_once = _rules()
    br.ensure()
    assert _rules() == rules_once, "ensure() is not idempotent"
    assert "-A FLOTILLA-POSTROUTING -s 10.200.0.0/24 ! -o flt-br0 -j MASQUERADE" in rules_once
    assert "10.200.0.1/24" in _sh("ip", "addr", "show", "flt-br0")
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read().strip() == "1"

    # IPAM: sequential, idempotent per container, persisted across instances.
    ip1 = br.allocate("c1")
    assert ip1 == ("10.200.0.2", 24, "10.200.0.1", "02:42:0a:c8:00:02")
    assert br.allocate("c1") == ip1
    assert br.allocate("c2")[0] == "10.200.0.3"
    again = Bridge(data, name="flt-br0", subnet="10.200.0.0/24")
    assert again.list_allocations() == {"c1": "10.200.0.2", "c2": "10.200.0.3"}
    again.release("c2")
    assert br.allocate("c3")[0] == "10.200.0.3"

    # attach: eth0 with the MAC inside the netns, host end on the bridge.
    path, ip, server = _container(tmp, br, "c1")
    host_if = br.veths()[0]
    assert host_if.startswith("veth") and len(host_if) == 11
    assert "02:42:0a:c8:00:02" in _in(path, "ip", "link", "show", "eth0")
    assert _connect(ip, 80) == "hello 10.200.0.1"
    stats = net_stats(server.pid)
    assert set(stats) == {"eth0"}
    assert stats["eth0"]["rx_packets"] > 0 and stats["eth0"]["tx_bytes"] > 0

    def links() -> list[str]:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            return [str(link.get("ifname")) for link in ipr.get_links()]

    assert "eth0" in run_in_netns(path, links)

    # Stale veths go, kept ones stay; detach is idempotent.
    stale_ns = os.path.join(tmp, "netns", "stale")
    create_netns(stale_ns)
    stale_if = br.attach("stale", stale_ns, "10.200.0.9", mac_for_ip("10.200.0.9"))
    assert br.remove_stale_veths(keep={host_if}) == [stale_if]
    br.detach(stale_if)
    delete_netns(stale_ns)
    delete_netns(stale_ns)
    assert not os.path.exists(stale_ns)

    server.kill()
    server.wait()
    br.detach(host_if)
    assert br.veths() == []
    delete_netns(path)
    br.teardown()
    assert "FLOTILLA" not in "\n".join(_rules())
    assert "flt-br0" not in _sh("ip", "link")


def _scenario_ports(tmp: str) -> None:
    from runtime.network import Bridge
    from runtime.ports import PortAllocatedError, PortMapper

    _sh("ip", "link", "set", "lo", "up")
    data = os.path.join(tmp, "data")
    br = Bridge(data, name="flt-br0", subnet="10.200.0.0/24")
    br.ensure()
    path, ip, server = _container(tmp, br, "c1")
    other = _other_host(tmp)

    pm = PortMapper(data, "flt-br0")
    got = pm.publish(
        "c1",
        ip,
        {
            "80/tcp": [{"HostIp": "", "HostPort": "8080"}],
            "81/tcp": [{"HostIp": "", "HostPort": ""}],
            "53/udp": [{"HostIp": "10.99.0.1", "HostPort": "5353"}],
        },
    )
    assert got["80/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": "8080"}]
    assert got["53/udp"] == [{"HostIp": "10.99.0.1", "HostPort": "5353"}]
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        lo, hi = (int(x) for x in f.read().split())
    assert lo <= int(got["81/tcp"][0]["HostPort"]) <= hi

    # Reachable from the node's own address, from its loopback and from another host,
    # and the container sees the real client address from outside.
    assert _connect("10.99.0.1", 8080).startswith("hello ")
    assert _connect("127.0.0.1", 8080) == "hello 10.200.0.1"
    assert _connect("10.99.0.1", 8080, netns=other) == "hello 10.99.0.2"
    assert _connect(ip, 80) == "hello 10.200.0.1"
    rules = "\n".join(_rules())
    assert "-d 10.99.0.1/32 -p udp -m udp --dport 5353 -j DNAT --to-destination 10.200.0.2:53" in (
        rules
    )

    # Conflicts: our own allocation (all-or-nothing), then a listening host socket.
    bad = {"90/tcp": [{"HostPort": "9000"}], "80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    with pytest.raises(PortAllocatedError) as exc:
        pm.publish("c2", "10.200.0.3", bad, endpoint="web2")
    assert exc.value.bind_error == "Bind for 0.0.0.0:8080 failed: port is already allocated"
    assert exc.value.message == (
        "driver failed programming external connectivity on endpoint web2 (c2): "
        "Bind for 0.0.0.0:8080 failed: port is already allocated"
    )
    assert "c2" not in pm.allocations()
    assert "9000" not in "\n".join(_rules())
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 9090))
        busy.listen(1)
        with pytest.raises(PortAllocatedError) as exc:
            pm.publish("c2", "10.200.0.3", {"80/tcp": [{"HostPort": "9090"}]})
        assert exc.value.message == "Bind for 0.0.0.0:9090 failed: port is already allocated"

    # restore() rebuilds flushed rules from the persisted allocations.
    _sh("iptables", "-t", "nat", "-F", "FLOTILLA-DNAT")
    with pytest.raises(OSError):
        _connect("10.99.0.1", 8080)
    pm.restore()
    assert _connect("10.99.0.1", 8080, netns=other) == "hello 10.99.0.2"

    pm.unpublish("c1")
    pm.unpublish("c1")
    assert pm.allocations() == {}
    rules = "\n".join(_rules())
    assert ip not in rules and "-j DNAT" not in rules
    with pytest.raises(OSError):
        _connect("10.99.0.1", 8080)

    server.kill()
    server.wait()
    pm.teardown()
    br.teardown()
    assert "FLOTILLA" not in "\n".join(_rules())


# ---- tests -----------------------------------------------------------------------------------


def test_netns_create_delete(tmp_path: pytest.TempPathFactory) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from runtime.netns import create_netns, delete_netns

    path = os.path.join(str(tmp_path), "ns1")
    before = os.readlink("/proc/thread-self/ns/net")
    create_netns(path)
    try:
        assert os.stat(path).st_ino != os.stat("/proc/self/ns/net").st_ino
        out = _sh("nsenter", f"--net={path}", "ip", "-o", "link")
        assert ": lo:" in out and "eth0" not in out
        # Only the helper thread moved; the caller is still in its namespace.
        assert os.readlink("/proc/thread-self/ns/net") == before
    finally:
        delete_netns(path)
    assert not os.path.exists(path)
    delete_netns(path)


def test_bridge(node_ns: tuple[str, str]) -> None:
    _run_scenario(node_ns[0], "_scenario_bridge", node_ns[1])


def test_ports(node_ns: tuple[str, str]) -> None:
    _run_scenario(node_ns[0], "_scenario_ports", node_ns[1])
