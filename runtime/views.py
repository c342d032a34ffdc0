"""Docker's JSON views of a container: `docker inspect` and one `docker ps` row."""

from __future__ import annotations

import os
import shlex
import time
from typing import TYPE_CHECKING, Any

from proto.docker.errors import NotFound
from proto.ps_status import status_text
from runtime import config_inspect, container_mounts, health, links
from runtime.config_network import is_user_defined_network
from runtime.config_types import ContainerSpec
from runtime.record import ContainerRecord
from runtime.timefmt import rfc3339nano
from runtime.user_networks import endpoint_view

if TYPE_CHECKING:
    from runtime.containers import Runtime


def _state(rt: Runtime, rec: ContainerRecord) -> dict[str, Any]:
    state = {
        "Status": rec.status,
        "Running": rec.running,
        "Paused": rec.status == "paused",
        "Restarting": rec.status == "restarting",
        "OOMKilled": rec.oom_killed,
        "Dead": rec.status == "dead",
        "Pid": rec.pid if rec.running else 0,
        "ExitCode": rec.exit_code,
        "Error": rec.error,
        "StartedAt": rfc3339nano(rec.started_ns),
        "FinishedAt": rfc3339nano(rec.finished_ns),
    }
    if rec.health is not None:  # dockerd leaves Health out without a healthcheck
        state["Health"] = rec.health
    return state


def _network_entry(rec: ContainerRecord, name: str) -> dict[str, Any]:
    net = rec.net
    return {
        "IPAMConfig": None,
        "Links": None,
        "Aliases": None,
        "NetworkID": "",
        "EndpointID": rec.id if net.host_veth else "",
        "Gateway": net.gateway,
        "IPAddress": net.ip if net.host_veth else "",
        "IPPrefixLen": net.prefix,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "MacAddress": net.mac,
        "DriverOpts": None,
    }


def _network_name(rec: ContainerRecord) -> str:
    mode = rec.net.mode
    return "bridge" if mode in ("default", "bridge") else mode


def _networks(rt: Runtime, rec: ContainerRecord) -> dict[str, Any]:
    """NetworkSettings.Networks: the built-in network of the mode, if any, and the user
    networks; keys sorted as Go marshals a map."""
    networks = {}
    mode = rec.net.mode
    if not mode.startswith("container:") and not is_user_defined_network(mode):
        networks[_network_name(rec)] = _network_entry(rec, _network_name(rec))
    if rec.networks:
        hostname = rt.spec(rec).hostname
        for ep in rec.networks:
            networks[ep.network] = endpoint_view(rec, ep, hostname)
    return dict(sorted(networks.items()))


def _ports(rt: Runtime, rec: ContainerRecord, spec: ContainerSpec) -> dict[str, Any]:
    ports: dict[str, Any] = {p: None for p in spec.exposed_ports}
    if rec.running:
        for port, bindings in rec.net.ports.items():
            ports[port] = bindings
    return ports


