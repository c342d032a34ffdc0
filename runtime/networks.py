"""dockerd's views of the node's built-in networks: `bridge` (the runtime's Bridge), `host`, `none`.

Each network's ID and creation time are made once and kept in `<network dir>/networks.json`, so
they stay the same across agent restarts, as in dockerd's local store; the data root is per
node, so no two nodes share an ID. User-defined networks do not exist yet (overlay networks will
bring them), so these three are all a node has.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterable
from typing import Any

from runtime.fileio import write_atomic
from runtime.network import Bridge
from runtime.record import ContainerRecord
from runtime.timefmt import rfc3339nano

BUILTIN = ("bridge", "host", "none")
DRIVERS = {"bridge": "bridge", "host": "host", "none": "null"}
STORE = "networks.json"


class BuiltinNetworks:
    """The node's three networks as dockerd shows them. Thread-safe (called from workers)."""

    def __init__(self, data_dir: str, bridge: Bridge) -> None:
        self.path = os.path.join(data_dir, STORE)
        self.bridge = bridge
        self._lock = threading.Lock()
        self._identities: dict[str, dict[str, Any]] | None = None

    def identities(self) -> dict[str, dict[str, Any]]:
        """{name: {"Id": 64 hex, "Created": ns}}, made on first use and kept on disk."""
        with self._lock:
            if self._identities is None:
                self._identities = self._load() or self._create()
            return self._identities

    def _load(self) -> dict[str, dict[str, Any]] | None:
        try:
            with open(self.path) as f:
                doc = json.load(f)
        except (FileNotFoundError, ValueError):
            return None
        ok = isinstance(doc, dict) and all(
            isinstance(doc.get(n), dict) and {"Id", "Created"} <= doc[n].keys() for n in BUILTIN
        )
        return doc if ok else None

    def _create(self) -> dict[str, dict[str, Any]]:
        now = time.time_ns()
        doc = {name: {"Id": secrets.token_hex(32), "Created": now} for name in BUILTIN}
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        # Atomic: a crash never leaves half an identity.
        write_atomic(self.path, json.dumps(doc).encode())
        return doc

    def views(self, records: Iterable[ContainerRecord], verbose: bool) -> list[dict[str, Any]]:
        """GET /networks entries; `verbose` fills `Containers` as GET /networks/{id} does
        (dockerd's list leaves it empty)."""
        attached: dict[str, dict[str, Any]] = {name: {} for name in BUILTIN}
        if verbose:
            for rec in records:
                name = _attached_to(rec)
                if name is not None:
                    attached[name][rec.id] = _endpoint(rec)
        ids = self.identities()
        return [self._view(name, ids[name], attached[name]) for name in BUILTIN]

    def _view(
        self, name: str, identity: dict[str, Any], containers: dict[str, Any]
    ) -> dict[str, Any]:
        # Key order and shape as dockerd 20.10's (dockerd-golden/networks.json).
        is_bridge = name == "bridge"
        return {
            "Name": name,
            "Id": identity["Id"],
            "Created": rfc3339nano(int(identity["Created"])),
            "Scope": "local",
            "Driver": DRIVERS[name],
            "EnableIPv6": False,
            "IPAM": {
                "Driver": "default",
                "Options": None,
                "Config": [{"Subnet": self.bridge.subnet}] if is_bridge else [],
            },
            "Internal": False,
            "Attachable": False,
            "Ingress": False,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Containers": containers,
            "Options": self._bridge_options() if is_bridge else {},
            "Labels": {},
        }

    def _bridge_options(self) -> dict[str, str]:
        # What runtime.network.Bridge really does: ICC and masquerading rules, default MTU.
        return {
            "com.docker.network.bridge.default_bridge": "true",
            "com.docker.network.bridge.enable_icc": "true",
            "com.docker.network.bridge.enable_ip_masquerade": "true",
            "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
            "com.docker.network.bridge.name": self.bridge.name,
            "com.docker.network.driver.mtu": "1500",
        }


def _attached_to(rec: ContainerRecord) -> str | None:
    """The built-in network the container has an endpoint on now, if any.

    As in dockerd, only a running (or paused) container has one; `container:` modes share
    another container's endpoint and show on no network. A veth can only be on the bridge.
    """
    if not rec.running:
        return None
    if rec.net.host_veth:
        return "bridge"
    return rec.net.mode if rec.net.mode in ("host", "none") else None


def _endpoint(rec: ContainerRecord) -> dict[str, Any]:
    net = rec.net
    return {
        "Name": rec.name,
        # The runtime's endpoint is the container itself, as container inspect shows it.
        "EndpointID": rec.id,
        "MacAddress": net.mac,
        "IPv4Address": f"{net.ip}/{net.prefix}" if net.ip else "",
        "IPv6Address": "",
    }
