"""A container's durable record: what it was created with and what state it is in.

One JSON file per container bundle, written atomically, so a runtime that crashed at any point
finds a consistent record on start and can reconcile the kernel's state against it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from proto.docker.errors import Conflict, NotFound
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
    # The bridge the published ports go through ("" = the default bridge): a user network's
    # when the container is only on user networks.
    ports_bridge: str = ""


@dataclass
class Endpoint:
    """One user-defined (overlay) network the container is configured on, in connect order,
    and while it runs its interface there."""

    network: str  # the network's name
    spec: dict[str, Any]  # the OverlaySpec's fields, to undo an attachment without a lookup
    aliases: list[str] = field(default_factory=list)  # --network-alias, as given
    ipam: dict[str, Any] | None = None  # IPAMConfig as given (`--ip`)
    driver_opts: dict[str, str] | None = None
    # Shown with the network's ID and the DNS aliases once started or connected (dockerd
    # fills them then; a created container shows the create body's endpoint settings).
    activated: bool = False
    last_ip: str = ""  # the address it had the last time: asked for again at the next start
    # While running:
    endpoint_id: str = ""
    ip: str = ""
    mac: str = ""
    ifname: str = ""
    host_veth: str = ""
    default_route: bool = False

    @property
    def network_id(self) -> str:
        return str(self.spec["id"])

    @property
    def wanted_ip(self) -> str:
        return str((self.ipam or {}).get("IPv4Address") or "")

    def clear_running(self) -> None:
        self.endpoint_id = self.ip = self.mac = self.ifname = self.host_veth = ""
        self.default_route = False


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
    # While running, the host directory bound as its /dev/shm that `--ipc container:` joiners
    # bind too (dockerd's ShmPath): its own host tmpfs (shareable), a donor's, or the host's;
    # "" when it is not shareable (private, none).
    shm_path: str = ""
    # `--volumes-from`: the other containers' mount points, resolved once at create as dockerd
    # does (Docker's inspect shape).
    volumes_from: list[dict[str, Any]] = field(default_factory=list)
    # State.Health in Docker's shape (runtime/health.py); None without a healthcheck.
    health: dict[str, Any] | None = None
    # User-defined networks (runtime/user_networks.py), in connect order.
    networks: list[Endpoint] = field(default_factory=list)

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
        networks = [Endpoint(**ep) for ep in data.pop("networks", [])]
        return cls(net=net, networks=networks, **data)


def find_record(records: dict[str, ContainerRecord], ref: str) -> ContainerRecord:
    """Resolve a full ID, a name (with or without '/'), or a unique ID prefix."""
    rec = records.get(ref)
    if rec is not None:
        return rec
    name = ref.lstrip("/")
    for rec in records.values():
        if rec.name == name:
            return rec
    if ref and re.fullmatch(r"[0-9a-f]+", ref):
        found = [r for r in records.values() if r.id.startswith(ref)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise NotFound(f"Multiple IDs found with provided prefix: {ref}")
    raise NotFound(f"No such container: {ref}")


def refuse_removal(rec: ContainerRecord) -> None:
    """dockerd's refusal to remove a running (or paused) container without force."""
    if rec.status == "paused":
        raise Conflict(
            f"You cannot remove a paused container {rec.id}. Unpause and then stop "
            "the container before attempting removal or force remove"
        )
    raise Conflict(
        f"You cannot remove a running container {rec.id}. Stop the container "
        "before attempting removal or force remove"
    )


def event_attrs(rec: ContainerRecord, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A container event's Actor.Attributes as dockerd sets them: name, image, the labels."""
    attrs = {"name": rec.name, "image": rec.image_ref}
    labels = (rec.body.get("Labels") or {}) if isinstance(rec.body, dict) else {}
    attrs.update({k: str(v) for k, v in labels.items()})
    attrs.update(extra or {})
    return attrs
