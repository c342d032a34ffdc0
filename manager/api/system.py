"""`/_ping`, `/version` and `/info`: one engine's answers, describing the whole cluster."""

from __future__ import annotations

import os
import platform
import socket
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from manager.cluster import Cluster, natural_key
from manager.container_index import StateCounts
from manager.versioning import API_VERSION, MIN_API_VERSION, server_version, versioned
from proto.records_pb2 import NodeRecord

CLUSTER_KEY: web.AppKey[Cluster] = web.AppKey("cluster", Cluster)
SETTINGS_KEY: web.AppKey[dict[str, Any]] = web.AppKey("settings", dict)

PING_HEADERS = {
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
    "Api-Version": API_VERSION,
    "Ostype": "linux",
    "Docker-Experimental": "false",
}


async def ping(request: web.Request) -> web.Response:
    body = "" if request.method == "HEAD" else "OK"
    return web.Response(text=body, content_type="text/plain", headers=PING_HEADERS)


def _go_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


async def version(request: web.Request) -> web.Response:
    ver = server_version()
    details = {
        "ApiVersion": API_VERSION,
        "Arch": _go_arch(),
        "BuildTime": "",
        "Experimental": "false",
        "GitCommit": "",
        "GoVersion": f"python{platform.python_version()}",
        "KernelVersion": os.uname().release,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
    }
    return web.json_response(
        {
            "Platform": {"Name": "flotilla"},
            "Components": [{"Name": "flotilla", "Version": ver, "Details": details}],
            "Version": ver,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": details["GoVersion"],
            "Os": "linux",
            "Arch": _go_arch(),
            "KernelVersion": details["KernelVersion"],
            "BuildTime": "",
        }
    )


def bytes_size(n: float) -> str:
    """go-units BytesSize: binary units, 4 significant digits ("0 B", "20 MiB", "2.056 GiB")."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.4g} {units[i]}"


def _reserved(cluster: Cluster, rec: NodeRecord) -> tuple[float, int]:
    """(CPUs, memory bytes) reserved by the node's containers, swarm's CpuShares-as-CPUs."""
    cpus = 0.0
    memory = 0
    for _, _, placed in cluster.containers_on(rec.id):
        if placed is None:
            continue
        cpus += placed.cpu_shares or placed.nano_cpus / 1e9
        memory += placed.memory
    return cpus, memory


def _containers(cluster: Cluster, rec: NodeRecord, state: str) -> str:
    counts = cluster.state_counts(rec.id)
    if state != "Healthy":  # Swarm prints the bare count for an engine it cannot ask
        return str(counts.total)
    return (
        f"{counts.total} ({counts.running} Running, "
        f"{counts.paused} Paused, {counts.stopped} Stopped)"
    )


def _cpus(n: float) -> str:
    return str(int(n)) if n == int(n) else f"{n:g}"


def node_state(cluster: Cluster, node_id: str) -> str:
    """Classic Swarm's engine states: a live lease whose agent answered is Healthy; a live
    lease not yet answered is Pending (Swarm validates a new engine first); a member without
    a live lease is Unhealthy."""
    if node_id not in cluster.nodes:
        return "Unhealthy"
    return "Healthy" if node_id in cluster.validated else "Pending"


def listed_nodes(cluster: Cluster) -> list[NodeRecord]:
    """Every live node and every member without a live lease, sorted as Swarm sorts."""
    recs = {rec.id: rec for rec in cluster.members.values()}
    recs.update(cluster.nodes)
    return sorted(recs.values(), key=lambda n: (natural_key(n.name), n.id))


def system_status(cluster: Cluster, settings: dict[str, Any]) -> list[list[str]]:
    nodes = listed_nodes(cluster)
    rows = [
        ["Role", "primary"],
        ["Strategy", settings.get("strategy", "spread")],
        ["Filters", ", ".join(settings.get("filters", []))],
        ["Nodes", str(len(nodes))],
    ]
    for rec in nodes:
        state = node_state(cluster, rec.id)
        cpus, memory = _reserved(cluster, rec)
        labels = dict(rec.labels)
        labels.update(
            {
                "kernelversion": rec.kernel_version,
                "operatingsystem": rec.operating_system,
                "ostype": rec.os_type or "linux",
                "storagedriver": rec.storage_driver,
            }
        )
        updated = datetime.fromtimestamp(rec.updated_at_ns / 1e9 if rec.updated_at_ns else 0, UTC)
        rows += [
            [" " + rec.name, rec.addr],
            ["  └ ID", f"{rec.id}|{rec.addr}"],
            ["  └ Status", state],
            ["  └ Containers", _containers(cluster, rec, state)],
            ["  └ Reserved CPUs", f"{_cpus(cpus)} / {rec.ncpu}"],
            ["  └ Reserved Memory", f"{bytes_size(memory)} / {bytes_size(rec.memory_bytes)}"],
            ["  └ Labels", ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))],
            ["  └ UpdatedAt", updated.strftime("%Y-%m-%dT%H:%M:%SZ")],
            ["  └ ServerVersion", rec.version],
        ]
    return rows


async def info(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    settings = request.app[SETTINGS_KEY]
    nodes = cluster.sorted_nodes()
    # Each node's Images is the length of its `docker images`: its images record says it.
    await cluster.node_images.catch_up()
    images = cluster.node_images.count(n.id for n in nodes)
    counts = sum((cluster.state_counts(n.id) for n in nodes), StateCounts())
    uname = os.uname()
    body: dict[str, Any] = {
        "ID": settings.get("id", ""),
        "Containers": counts.total,
        "ContainersRunning": counts.running,
        "ContainersPaused": counts.paused,
        "ContainersStopped": counts.stopped,
        "Images": images,
        "Driver": "",
        "DriverStatus": None,
        "SystemStatus": system_status(cluster, settings),
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"], "Log": []},
        "MemoryLimit": True,
        "SwapLimit": True,
        "KernelMemory": True,
        "KernelMemoryTCP": True,
        "CpuCfsPeriod": True,
        "CpuCfsQuota": True,
        "CPUShares": True,
        "CPUSet": True,
        "PidsLimit": True,
        "IPv4Forwarding": True,
        "BridgeNfIptables": True,
        "BridgeNfIp6tables": True,
        "Debug": False,
        "NFd": 0,
        "OomKillDisable": True,
        "NGoroutines": 0,
        "SystemTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "NEventsListener": 0,
        "KernelVersion": uname.release,
        "OperatingSystem": "linux",
        "OSType": "linux",
        "Architecture": platform.machine(),
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": [],
            "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": ["127.0.0.0/8"],
            "IndexConfigs": {},
            "Mirrors": [],
        },
        "NCPU": sum(n.ncpu for n in nodes),
        "MemTotal": sum(n.memory_bytes for n in nodes),
        "DockerRootDir": "",
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": socket.gethostname(),
        "Labels": [],
        "ExperimentalBuild": False,
        "ServerVersion": server_version(),
        "Runtimes": {"runc": {"path": "flotilla-shim"}},
        "DefaultRuntime": "runc",
        "Swarm": {
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": False,
            "Error": "",
            "RemoteManagers": None,
        },
        "LiveRestoreEnabled": False,
        "Isolation": "",
        "InitBinary": "",
        "SecurityOptions": [],
        "Warnings": None,
    }
    return web.json_response(body)


def add_routes(app: web.Application) -> None:
    for path in versioned("/_ping"):
        app.router.add_route("GET", path, ping)
        app.router.add_route(
            "HEAD",
            path,
            ping,
        )
    for path in versioned("/version"):
        app.router.add_get(path, version)
    for path in versioned("/info"):
        app.router.add_get(path, info)
