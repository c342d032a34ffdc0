"""Docker's inspect `Config` and `HostConfig` of a container, in Go's field order with the
defaults dockerd fills in.
"""

from __future__ import annotations

import copy
from typing import Any

from runtime.config_fields import get_bool, get_int, get_str, get_strlist
from runtime.config_types import (
    DEFAULT_SHM_SIZE,
    MASKED_PATHS,
    READONLY_PATHS,
    ContainerSpec,
    HostConfig,
)


def config_json(body: dict[str, Any], merged: dict[str, Any], hostname: str) -> dict[str, Any]:
    """Docker's inspect `Config` (container.Config field order, omitempty honoured)."""
    out: dict[str, Any] = {
        "Hostname": hostname,
        "Domainname": get_str(body, "Domainname"),
        "User": merged["User"],
        "AttachStdin": get_bool(body, "AttachStdin"),
        "AttachStdout": get_bool(body, "AttachStdout"),
        "AttachStderr": get_bool(body, "AttachStderr"),
    }
    if merged["ExposedPorts"]:
        out["ExposedPorts"] = {k: {} for k in merged["ExposedPorts"]}
    out.update(
        {
            "Tty": get_bool(body, "Tty"),
            "OpenStdin": get_bool(body, "OpenStdin"),
            "StdinOnce": get_bool(body, "StdinOnce"),
            "Env": merged["Env"],
            "Cmd": merged["Cmd"],
        }
    )
    if merged["Healthcheck"] is not None:
        out["Healthcheck"] = merged["Healthcheck"]
    if merged["ArgsEscaped"]:
        out["ArgsEscaped"] = True
    out["Image"] = get_str(body, "Image")
    out["Volumes"] = {k: {} for k in merged["Volumes"]} if merged["Volumes"] else None
    out["WorkingDir"] = merged["WorkingDir"]
    out["Entrypoint"] = merged["Entrypoint"]
    if get_bool(body, "NetworkDisabled"):
        out["NetworkDisabled"] = True
    if get_str(body, "MacAddress"):
        out["MacAddress"] = get_str(body, "MacAddress")
    out["OnBuild"] = get_strlist(body, "OnBuild")
    out["Labels"] = merged["Labels"]
    if merged["StopSignal"]:
        out["StopSignal"] = merged["StopSignal"]
    if body.get("StopTimeout") is not None:
        out["StopTimeout"] = get_int(body, "StopTimeout")
    if get_strlist(body, "Shell"):
        out["Shell"] = get_strlist(body, "Shell")
    return out


# (key, default) in HostConfig's JSON order; None where Go has a nil slice/map/pointer.
_HOST_CONFIG_KEYS: list[tuple[str, Any]] = [
    ("Binds", None),
    ("ContainerIDFile", ""),
    ("LogConfig", None),
    ("NetworkMode", None),
    ("PortBindings", None),
    ("RestartPolicy", None),
    ("AutoRemove", False),
    ("VolumeDriver", ""),
    ("VolumesFrom", None),
    ("CapAdd", None),
    ("CapDrop", None),
    ("CgroupnsMode", "host"),
    ("Dns", None),
    ("DnsOptions", None),
    ("DnsSearch", None),
    ("ExtraHosts", None),
    ("GroupAdd", None),
    ("IpcMode", "private"),
    ("Cgroup", ""),
    ("Links", None),
    ("OomScoreAdj", 0),
    ("PidMode", ""),
    ("Privileged", False),
    ("PublishAllPorts", False),
    ("ReadonlyRootfs", False),
    ("SecurityOpt", None),
    ("StorageOpt", "omit"),
    ("Tmpfs", "omit"),
    ("UTSMode", ""),
    ("UsernsMode", ""),
    ("ShmSize", DEFAULT_SHM_SIZE),
    ("Sysctls", "omit"),
    ("Runtime", "runc"),
    ("ConsoleSize", [0, 0]),
    ("Isolation", ""),
    ("CpuShares", 0),
    ("Memory", 0),
    ("NanoCpus", 0),
    ("CgroupParent", ""),
    ("BlkioWeight", 0),
    ("BlkioWeightDevice", None),
    ("BlkioDeviceReadBps", None),
    ("BlkioDeviceWriteBps", None),
    ("BlkioDeviceReadIOps", None),
    ("BlkioDeviceWriteIOps", None),
    ("CpuPeriod", 0),
    ("CpuQuota", 0),
    ("CpuRealtimePeriod", 0),
    ("CpuRealtimeRuntime", 0),
    ("CpusetCpus", ""),
    ("CpusetMems", ""),
    ("Devices", None),
    ("DeviceCgroupRules", None),
    ("DeviceRequests", None),
    ("KernelMemory", 0),
    ("KernelMemoryTCP", 0),
    ("MemoryReservation", 0),
    ("MemorySwap", 0),
    ("MemorySwappiness", None),
    ("OomKillDisable", False),
    ("PidsLimit", None),
    ("Ulimits", None),
    ("CpuCount", 0),
    ("CpuPercent", 0),
    ("IOMaximumIOps", 0),
    ("IOMaximumBandwidth", 0),
    ("Mounts", "omit"),
    ("MaskedPaths", None),
    ("ReadonlyPaths", None),
    ("Init", "omit"),
]


def host_config_json(hc: dict[str, Any], host: HostConfig) -> dict[str, Any]:
    """Docker's inspect `HostConfig`: the body echoed with the defaults dockerd fills in."""
    out: dict[str, Any] = {}
    for key, default in _HOST_CONFIG_KEYS:
        value = hc.get(key)
        if default == "omit":
            if value or (key == "Init" and value is not None):
                out[key] = value
            continue
        if value is None or (value in ("", 0) and default not in (None, "", 0, False)):
            value = copy.deepcopy(default)
        out[key] = value
    rp = host.restart_policy
    out["NetworkMode"] = get_str(hc, "NetworkMode") or "default"
    out["LogConfig"] = copy.deepcopy(host.log_config)
    out["RestartPolicy"] = {"Name": rp.name, "MaximumRetryCount": rp.maximum_retry_count}
    out["MemorySwap"] = host.resources.memory_swap
    out["PidsLimit"] = host.resources.pids_limit
    if hc.get("MaskedPaths") is None and not host.privileged:
        out["MaskedPaths"] = MASKED_PATHS[:]
    if hc.get("ReadonlyPaths") is None and not host.privileged:
        out["ReadonlyPaths"] = READONLY_PATHS[:]
    return out


def inspect_config(spec: ContainerSpec) -> dict[str, Any]:
    return copy.deepcopy(spec.config_json)


def inspect_host_config(spec: ContainerSpec) -> dict[str, Any]:
    return copy.deepcopy(spec.host_config_json)