def _public_mounts(mounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("Type", "Name", "Source", "Destination", "Driver", "Mode", "RW", "Propagation")
    return [{k: m[k] for k in keep if k in m} for m in mounts if not m.get("Hidden")]


def _etc_dir(rt: Runtime, rec: ContainerRecord) -> str:
    """Where the container's /etc/hosts, hostname and resolv.conf live: `--net container:X`
    shares X's files, and dockerd shows X's paths."""
    mode = rec.net.mode
    if mode.startswith("container:"):
        try:
            return rt.paths.container(rt.get(mode.split(":", 1)[1]).id)
        except NotFound:
            pass
    return rt.paths.container(rec.id)


def _config(rec: ContainerRecord, spec: ContainerSpec) -> dict[str, Any]:
    config = config_inspect.inspect_config(spec)
    if rec.joined_hostname:  # `--net container:X`: dockerd rewrites these to X's at start
        config["Hostname"] = rec.joined_hostname
        config["Domainname"] = rec.joined_domainname
    return config


def _host_config(rt: Runtime, rec: ContainerRecord, spec: ContainerSpec) -> dict[str, Any]:
    """dockerd shows each link from its link graph as `/<target>:/<this container>/<alias>`
    (current names; a removed target's link is gone), null without links."""
    host_config = config_inspect.inspect_host_config(spec)
    shown = []
    for link in spec.host_config.links:
        target_ref, alias = links.parse_link(link)
        try:
            target = rt.get(target_ref)
        except NotFound:
            continue
        shown.append(f"/{target.name}:/{rec.name}/{alias}")
    host_config["Links"] = sorted(shown) or None
    return host_config


def inspect(rt: Runtime, rec: ContainerRecord) -> dict[str, Any]:
    spec = rt.spec(rec)
    bundle = rt.paths.container(rec.id)
    lowers = rt.lowerdirs(rec)
    net = rec.net
    networks = _networks(rt, rec)
    return {
        "Id": rec.id,
        "Created": rfc3339nano(rec.created_ns),
        "Path": spec.args[0] if spec.args else "",
        "Args": spec.args[1:],
        "State": _state(rt, rec),
        "Image": rec.image_id,
        "ResolvConfPath": os.path.join(_etc_dir(rt, rec), "resolv.conf"),
        "HostnamePath": os.path.join(_etc_dir(rt, rec), "hostname"),
        "HostsPath": os.path.join(_etc_dir(rt, rec), "hosts"),
        "LogPath": rt.log_path(rec),
        "Name": f"/{rec.name}",
        "RestartCount": rec.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": list(rec.exec_ids) or None,
        "HostConfig": _host_config(rt, rec, spec),
        "GraphDriver": {
            "Data": {
                "LowerDir": ":".join(lowers),
                "MergedDir": os.path.join(bundle, "rootfs"),
                "UpperDir": os.path.join(bundle, "upper"),
                "WorkDir": os.path.join(bundle, "work"),
            },
            "Name": "overlay2",
        },
        "Mounts": _public_mounts(container_mounts.mounts(rt, rec, spec)),
        "Config": _config(rec, spec),
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": rec.id if net.netns_path else "",
            "HairpinMode": False,
            "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "Ports": _ports(rt, rec, spec),
            "SandboxKey": net.netns_path,
            "SecondaryIPAddresses": None,
            "SecondaryIPv6Addresses": None,
            "EndpointID": rec.id if net.host_veth else "",
            "Gateway": net.gateway,
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "IPAddress": net.ip if net.host_veth else "",
            "IPPrefixLen": net.prefix,
            "IPv6Gateway": "",
            "MacAddress": net.mac,
            "Networks": networks,
        },
    }


def _status_text(rec: ContainerRecord) -> str:
    return status_text(
        rec.status,
        rec.started_ns,
        rec.finished_ns,
        rec.exit_code,
        health.status_of(rec.health),
        time.time_ns(),
    )


def summary(rt: Runtime, rec: ContainerRecord) -> dict[str, Any]:
    """One entry of GET /containers/json."""
    spec = rt.spec(rec)
    ports = []
    if rec.running:
        for port, bindings in sorted(rec.net.ports.items()):
            number, _, proto = port.partition("/")
            for b in bindings or []:
                ports.append(
                    {
                        "IP": b.get("HostIp") or "0.0.0.0",
                        "PrivatePort": int(number),
                        "PublicPort": int(b["HostPort"]),
                        "Type": proto or "tcp",
                    }
                )
    networks = _networks(rt, rec)
    return {
        "Id": rec.id,
        "Names": [f"/{rec.name}"],
        "Image": rec.image_ref,
        "ImageID": rec.image_id,
        "Command": " ".join(shlex.quote(a) if " " in a else a for a in spec.args),
        "Created": rec.created_ns // 1_000_000_000,
        "Ports": ports,
        "Labels": dict(spec.labels),
        "State": rec.status,
        "Status": _status_text(rec),
        "HostConfig": {
            "NetworkMode": (rec.body.get("HostConfig") or {}).get("NetworkMode") or "default"
        },
        "NetworkSettings": {"Networks": networks},
        "Mounts": _public_mounts(container_mounts.mounts(rt, rec, spec)),
        # API 1.52's summary of State.Health ("none" without a healthcheck); the manager's
        # `health` filter reads it and drops it for the older API versions it serves.
        "Health": {
            "Status": health.status_of(rec.health),
            "FailingStreak": int((rec.health or {}).get("FailingStreak") or 0),
        },
    }
