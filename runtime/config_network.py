"""The network part of a create body: network-mode conflicts (`validateNetMode`), published
ports (`nat` port specs), `--add-host` entries and `NetworkingConfig` endpoints.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from proto.docker.errors import InvalidParameter, go_quote
from runtime.config_fields import get_bool, get_dict, get_str, type_error

BUILTIN_NETWORK_MODES = ("default", "bridge", "host", "none")


def is_user_defined_network(mode: str) -> bool:
    return mode not in BUILTIN_NETWORK_MODES and not mode.startswith("container:") and mode != ""


def validate_net_mode(body: dict[str, Any], hc: dict[str, Any]) -> None:
    """runconfig validateNetMode (decode time, before anything else)."""
    mode = get_str(hc, "NetworkMode")
    parts = mode.split(":")
    if parts[0] == "container" and (len(parts) < 2 or parts[1] == ""):
        raise InvalidParameter("Invalid network mode: invalid container format container:<name|id>")
    is_container = mode.startswith("container:")
    conflicts = [
        (is_container and get_str(body, "Hostname") != "", "hostname and the network mode"),
        (
            is_container and bool(hc.get("Links")),
            "container type network can't be used with links. "
            "This would result in undefined behavior",
        ),
        (is_container and bool(hc.get("Dns")), "dns and the network mode"),
        (
            is_container and bool(hc.get("ExtraHosts")),
            "custom host-to-IP mapping and the network mode",
        ),
        (
            (is_container or mode == "host") and get_str(body, "MacAddress") != "",
            "mac-address and the network mode",
        ),
        (
            is_container and (bool(hc.get("PortBindings")) or get_bool(hc, "PublishAllPorts")),
            "port publishing and the container type network mode",
        ),
        (
            is_container and bool(body.get("ExposedPorts")),
            "port exposing and the container type network mode",
        ),
        (
            get_str(hc, "UTSMode") == "host" and get_str(body, "Hostname") != "",
            "hostname and the UTS mode",
        ),
        (
            mode == "host" and bool(hc.get("Links")),
            "host type networking can't be used with links. "
            "This would result in undefined behavior",
        ),
    ]
    for hit, message in conflicts:
        if hit:
            raise InvalidParameter(f"conflicting options: {message}")


def _split_proto_port(raw: str) -> tuple[str, str]:
    """nat.SplitProtoPort: `80/udp` → (udp, 80); `80` → (tcp, 80); `` → ("", "")."""
    parts = raw.split("/")
    if not raw or not parts[0]:
        return "", ""
    if len(parts) == 1:
        return "tcp", raw
    if not parts[1]:
        return "tcp", parts[0]
    return parts[1], parts[0]


def _is_uint16(s: str) -> bool:
    return bool(re.fullmatch(r"\d+", s)) and int(s) <= 65535


def _valid_host_port(raw: str) -> bool:
    """nat.NewPort(nat.SplitProtoPort(hostPort)): empty, a port, or an ascending range."""
    _, port = _split_proto_port(raw)
    if port == "":
        return True
    if "-" not in port:
        return _is_uint16(port)
    parts = port.split("-")
    if not (_is_uint16(parts[0]) and _is_uint16(parts[1])):
        return False
    return int(parts[1]) >= int(parts[0])


def normalize_port(key: str) -> str:
    proto, port = _split_proto_port(key)
    return f"{port}/{proto}" if port else key


def port_bindings(hc: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """validatePortBindings, then keys normalized to `port/proto`."""
    raw = get_dict(hc, "PortBindings") or {}
    out: dict[str, list[dict[str, str]]] = {}
    for key, bindings in raw.items():
        _, port = _split_proto_port(key)
        if port and not _is_uint16(port):
            raise InvalidParameter(f"invalid port specification: {go_quote(port)}")
        normalized = []
        for b in bindings or []:
            b = b or {}
            if not isinstance(b, dict):
                raise type_error(b, "nat.PortBinding")
            host_port = get_str(b, "HostPort")
            if not _valid_host_port(host_port):
                raise InvalidParameter(f"invalid port specification: {go_quote(host_port)}")
            normalized.append({"HostIp": get_str(b, "HostIp"), "HostPort": host_port})
        out[normalize_port(key)] = normalized
    return out


def validate_extra_host(val: str) -> tuple[str, str]:
    """opts.ValidateExtraHost: `host:ip` split on the first colon; `host-gateway` allowed."""
    name, sep, ip = val.partition(":")
    if not sep or not name:
        raise InvalidParameter(f"bad format for add-host: {go_quote(val)}")
    if ip != "host-gateway":
        try:
            ipaddress.ip_address(ip.strip())
        except ValueError:
            raise InvalidParameter(f"invalid IP address in add-host: {go_quote(ip)}") from None
    return name, ip


def verify_networking_config(nc: dict[str, Any]) -> None:
    endpoints = get_dict(nc, "EndpointsConfig") or {}
    if len(endpoints) > 1:
        raise InvalidParameter(
            "Container cannot be connected to network endpoints: " + ", ".join(endpoints)
        )
    for name, ep in endpoints.items():
        if ep is None:
            raise InvalidParameter(f"no EndpointSettings for {name}")
        ipam = ep.get("IPAMConfig") or {}
        v4 = ipam.get("IPv4Address") or ""
        v6 = ipam.get("IPv6Address") or ""
        if v4 and not _is_ip(v4, 4):
            raise InvalidParameter(f"invalid IPv4 address: {v4}")
        if v6 and not _is_ip(v6, 6):
            raise InvalidParameter(f"invalid IPv6 address: {v6}")


def _is_ip(s: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(s).version == version
    except ValueError:
        return False
