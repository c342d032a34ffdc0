"""Published ports, with dockerd `--userland-proxy=false` semantics: DNAT plus hairpin NAT.

Reachable from other hosts (PREROUTING), from this host to any of its addresses (OUTPUT), from
127.0.0.1 (route_localnet on the bridge + masquerading local sources towards the bridge) and from
containers on the same bridge (no `! -i bridge` on the DNAT, hairpin masquerade).

Allocations are one file per (proto, host ip, host port) under `<data_dir>/ports/`, guarded by a
flock, so they survive restarts and `restore()` can rebuild the rules after a reboot.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import random
import socket
from collections.abc import Iterator

from proto.docker.errors import SystemError_
from runtime.network import (
    delete_rule,
    drop_chain_if_empty,
    ensure_chain,
    ensure_rule,
    write_sysctl,
)

NAT_DNAT = "FLOTILLA-DNAT"
NAT_HAIRPIN = "FLOTILLA-HAIRPIN"
FILTER_PORTS = "FLOTILLA-PORTS"
ANY_V4 = "0.0.0.0"

Bindings = dict[str, list[dict[str, str]]]


class PortAllocatedError(SystemError_):
    """dockerd answers this with 500 at start: the endpoint could not be programmed.

    `message` is the full dockerd wording when an endpoint name was given; `bind_error` is
    always the inner `Bind for 0.0.0.0:8080 failed: port is already allocated` part.
    """

    def __init__(self, bind_error: str, endpoint: str = "", cid: str = "") -> None:
        message = bind_error
        if endpoint:
            message = (
                f"driver failed programming external connectivity on endpoint {endpoint} "
                f"({cid}): {bind_error}"
            )
        super().__init__(message)
        self.bind_error = bind_error


def _local_port_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = f.read().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999  # the kernel default


def host_port_in_use(proto: str, host_ip: str, port: int) -> bool:
    """True if a host socket already holds the port (listener, bound UDP socket)."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        # Without SO_REUSEADDR a TIME_WAIT leftover would look like a conflict.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host_ip, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            if exc.errno == errno.EADDRNOTAVAIL:
                return False  # not our address; DNAT still applies
            raise
    return False


def _parse_key(key: str) -> tuple[int, str]:
    """`80/tcp` → (80, "tcp"); Docker defaults the protocol to tcp."""
    port, _, proto = key.partition("/")
    return int(port), (proto or "tcp").lower()


