"""A container's durable record: what it was created with and what state it is in.

One JSON file per container bundle, written atomically, so a runtime that crashed at any point
finds a consistent record on start and can reconcile the kernel's state against it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from runtime.fileio import write_atomic


@dataclass
class NetState:
    mode: str = "bridge"
    ip: str = ""
    prefix: int = 0
    gateway: str = ""
    mac: str = ""
    host_veth: str = ""
    netns_path: str = ""
    ports: dict[str, list[dict[str, str]]] = field(default_factory=dict)


@dataclass
class ContainerRecord:
    id: str
    name: str
    created_ns: int
    image_id: str
    image_ref: str
    body: dict[str, Any]
    status: str = "created"
    pid: int = 0
    shim_pid: int = 0
    exit_code: int = 0
    error: str = ""
    oom_killed: bool = False
    # Killed by its shim's node fence (runtime/fence.py): never restarted by this runtime.
    fenced: bool = False
    started_ns: int = 0
    finished_ns: int = 0
    restart_count: int = 0
    manually_stopped: bool = False
    has_been_started: bool = False
    last_delay_s: float = 0.0
    net: NetState = field(default_factory=NetState)
    exec_ids: list[str] = field(default_factory=list)
    # `--net container:X` takes X's hostname and domainname at start, as dockerd rewrites
    # Config.Hostname/Domainname; empty otherwise.
    joined_hostname: str = ""
    joined_domainname: str = ""
    # `--volumes-from`: the other containers' mount points, resolved once at create as dockerd
    # does (Docker's inspect shape).
    volumes_from: list[dict[str, Any]] = field(default_factory=list)
    # State.Health in Docker's shape (runtime/health.py); None without a healthcheck.
    health: dict[str, Any] | None = None

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused")

    def save(self, bundle: str) -> None:
        write_atomic(os.path.join(bundle, "config.json"), json.dumps(asdict(self)).encode())

    @classmethod
    def load(cls, bundle: str) -> ContainerRecord:
        with open(os.path.join(bundle, "config.json")) as f:
            data = json.load(f)
        net = NetState(**data.pop("net", {}))
        return cls(net=net, **data)