class PortMapper:
    def __init__(self, data_dir: str, bridge_name: str) -> None:
        self.data_dir = data_dir
        self.bridge = bridge_name
        # One directory per bridge, but the host ports are the node's: allocation checks and
        # the lock span every bridge's directory.
        self.root = os.path.join(data_dir, "ports")
        self.dir = os.path.join(self.root, bridge_name)

    # ---- persistence -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        os.makedirs(self.dir, exist_ok=True)
        fd = os.open(os.path.join(self.root, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _records(self, directory: str = "") -> list[dict]:
        directory = directory or self.dir
        out: list[dict] = []
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return out
        for name in names:
            if name.startswith("."):
                continue
            try:
                with open(os.path.join(directory, name)) as f:
                    out.append(json.load(f))
            except (FileNotFoundError, json.JSONDecodeError):
                continue
        return out

    def _node_records(self) -> list[dict]:
        """Allocations of every bridge on the node (what a new binding must not overlap)."""
        bridges = [e for e in os.listdir(self.root) if not e.startswith(".")]
        return [rec for b in sorted(bridges) for rec in self._records(os.path.join(self.root, b))]

    def _file(self, rec: dict) -> str:
        return os.path.join(self.dir, f"{rec['proto']}_{rec['host_ip']}_{rec['host_port']}")

    def _save(self, rec: dict) -> None:
        fd = os.open(self._file(rec), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(rec, f)

    def allocations(self) -> dict[str, list[dict]]:
        """{container id: [record, ...]} (records: proto, host_ip, host_port, container_*)."""
        out: dict[str, list[dict]] = {}
        for rec in self._records():
            out.setdefault(rec["cid"], []).append(rec)
        return out

    # ---- allocation --------------------------------------------------------------------------

    def _taken(self, records: list[dict], proto: str, host_ip: str, port: int) -> bool:
        """Docker's rule: 0.0.0.0 overlaps every specific address on the same proto/port."""
        for rec in records:
            if rec["proto"] != proto or rec["host_port"] != port:
                continue
            if ANY_V4 in (rec["host_ip"], host_ip) or rec["host_ip"] == host_ip:
                return True
        return host_port_in_use(proto, host_ip, port)

    def _pick(self, records: list[dict], proto: str, host_ip: str, requested: str) -> int:
        if requested:
            # Docker accepts a range "8000-8010" and takes the first free one.
            lo_s, _, hi_s = requested.partition("-")
            lo, hi = int(lo_s), int(hi_s or lo_s)
            for port in range(lo, hi + 1):
                if not self._taken(records, proto, host_ip, port):
                    return port
            raise PortAllocatedError(f"Bind for {host_ip}:{lo} failed: port is already allocated")
        lo, hi = _local_port_range()
        start = random.randint(lo, hi)
        for i in range(hi - lo + 1):
            port = lo + (start - lo + i) % (hi - lo + 1)
            if not self._taken(records, proto, host_ip, port):
                return port
        raise PortAllocatedError("all ports are allocated")

    def publish(
        self, cid: str, container_ip: str, bindings: Bindings, endpoint: str = ""
    ) -> Bindings:
        """Allocate and program `bindings` (HostConfig.PortBindings shape).

        Returns NetworkSettings.Ports-shaped actual bindings. All-or-nothing: on a conflict
        nothing of this call stays allocated. `endpoint` (container name) only shapes the error.
        """
        self.ensure()
        added: list[dict] = []
        result: Bindings = {}
        try:
            with self._locked():
                records = self._node_records()
                for key, entries in bindings.items():
                    cport, proto = _parse_key(key)
                    result[key] = []
                    for entry in entries or [{}]:
                        host_ip = (entry or {}).get("HostIp") or ANY_V4
                        requested = str((entry or {}).get("HostPort") or "")
                        port = self._pick(records, proto, host_ip, requested)
                        rec = {
                            "cid": cid,
                            "proto": proto,
                            "host_ip": host_ip,
                            "host_port": port,
                            "container_ip": container_ip,
                            "container_port": cport,
                        }
                        self._save(rec)
                        records.append(rec)
                        added.append(rec)
                        result[key].append({"HostIp": host_ip, "HostPort": str(port)})
            for rec in added:
                self._program(rec)
        except PortAllocatedError as exc:
            self._drop(added)
            raise PortAllocatedError(exc.bind_error, endpoint, cid) from None
        except BaseException:
            self._drop(added)
            raise
        return result

    def unpublish(self, cid: str) -> None:
        """Remove the container's rules and allocations; idempotent."""
        with self._locked():
            mine = [r for r in self._records() if r["cid"] == cid]
        self._drop(mine)

    def _drop(self, records: list[dict]) -> None:
        for rec in records:
            self._unprogram(rec)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._file(rec))

    def restore(self) -> None:
        """Re-program every persisted allocation (after a reboot or iptables flush)."""
        self.ensure()
        for rec in self._records():
            self._program(rec)

    # ---- iptables ----------------------------------------------------------------------------

    def _base_jumps(self) -> dict[str, list[tuple[str, list[str]]]]:
        local = ["-m", "addrtype", "--dst-type", "LOCAL", "-j", NAT_DNAT]
        return {
            NAT_DNAT: [("PREROUTING", local), ("OUTPUT", local)],
            NAT_HAIRPIN: [("POSTROUTING", ["-j", NAT_HAIRPIN])],
            FILTER_PORTS: [("FORWARD", ["-j", FILTER_PORTS])],
        }

    def _loopback_rule(self) -> list[str]:
        # After DNAT, 127.0.0.1 sources must be rewritten or the container cannot answer.
        return ["-o", self.bridge, "-m", "addrtype", "--src-type", "LOCAL", "-j", "MASQUERADE"]

    def ensure(self) -> None:
        """Chains, jumps and the bridge-wide loopback hairpin; idempotent."""
        jumps = self._base_jumps()
        for chain, table in ((NAT_DNAT, "nat"), (NAT_HAIRPIN, "nat"), (FILTER_PORTS, "filter")):
            ensure_chain(table, chain)
            for builtin, rule in jumps[chain]:
                ensure_rule(table, builtin, rule, insert=True)
        ensure_rule("nat", NAT_HAIRPIN, self._loopback_rule())
        with contextlib.suppress(FileNotFoundError):
            write_sysctl(f"net.ipv4.conf.{self.bridge}.route_localnet", "1")

    def teardown(self) -> None:
        """Remove the bridge-wide rules and any chain left empty (allocations are kept)."""
        delete_rule("nat", NAT_HAIRPIN, self._loopback_rule())
        jumps = self._base_jumps()
        for chain, table in ((NAT_DNAT, "nat"), (NAT_HAIRPIN, "nat"), (FILTER_PORTS, "filter")):
            drop_chain_if_empty(table, chain, jumps[chain])

    def _rules(self, rec: dict) -> list[tuple[str, str, list[str]]]:
        proto = rec["proto"]
        cip, cport, hport = rec["container_ip"], str(rec["container_port"]), str(rec["host_port"])
        dst = [] if rec["host_ip"] == ANY_V4 else ["-d", f"{rec['host_ip']}/32"]
        return [
            (
                "nat",
                NAT_DNAT,
                [*dst, "-p", proto, "-m", proto, "--dport", hport, "-j", "DNAT"]
                + ["--to-destination", f"{cip}:{cport}"],
            ),
            (
                "nat",
                NAT_HAIRPIN,
                ["-s", f"{cip}/32", "-d", f"{cip}/32", "-p", proto, "-m", proto]
                + ["--dport", cport, "-j", "MASQUERADE"],
            ),
            (
                "filter",
                FILTER_PORTS,
                ["-d", f"{cip}/32", "!", "-i", self.bridge, "-o", self.bridge, "-p", proto]
                + ["-m", proto, "--dport", cport, "-j", "ACCEPT"],
            ),
        ]

    def _program(self, rec: dict) -> None:
        for table, chain, rule in self._rules(rec):
            ensure_rule(table, chain, rule)

    def _unprogram(self, rec: dict) -> None:
        for table, chain, rule in self._rules(rec):
            delete_rule(table, chain, rule)
