"""Docker's container create body, validated and merged with the image config like dockerd does.

`parse_create` applies, in dockerd 20.10's order, the checks a create request goes through
(decode-time network-mode conflicts, `verifyContainerSettings`, `verifyNetworkingConfig`,
`adaptContainerSettings`, the image merge, the log config, mount and link registration) and
returns a typed `ContainerSpec`. Errors carry dockerd's wording and status.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import posixpath
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from proto.docker.errors import DockerError, InvalidParameter, SystemError_
from runtime.links import parse_link

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHM_SIZE = 64 * 1024 * 1024
MIN_MEMORY = 6 * 1024 * 1024  # dockerd's linuxMinMemory ("6MB")
MIN_DURATION_NS = 1_000_000  # containertypes.MinimumDuration (1ms)
DEFAULT_STOP_SIGNAL = 15

# moby oci/defaults.go (20.10): applied to every non-privileged container.
MASKED_PATHS = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

DEFAULT_CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

# In kernel order. dockerd 20.10 stops at CAP_AUDIT_READ even on newer kernels (its runc did not
# know PERFMON/BPF/CHECKPOINT_RESTORE), so those are "unknown capability" there too.
ALL_CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
]

# pkg/signal SignalMap (linux), without the SIG prefix.
SIGNALS: dict[str, int] = {
    "ABRT": 6,
    "ALRM": 14,
    "BUS": 7,
    "CHLD": 17,
    "CLD": 17,
    "CONT": 18,
    "FPE": 8,
    "HUP": 1,
    "ILL": 4,
    "INT": 2,
    "IO": 29,
    "IOT": 6,
    "KILL": 9,
    "PIPE": 13,
    "POLL": 29,
    "PROF": 27,
    "PWR": 30,
    "QUIT": 3,
    "SEGV": 11,
    "STKFLT": 16,
    "STOP": 19,
    "SYS": 31,
    "TERM": 15,
    "TRAP": 5,
    "TSTP": 20,
    "TTIN": 21,
    "TTOU": 22,
    "URG": 23,
    "USR1": 10,
    "USR2": 12,
    "VTALRM": 26,
    "WINCH": 28,
    "XCPU": 24,
    "XFSZ": 25,
    "RTMIN": 34,
    "RTMAX": 64,
    **{f"RTMIN+{i}": 34 + i for i in range(1, 16)},
    **{f"RTMAX-{i}": 64 - i for i in range(1, 15)},
}

RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")
PROPAGATION_MODES = ("private", "rprivate", "slave", "rslave", "shared", "rshared")
CONSISTENCY_MODES = ("consistent", "cached", "delegated")
BUILTIN_NETWORK_MODES = ("default", "bridge", "host", "none")

# Drivers dockerd 20.10 ships; we only implement json-file and none.
DOCKER_LOG_DRIVERS = (
    "local",
    "syslog",
    "journald",
    "gelf",
    "fluentd",
    "awslogs",
    "splunk",
    "etwlogs",
    "gcplogs",
    "logentries",
)
JSON_FILE_LOG_OPTS = (
    "max-file",
    "max-size",
    "compress",
    "labels",
    "labels-regex",
    "env",
    "env-regex",
    "tag",
)

# errors dockerd returns unwrapped from registerMountPoints/registerLinks: they reach the client
# as 500, not 400 (dockerd 20.10 has no errdefs class on them).
RawDaemonError = SystemError_


# --------------------------------------------------------------------------- typed spec


@dataclass
class RestartPolicy:
    name: str = "no"
    maximum_retry_count: int = 0


@dataclass
class Resources:
    memory: int = 0
    memory_swap: int = 0
    memory_reservation: int = 0
    memory_swappiness: int | None = None
    nano_cpus: int = 0
    cpu_shares: int = 0
    cpu_period: int = 0
    cpu_quota: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    pids_limit: int | None = None
    oom_kill_disable: bool = False


@dataclass
class Mount:
    """One mount from Binds (`from_binds`) or HostConfig.Mounts, as dockerd's MountPoint."""

    type: str  # bind | volume | tmpfs
    source: str  # host path, volume name ("" = anonymous) or ""
    target: str  # cleaned destination
    read_only: bool = False
    mode: str = ""  # the Binds mode string ("ro,z"), "" for Mounts
    propagation: str = ""
    no_copy: bool = False
    driver: str = ""
    driver_opts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    tmpfs_options: str = ""
    from_binds: bool = False


@dataclass
class HostConfig:
    network_mode: str = "bridge"  # "default" resolved to "bridge"
    port_bindings: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    publish_all: bool = False
    binds: list[Mount] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    tmpfs: dict[str, str] = field(default_factory=dict)
    volumes_from: list[tuple[str, str]] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # raw "name:alias"; see links.parse_link
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    auto_remove: bool = False
    resources: Resources = field(default_factory=Resources)
    cap_add: list[str] = field(default_factory=list)  # normalized: CAP_X or ALL
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    readonly_rootfs: bool = False
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    extra_hosts: list[tuple[str, str]] = field(default_factory=list)
    log_config: dict[str, Any] = field(default_factory=lambda: {"Type": "json-file", "Config": {}})
    sysctls: dict[str, str] = field(default_factory=dict)
    shm_size: int = DEFAULT_SHM_SIZE
    init: bool | None = None
    security_opt: list[str] = field(default_factory=list)
    oom_score_adj: int = 0
    masked_paths: list[str] = field(default_factory=list)
    readonly_paths: list[str] = field(default_factory=list)
    group_add: list[str] = field(default_factory=list)
    ipc_mode: str = "private"
    pid_mode: str = ""
    uts_mode: str = ""


@dataclass
class ContainerSpec:
    cid: str
    image: str
    args: list[str]
    entrypoint: list[str] | None
    cmd: list[str] | None
    env: list[str]  # image+container env, PATH first when neither sets it
    working_dir: str
    user: str
    hostname: str
    domainname: str
    tty: bool
    open_stdin: bool
    stdin_once: bool
    attach_stdin: bool
    attach_stdout: bool
    attach_stderr: bool
    labels: dict[str, str]
    stop_signal: int
    stop_timeout: int | None
    exposed_ports: list[str]
    healthcheck: dict[str, Any] | None
    volumes: list[str]  # image/container VOLUME paths (anonymous volumes unless covered)
    host_config: HostConfig
    networking_config: dict[str, Any]
    warnings: list[str]
    config_json: dict[str, Any]  # Docker's inspect `Config`
    host_config_json: dict[str, Any]  # Docker's inspect `HostConfig`


# --------------------------------------------------------------------------- small parsers

_SIZE_RE = re.compile(r"^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_DECIMAL = {"k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4, "p": 1000**5}
_BINARY = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}


def _parse_units(s: str, units: dict[str, int]) -> int:
    m = _SIZE_RE.match(s)
    if not m:
        raise InvalidParameter(f"invalid size: '{s}'")
    number = m.group(1)
    if number.count(".") > 1:
        # go-units' regexp accepts "1.2.3" and strconv.ParseFloat then rejects it
        raise InvalidParameter(f'strconv.ParseFloat: parsing "{number}": invalid syntax')
    size = float(number)
    if m.group(3):
        size *= units[m.group(3).lower()]
    return int(size)


def parse_memory(s: str) -> int:
    """go-units RAMInBytes: binary multiples (`1g` = 1024**3), `1.5g`, `512k`, plain bytes."""
    return _parse_units(s, _BINARY)


def parse_size(s: str) -> int:
    """go-units FromHumanSize (decimal: `10m` = 10_000_000), what json-file uses for max-size."""
    return _parse_units(s, _DECIMAL)


def parse_signal(s: str) -> int:
    """pkg/signal ParseSignal: a non-zero number, or a name with or without SIG."""
    if re.fullmatch(r"[+-]?\d+", s):
        n = int(s)
        if n == 0 or abs(n) > 2**63:
            raise InvalidParameter(f"Invalid signal: {s}")
        return n
    name = s.upper()
    name = name[3:] if name.startswith("SIG") else name
    if name not in SIGNALS:
        raise InvalidParameter(f"Invalid signal: {s}")
    return SIGNALS[name]


def _go_quote(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


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


def normalize_caps(caps: list[str]) -> list[str]:
    """caps.NormalizeLegacyCapabilities: upper-case, CAP_ prefix, ALL kept; unknown rejected."""
    known = _known_caps()
    out = []
    for c in caps:
        c = c.upper()
        if c == "ALL":
            out.append(c)
            continue
        if not c.startswith("CAP_"):
            c = "CAP_" + c
        if c not in known:
            raise InvalidParameter(f"unknown capability: {_go_quote(c)}")
        out.append(c)
    return out


def _known_caps() -> list[str]:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        return list(ALL_CAPABILITIES)
    return ALL_CAPABILITIES[: last + 1]


def effective_caps(cap_add: list[str], cap_drop: list[str], privileged: bool) -> list[str]:
    """caps.TweakCapabilities over Docker's default 14 (duplicates kept, as dockerd does)."""
    if privileged:
        return _known_caps()
    if not cap_add and not cap_drop:
        return list(DEFAULT_CAPABILITIES)
    drops = normalize_caps(cap_drop)
    adds = normalize_caps(cap_add)
    if "ALL" in adds:
        return [c for c in _known_caps() if c not in drops]
    if "ALL" in drops:
        return adds
    return [c for c in DEFAULT_CAPABILITIES if c not in drops] + adds


def validate_extra_host(val: str) -> tuple[str, str]:
    """opts.ValidateExtraHost: `host:ip` split on the first colon; `host-gateway` allowed."""
    name, sep, ip = val.partition(":")
    if not sep or not name:
        raise InvalidParameter(f"bad format for add-host: {_go_quote(val)}")
    if ip != "host-gateway":
        try:
            ipaddress.ip_address(ip.strip())
        except ValueError:
            raise InvalidParameter(f"invalid IP address in add-host: {_go_quote(ip)}") from None
    return name, ip


def parse_volumes_from(spec: str) -> tuple[str, str]:
    """ParseVolumesFrom: `container[:mode]`, mode rw by default, no propagation/copy modes."""
    if not spec:
        raise RawDaemonError("volumes-from specification cannot be an empty string")
    cid, _, mode = spec.partition(":")
    if not mode:
        return cid, "rw"
    opts = mode.split(",")
    if not _valid_mount_mode(mode) or any(o in PROPAGATION_MODES for o in opts) or "nocopy" in opts:
        raise RawDaemonError(f"invalid mode: {mode}")
    return cid, mode


# --------------------------------------------------------------------------- mounts


def _valid_mount_mode(mode: str) -> bool:
    """linuxValidMountMode: a comma list with at most one option of each kind."""
    if mode == "":
        return True
    counts = {"rw": 0, "label": 0, "prop": 0, "copy": 0, "cons": 0}
    for o in mode.split(","):
        if o in ("rw", "ro"):
            counts["rw"] += 1
        elif o in ("z", "Z"):
            counts["label"] += 1
        elif o in PROPAGATION_MODES:
            counts["prop"] += 1
        elif o == "nocopy":
            counts["copy"] += 1
        elif o in CONSISTENCY_MODES:
            counts["cons"] += 1
        else:
            return False
    return all(n <= 1 for n in counts.values())


class _MountConfigError(Exception):
    """errMountConfig: `invalid mount config for type "<type>": <reason>`."""

    def __init__(self, mtype: str, reason: str) -> None:
        super().__init__(f"invalid mount config for type {_go_quote(mtype)}: {reason}")


def _validate_target(mtype: str, target: str) -> None:
    if not target:
        raise _MountConfigError(mtype, "field Target must not be empty")
    if posixpath.normpath(target.replace("\\", "/")) == "/":
        raise _MountConfigError(mtype, "invalid specification: destination can't be '/'")
    if not target.replace("\\", "/").startswith("/"):
        raise _MountConfigError(
            mtype, f"invalid mount path: '{target}' mount path must be absolute"
        )


def _clean(p: str) -> str:
    cleaned = posixpath.normpath(p)
    # posixpath keeps a leading "//"; Go's path.Clean does not
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def parse_bind(raw: str, volume_driver: str = "") -> Mount:
    """One HostConfig.Binds entry, as volume/mounts linux_parser ParseMountRaw."""
    arr = raw.split(":", 3)
    if arr[0] == "" or len(arr) > 3:
        raise RawDaemonError(f"invalid volume specification: '{raw}'")
    mode = ""
    if len(arr) == 1:
        source, target = "", arr[0]
    elif len(arr) == 2:
        if _valid_mount_mode(arr[1]):
            raise RawDaemonError(f"invalid volume specification: '{raw}'")
        source, target = arr
    else:
        source, target, mode = arr
    if not _valid_mount_mode(mode):
        raise RawDaemonError(f"invalid mode: {mode}")
    opts = mode.split(",") if mode else []
    mtype = "bind" if source.startswith("/") else "volume"
    try:
        _validate_target(mtype, target)
    except _MountConfigError as err:
        raise RawDaemonError(f"invalid volume specification: '{raw}': {err}") from None
    prop = next((o for o in opts if o in PROPAGATION_MODES), "")
    if mtype == "volume" and not source and "ro" in opts:
        reason = "must not set ReadOnly mode when using anonymous volumes"
        raise RawDaemonError(
            f"invalid volume specification: '{raw}': {_MountConfigError(mtype, reason)}"
        )
    extra = ""
    if mtype == "volume" and prop:
        extra = "BindOptions"
    elif mtype == "bind" and "nocopy" in opts:
        extra = "VolumeOptions"
    if extra:
        reason = f"field {extra} must not be specified"
        raise RawDaemonError(
            f"invalid volume specification: '{raw}': {_MountConfigError(mtype, reason)}"
        )
    return Mount(
        type=mtype,
        source=_clean(source) if mtype == "bind" else source,
        target=_clean(target),
        read_only="ro" in opts,
        mode=mode,
        propagation=(prop or "rprivate") if mtype == "bind" else "",
        no_copy="nocopy" in opts,
        driver=(volume_driver or "local") if mtype == "volume" else "",
        from_binds=True,
    )


def _tmpfs_options(opts: dict[str, Any] | None, read_only: bool) -> str:
    """ConvertTmpfsOptions: `ro`, `mode=<octal>`, `size=<n>[gmk]` with the largest even unit."""
    out = ["ro"] if read_only else []
    opts = opts or {}
    mode = int(opts.get("Mode") or 0)
    if mode:
        out.append(f"mode={mode:o}")
    size = int(opts.get("SizeBytes") or 0)
    if size:
        suffix = ""
        for unit, div in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
            if size % div == 0:
                size, suffix = size // div, unit
                break
        out.append(f"size={size}{suffix}")
    return ",".join(out)


def parse_mount(m: dict[str, Any], check_bind_source: bool = False) -> Mount:
    """One HostConfig.Mounts entry, as validateMountConfigImpl + parseMountSpec."""
    if not isinstance(m, dict):
        raise InvalidParameter("json: cannot unmarshal into Go value of type mount.Mount")
    mtype = m.get("Type") or ""
    source = m.get("Source") or ""
    target = m.get("Target") or ""
    read_only = bool(m.get("ReadOnly"))
    bind_opts = m.get("BindOptions")
    vol_opts = m.get("VolumeOptions")
    try:
        _validate_target(mtype, target)
        if mtype == "bind":
            _check_bind(m, source, bind_opts, vol_opts, check_bind_source)
        elif mtype == "volume":
            if bind_opts is not None:
                raise _MountConfigError(mtype, "field BindOptions must not be specified")
            if not source and read_only:
                reason = "must not set ReadOnly mode when using anonymous volumes"
                raise _MountConfigError(mtype, reason)
        elif mtype == "tmpfs":
            if bind_opts is not None:
                raise _MountConfigError(mtype, "field BindOptions must not be specified")
            if source:
                raise _MountConfigError(mtype, "field Source must not be specified")
        else:
            raise _MountConfigError(mtype, "mount type unknown")
    except _MountConfigError as err:
        raise InvalidParameter(str(err)) from None
    vol_opts = vol_opts or {}
    driver_cfg = vol_opts.get("DriverConfig") or {}
    return Mount(
        type=mtype,
        source=_clean(source) if mtype == "bind" else source,
        target=_clean(target),
        read_only=read_only,
        propagation=((bind_opts or {}).get("Propagation") or "rprivate") if mtype == "bind" else "",
        no_copy=bool(vol_opts.get("NoCopy")),
        driver=(driver_cfg.get("Name") or "local") if mtype == "volume" else "",
        driver_opts=dict(driver_cfg.get("Options") or {}),
        labels=dict(vol_opts.get("Labels") or {}),
        tmpfs_options=_tmpfs_options(m.get("TmpfsOptions"), read_only) if mtype == "tmpfs" else "",
    )


def _check_bind(
    m: dict[str, Any],
    source: str,
    bind_opts: dict[str, Any] | None,
    vol_opts: Any,
    check_source: bool,
) -> None:
    if not source:
        raise _MountConfigError("bind", "field Source must not be empty")
    prop = (bind_opts or {}).get("Propagation") or ""
    if prop and prop not in PROPAGATION_MODES:
        raise _MountConfigError("bind", f"invalid propagation mode: {prop}")
    if vol_opts is not None:
        raise _MountConfigError("bind", "field VolumeOptions must not be specified")
    if not source.startswith("/"):
        raise _MountConfigError(
            "bind", f"invalid mount path: '{source}' mount path must be absolute"
        )
    if check_source and not os.path.exists(source):
        raise _MountConfigError("bind", f"bind source path does not exist: {source}")


def check_bind_source(mount: Mount) -> None:
    """The existence check dockerd makes for `Mounts` binds (Binds sources get created)."""
    if mount.type == "bind" and not mount.from_binds and not os.path.exists(mount.source):
        raise InvalidParameter(
            f'invalid mount config for type "bind": bind source path does not exist: {mount.source}'
        )


def _mount_json(m: Mount) -> dict[str, Any]:
    """Docker's inspect `Mounts` entry, plus private keys the runtime uses (CreateSource…)."""
    if m.type == "volume":
        mode = (m.mode or "z") if m.from_binds and m.driver == "local" else m.mode
        return {
            "Type": "volume",
            "Name": m.source,
            "Source": "",
            "Destination": m.target,
            "Driver": m.driver,
            "Mode": mode,
            "RW": not m.read_only,
            "Propagation": "",
            "NoCopy": m.no_copy,
        }
    entry: dict[str, Any] = {
        "Type": m.type,
        "Source": m.source,
        "Destination": m.target,
        "Mode": m.mode,
        "RW": not m.read_only,
        "Propagation": m.propagation,
    }
    if m.type == "bind":
        entry["CreateSource"] = m.from_binds
    if m.type == "tmpfs":
        entry["Options"] = m.tmpfs_options
    return entry


def mounts_of(spec: ContainerSpec) -> list[dict[str, Any]]:
    """Every mount of the container in Docker's inspect shape, parents before children.

    Anonymous volumes have `Name: ""` (the runtime names them). HostConfig.Tmpfs entries carry
    `Hidden: True`: dockerd mounts them but does not list them in inspect's `Mounts`.
    """
    hc = spec.host_config
    result = [_mount_json(m) for m in hc.binds + hc.mounts]
    taken = {m["Destination"] for m in result} | {_clean(d) for d in hc.tmpfs}
    for path in spec.volumes:
        dest = _clean(path)
        if dest not in taken:
            taken.add(dest)
            result.append(_mount_json(Mount(type="volume", source="", target=dest, driver="local")))
    for dest, data in hc.tmpfs.items():
        result.append(
            {
                "Type": "tmpfs",
                "Source": "",
                "Destination": dest,
                "Mode": "",
                "RW": "ro" not in data.split(","),
                "Propagation": "",
                "Options": data,
                "Hidden": True,
            }
        )
    # dockerd mounts by destination depth so a parent never hides a child mount
    result.sort(key=lambda m: len(_clean(m["Destination"]).split("/")))
    return result


# --------------------------------------------------------------------------- body access


_GO_TYPES = {bool: "bool", int: "number", float: "number", str: "string", list: "array"}


def _type_error(value: Any, gotype: str) -> InvalidParameter:
    jtype = "object" if isinstance(value, dict) else _GO_TYPES.get(type(value), "value")
    return InvalidParameter(f"json: cannot unmarshal {jtype} into Go value of type {gotype}")


def _str(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise _type_error(v, "string")
    return v


def _bool(d: dict[str, Any], key: str) -> bool:
    v = d.get(key)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise _type_error(v, "bool")
    return v


def _int(d: dict[str, Any], key: str) -> int:
    v = d.get(key)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _type_error(v, "int64")
    if isinstance(v, float) and not v.is_integer():
        raise _type_error(v, "int64")
    return int(v)


def _opt_int(d: dict[str, Any], key: str) -> int | None:
    return None if d.get(key) is None else _int(d, key)


def _strlist(d: dict[str, Any], key: str) -> list[str] | None:
    """A []string field; StrSlice fields (Cmd, Entrypoint) also accept a bare string."""
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, str) and key in ("Cmd", "Entrypoint", "Shell"):
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _type_error(v, "[]string")
    return list(v)


def _dict(d: dict[str, Any], key: str) -> dict[str, Any] | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise _type_error(v, "map[string]interface {}")
    return v


def _image_config(image_config: dict[str, Any] | None) -> dict[str, Any]:
    """Accept the image's config blob (`config`), an inspect body (`Config`) or the Config."""
    if not image_config:
        return {}
    for key in ("config", "Config"):
        inner = image_config.get(key)
        if isinstance(inner, dict):
            return inner
    return image_config


# --------------------------------------------------------------------------- validation


def is_user_defined_network(mode: str) -> bool:
    return mode not in BUILTIN_NETWORK_MODES and not mode.startswith("container:") and mode != ""


def _validate_net_mode(body: dict[str, Any], hc: dict[str, Any]) -> None:
    """runconfig validateNetMode (decode time, before anything else)."""
    mode = _str(hc, "NetworkMode")
    parts = mode.split(":")
    if parts[0] == "container" and (len(parts) < 2 or parts[1] == ""):
        raise InvalidParameter("Invalid network mode: invalid container format container:<name|id>")
    is_container = mode.startswith("container:")
    conflicts = [
        (is_container and _str(body, "Hostname") != "", "hostname and the network mode"),
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
            (is_container or mode == "host") and _str(body, "MacAddress") != "",
            "mac-address and the network mode",
        ),
        (
            is_container and (bool(hc.get("PortBindings")) or _bool(hc, "PublishAllPorts")),
            "port publishing and the container type network mode",
        ),
        (
            is_container and bool(body.get("ExposedPorts")),
            "port exposing and the container type network mode",
        ),
        (
            _str(hc, "UTSMode") == "host" and _str(body, "Hostname") != "",
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


def _validate_container_config(body: dict[str, Any]) -> None:
    wd = _str(body, "WorkingDir")
    if wd and not wd.startswith("/"):
        raise InvalidParameter(
            f"the working directory '{wd}' is invalid, it needs to be an absolute path"
        )
    if _str(body, "StopSignal"):
        parse_signal(_str(body, "StopSignal"))
    for env in _strlist(body, "Env") or []:
        if env.split("=", 1)[0] == "":
            raise InvalidParameter(f"invalid environment variable: {env}")
    _validate_healthcheck(_dict(body, "Healthcheck"))


def _validate_healthcheck(h: dict[str, Any] | None) -> None:
    if h is None:
        return
    for key in ("Interval", "Timeout"):
        if _int(h, key) != 0 and _int(h, key) < MIN_DURATION_NS:
            raise InvalidParameter(f"{key} in Healthcheck cannot be less than 1ms")
    if _int(h, "Retries") < 0:
        raise InvalidParameter("Retries in Healthcheck cannot be negative")
    if _int(h, "StartPeriod") != 0 and _int(h, "StartPeriod") < MIN_DURATION_NS:
        raise InvalidParameter("StartPeriod in Healthcheck cannot be less than 1ms")


def _restart_policy(hc: dict[str, Any]) -> RestartPolicy:
    rp = _dict(hc, "RestartPolicy") or {}
    return RestartPolicy(_str(rp, "Name"), _int(rp, "MaximumRetryCount"))


def _validate_restart_policy(rp: RestartPolicy) -> None:
    if rp.name in ("always", "unless-stopped", "no"):
        if rp.maximum_retry_count != 0:
            raise InvalidParameter(
                f"maximum retry count cannot be used with restart policy '{rp.name}'"
            )
    elif rp.name == "on-failure":
        if rp.maximum_retry_count < 0:
            raise InvalidParameter("maximum retry count cannot be negative")
    elif rp.name != "":
        raise InvalidParameter(f"invalid restart policy '{rp.name}'")


def _port_bindings(hc: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """validatePortBindings, then keys normalized to `port/proto`."""
    raw = _dict(hc, "PortBindings") or {}
    out: dict[str, list[dict[str, str]]] = {}
    for key, bindings in raw.items():
        _, port = _split_proto_port(key)
        if port and not _is_uint16(port):
            raise InvalidParameter(f"invalid port specification: {_go_quote(port)}")
        normalized = []
        for b in bindings or []:
            b = b or {}
            if not isinstance(b, dict):
                raise _type_error(b, "nat.PortBinding")
            host_port = _str(b, "HostPort")
            if not _valid_host_port(host_port):
                raise InvalidParameter(f"invalid port specification: {_go_quote(host_port)}")
            normalized.append({"HostIp": _str(b, "HostIp"), "HostPort": host_port})
        out[normalize_port(key)] = normalized
    return out


def _validate_host_config(hc: dict[str, Any], check_bind_sources: bool) -> list[Mount]:
    """validateHostConfig: AutoRemove, Mounts, ExtraHosts, ports, restart policy, caps."""
    rp = _restart_policy(hc)
    if _bool(hc, "AutoRemove") and rp.name not in ("", "no"):
        raise InvalidParameter("can't create 'AutoRemove' container with restart policy")
    mounts = [parse_mount(m, check_bind_sources) for m in (hc.get("Mounts") or [])]
    for extra in _strlist(hc, "ExtraHosts") or []:
        validate_extra_host(extra)
    _port_bindings(hc)
    _validate_restart_policy(rp)
    for key in ("CapAdd", "CapDrop"):
        try:
            normalize_caps(_strlist(hc, key) or [])
        except DockerError as err:
            raise InvalidParameter(f"invalid {key}: {err.message}") from None
    return mounts


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1


def _parse_cpuset(s: str) -> set[int]:
    """parsers.ParseUintList: `0-2,4`."""
    out: set[int] = set()
    if s == "":
        return out
    for part in s.split(","):
        m = re.fullmatch(r"([+-]?\d+)(?:-([+-]?\d+))?", part)
        if not m:
            raise ValueError(f"invalid format: {s}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if hi < lo:
            raise ValueError(f"invalid format: {s}")
        out.update(range(lo, hi + 1))
    return out


def _resources(hc: dict[str, Any], warnings: list[str]) -> Resources:
    """verifyPlatformContainerResources for the limits we implement."""
    r = Resources(
        memory=_int(hc, "Memory"),
        memory_swap=_int(hc, "MemorySwap"),
        memory_reservation=_int(hc, "MemoryReservation"),
        memory_swappiness=_opt_int(hc, "MemorySwappiness"),
        nano_cpus=_int(hc, "NanoCpus"),
        cpu_shares=_int(hc, "CpuShares"),
        cpu_period=_int(hc, "CpuPeriod"),
        cpu_quota=_int(hc, "CpuQuota"),
        cpuset_cpus=_str(hc, "CpusetCpus"),
        cpuset_mems=_str(hc, "CpusetMems"),
        pids_limit=_opt_int(hc, "PidsLimit"),
        oom_kill_disable=_bool(hc, "OomKillDisable"),
    )
    if r.pids_limit is not None and r.pids_limit <= 0:
        r.pids_limit = None  # 0 and -1 both mean "unlimited" (API router)
    _check_memory(r)
    if r.oom_kill_disable and r.memory == 0:
        warnings.append(
            "OOM killer is disabled for the container, but no memory limit is set, "
            "this can result in the system running out of resources."
        )
    _check_cpu(r)
    return r


def _check_memory(r: Resources) -> None:
    if r.memory != 0 and r.memory < MIN_MEMORY:
        raise InvalidParameter("Minimum memory limit allowed is 6MB")
    if r.memory > 0 and r.memory_swap > 0 and r.memory_swap < r.memory:
        raise InvalidParameter(
            "Minimum memoryswap limit should be larger than memory limit, see usage"
        )
    if r.memory == 0 and r.memory_swap > 0:
        raise InvalidParameter(
            "You should always set the Memory limit when using Memoryswap limit, see usage"
        )
    # -1 means "unset" (the CLI always sends it), as in dockerd.
    if r.memory_swappiness not in (None, -1) and not 0 <= r.memory_swappiness <= 100:
        raise InvalidParameter(
            f"Invalid value: {r.memory_swappiness}, valid memory swappiness range is 0-100"
        )
    if r.memory_reservation > 0 and r.memory_reservation < MIN_MEMORY:
        raise InvalidParameter("Minimum memory reservation allowed is 6MB")
    if r.memory > 0 and r.memory_reservation > 0 and r.memory < r.memory_reservation:
        raise InvalidParameter(
            "Minimum memory limit can not be less than memory reservation limit, see usage"
        )


def _check_cpu(r: Resources) -> None:
    if r.nano_cpus > 0 and r.cpu_period > 0:
        raise InvalidParameter("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if r.nano_cpus > 0 and r.cpu_quota > 0:
        raise InvalidParameter("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    ncpu = _cpu_count()
    if r.nano_cpus < 0 or r.nano_cpus > ncpu * 1_000_000_000:
        raise InvalidParameter(
            f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
        )
    if r.cpu_period != 0 and not 1000 <= r.cpu_period <= 1_000_000:
        raise InvalidParameter(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"
        )
    if 0 < r.cpu_quota < 1000:
        raise InvalidParameter("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    try:
        wanted = _parse_cpuset(r.cpuset_cpus)
    except ValueError as err:
        raise InvalidParameter(f"Invalid value {r.cpuset_cpus} for cpuset cpus: {err}") from None
    try:
        available = os.sched_getaffinity(0)
    except OSError:
        available = set(range(_cpu_count()))
    if not wanted <= available:
        raise InvalidParameter(
            f"Requested CPUs are not available - requested {r.cpuset_cpus}, "
            f"available: {_format_cpuset(available)}"
        )


def _format_cpuset(cpus: set[int]) -> str:
    ranges: list[str] = []
    for c in sorted(cpus):
        if ranges and "-" not in ranges[-1] and int(ranges[-1]) == c - 1:
            ranges[-1] = f"{ranges[-1]}-{c}"
        elif ranges and "-" in ranges[-1] and int(ranges[-1].split("-")[1]) == c - 1:
            ranges[-1] = f"{ranges[-1].split('-')[0]}-{c}"
        else:
            ranges.append(str(c))
    return ",".join(ranges)


def _verify_platform(hc: dict[str, Any], warnings: list[str]) -> Resources:
    """verifyPlatformContainerSettings."""
    resources = _resources(hc, warnings)
    if _int(hc, "ShmSize") < 0:
        raise InvalidParameter("SHM size can not be less than 0")
    adj = _int(hc, "OomScoreAdj")
    if not -1000 <= adj <= 1000:
        raise InvalidParameter(f"Invalid value {adj}, range for oom score adj is [-1000, 1000]")
    if _str(hc, "NetworkMode") == "host" and hc.get("PortBindings"):
        warnings.append("Published ports are discarded when using host network mode")
    runtime = _str(hc, "Runtime") or "runc"
    if runtime != "runc":
        raise InvalidParameter(f"Unknown runtime specified {runtime}")
    for dest in _dict(hc, "Tmpfs") or {}:
        if posixpath.normpath(dest.replace("\\", "/")) == "/":
            raise InvalidParameter("invalid specification: destination can't be '/'")
        if not dest.startswith("/"):
            raise InvalidParameter(f"invalid mount path: '{dest}' mount path must be absolute")
    cgroupns = _str(hc, "CgroupnsMode")
    if cgroupns not in ("", "host", "private"):
        raise InvalidParameter(f"invalid cgroup namespace mode: {cgroupns}")
    return resources


def _verify_networking_config(nc: dict[str, Any]) -> None:
    endpoints = _dict(nc, "EndpointsConfig") or {}
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


def _log_config(hc: dict[str, Any]) -> dict[str, Any]:
    """mergeAndVerifyLogConfig + logger.ValidateLogOpts for the drivers we have."""
    lc = _dict(hc, "LogConfig") or {}
    ltype = _str(lc, "Type") or "json-file"
    opts = {str(k): str(v) for k, v in (_dict(lc, "Config") or {}).items()}
    if ltype == "none":
        return {"Type": ltype, "Config": opts}
    mode = opts.get("mode", "")
    if mode not in ("", "blocking", "non-blocking"):
        raise InvalidParameter(f"logger: logging mode not supported: {mode}")
    if "max-buffer-size" in opts and mode != "non-blocking":
        raise InvalidParameter(
            "logger: max-buffer-size option is only supported with 'mode=non-blocking'"
        )
    if ltype in DOCKER_LOG_DRIVERS:
        raise InvalidParameter(
            f"logging driver '{ltype}' is not supported by flotilla: use json-file or none"
        )
    if ltype != "json-file":
        raise InvalidParameter(f"logger: no log driver named '{ltype}' is registered")
    for key in opts:
        if key not in JSON_FILE_LOG_OPTS and key not in ("mode", "max-buffer-size"):
            raise InvalidParameter(f"unknown log opt '{key}' for json-file log driver")
    return {"Type": ltype, "Config": opts}


def log_limits(log_config: dict[str, Any]) -> tuple[int, int]:
    """json-file max-size (bytes, 0 = unlimited) and max-file; dockerd fails these at start."""
    opts = log_config.get("Config") or {}
    size = 0
    if "max-size" in opts:
        size = parse_size(opts["max-size"])
        if size <= 0:
            raise SystemError_("max-size must be a positive number")
    count = 1
    if "max-file" in opts:
        raw = opts["max-file"]
        if not re.fullmatch(r"[+-]?\d+", raw):
            raise SystemError_(f'strconv.Atoi: parsing "{raw}": invalid syntax')
        count = int(raw)
        if count < 1:
            raise SystemError_("max-file cannot be less than 1")
    return size, count


# --------------------------------------------------------------------------- merge


def _merge_env(user: list[str] | None, image: list[str] | None) -> list[str] | None:
    if not user:
        return image
    keys = {e.split("=", 1)[0] for e in user}
    return list(user) + [e for e in image or [] if e.split("=", 1)[0] not in keys]


def _merge_set(user: dict[str, Any] | None, image: dict[str, Any] | None) -> dict[str, Any] | None:
    if not user:
        return image
    merged = dict(user)
    for k in image or {}:
        merged.setdefault(k, {})
    return merged


def _merge_healthcheck(
    user: dict[str, Any] | None, image: dict[str, Any] | None
) -> dict[str, Any] | None:
    if image is None:
        return user
    if user is None:
        return copy.deepcopy(image)
    merged = dict(user)
    if not merged.get("Test"):
        merged["Test"] = image.get("Test")
    for key in ("Interval", "Timeout", "StartPeriod", "Retries"):
        if not merged.get(key) and image.get(key):
            merged[key] = image[key]
    return merged


def _merge(body: dict[str, Any], image: dict[str, Any]) -> dict[str, Any]:
    """daemon/commit.go merge(): the user config completed from the image config."""
    conf: dict[str, Any] = {
        "User": _str(body, "User") or _str(image, "User"),
        "ExposedPorts": _merge_set(_dict(body, "ExposedPorts"), _dict(image, "ExposedPorts")),
        "Env": _merge_env(_strlist(body, "Env"), _strlist(image, "Env")),
        "WorkingDir": _str(body, "WorkingDir") or _str(image, "WorkingDir"),
        "Volumes": _merge_set(_dict(body, "Volumes"), _dict(image, "Volumes")),
        "StopSignal": _str(body, "StopSignal") or _str(image, "StopSignal"),
        "Healthcheck": _merge_healthcheck(_dict(body, "Healthcheck"), _dict(image, "Healthcheck")),
        "ArgsEscaped": _bool(body, "ArgsEscaped"),
    }
    labels = dict(_dict(body, "Labels") or {})
    for k, v in (_dict(image, "Labels") or {}).items():
        labels.setdefault(k, v)
    conf["Labels"] = labels
    entrypoint = _strlist(body, "Entrypoint")
    cmd = _strlist(body, "Cmd")
    if not entrypoint:
        if not cmd:
            cmd = _strlist(image, "Cmd")
            conf["ArgsEscaped"] = _bool(image, "ArgsEscaped")
        if entrypoint is None:
            entrypoint = _strlist(image, "Entrypoint")
    # `--entrypoint ""` arrives as [""]: it clears the image's entrypoint
    if entrypoint == [""]:
        entrypoint = None
    if not entrypoint and not cmd:
        raise InvalidParameter("No command specified")
    conf["Entrypoint"] = entrypoint
    conf["Cmd"] = cmd
    return conf


# --------------------------------------------------------------------------- parse_create


def parse_create(
    body: dict[str, Any],
    image_config: dict[str, Any] | None,
    cid: str,
    check_bind_sources: bool = False,
) -> ContainerSpec:
    """Validate a create body and merge it with the image config, in dockerd's order.

    `check_bind_sources` makes the HostConfig.Mounts bind-source existence check dockerd does
    at create time (off by default so parsing stays pure; see `check_bind_source`).
    """
    if not isinstance(body, dict):
        raise InvalidParameter("Config cannot be empty in order to create a container")
    hc = _dict(body, "HostConfig") or {}
    nc = _dict(body, "NetworkingConfig") or {}
    warnings: list[str] = []
    _validate_net_mode(body, hc)
    _validate_container_config(body)
    mounts = _validate_host_config(hc, check_bind_sources)
    resources = _verify_platform(hc, warnings)
    _verify_networking_config(nc)
    if resources.memory > 0 and resources.memory_swap == 0:
        resources.memory_swap = resources.memory * 2  # adaptContainerSettings
    merged = _merge(body, _image_config(image_config))
    log_config = _log_config(hc)
    host = _build_host_config(hc, mounts, resources, log_config)
    entrypoint, cmd = merged["Entrypoint"], merged["Cmd"]
    stop_signal_raw = merged["StopSignal"]
    hostname = _str(body, "Hostname")
    if not hostname:
        hostname = socket.gethostname() if host.network_mode == "host" else cid[:12]
    env = _process_base_env(merged["Env"] or [])
    spec = ContainerSpec(
        cid=cid,
        image=_str(body, "Image"),
        args=list(entrypoint or []) + list(cmd or []),
        entrypoint=entrypoint,
        cmd=cmd,
        env=env,
        working_dir=merged["WorkingDir"],
        user=merged["User"],
        hostname=hostname,
        domainname=_str(body, "Domainname"),
        tty=_bool(body, "Tty"),
        open_stdin=_bool(body, "OpenStdin"),
        stdin_once=_bool(body, "StdinOnce"),
        attach_stdin=_bool(body, "AttachStdin"),
        attach_stdout=_bool(body, "AttachStdout"),
        attach_stderr=_bool(body, "AttachStderr"),
        labels=merged["Labels"],
        stop_signal=parse_signal(stop_signal_raw) if stop_signal_raw else DEFAULT_STOP_SIGNAL,
        stop_timeout=_opt_int(body, "StopTimeout"),
        exposed_ports=list(merged["ExposedPorts"] or {}),
        healthcheck=merged["Healthcheck"],
        volumes=list(merged["Volumes"] or {}),
        host_config=host,
        networking_config=nc,
        warnings=warnings,
        config_json={},
        host_config_json={},
    )
    spec.config_json = _config_json(body, merged, hostname)
    spec.host_config_json = _host_config_json(hc, host)
    return spec


def _process_base_env(env: list[str]) -> list[str]:
    """PATH first unless the image or container sets it (CreateDaemonEnvironment order)."""
    if any(e.split("=", 1)[0] == "PATH" for e in env):
        return list(env)
    return [f"PATH={DEFAULT_PATH}", *env]


def _build_host_config(
    hc: dict[str, Any],
    mounts: list[Mount],
    resources: Resources,
    log_config: dict[str, Any],
) -> HostConfig:
    mode = _str(hc, "NetworkMode") or "default"
    privileged = _bool(hc, "Privileged")
    tmpfs = {str(k): str(v) for k, v in (_dict(hc, "Tmpfs") or {}).items()}
    binds = _register_binds(hc, tmpfs, mounts)
    volumes_from = [parse_volumes_from(v) for v in _strlist(hc, "VolumesFrom") or []]
    links = _strlist(hc, "Links") or []
    if not is_user_defined_network(mode):  # registerLinks ignores links on user-defined networks
        for link in links:
            parse_link(link)
    masked = _strlist(hc, "MaskedPaths")
    readonly = _strlist(hc, "ReadonlyPaths")
    return HostConfig(
        network_mode="bridge" if mode == "default" else mode,
        port_bindings=_port_bindings(hc),
        publish_all=_bool(hc, "PublishAllPorts"),
        binds=binds,
        mounts=mounts,
        tmpfs=tmpfs,
        volumes_from=volumes_from,
        links=links,
        restart_policy=_restart_policy(hc),
        auto_remove=_bool(hc, "AutoRemove"),
        resources=resources,
        cap_add=normalize_caps(_strlist(hc, "CapAdd") or []),
        cap_drop=normalize_caps(_strlist(hc, "CapDrop") or []),
        privileged=privileged,
        readonly_rootfs=_bool(hc, "ReadonlyRootfs"),
        dns=_strlist(hc, "Dns") or [],
        dns_search=_strlist(hc, "DnsSearch") or [],
        dns_options=_strlist(hc, "DnsOptions") or [],
        extra_hosts=[validate_extra_host(e) for e in _strlist(hc, "ExtraHosts") or []],
        log_config=log_config,
        sysctls={str(k): str(v) for k, v in (_dict(hc, "Sysctls") or {}).items()},
        shm_size=_int(hc, "ShmSize") or DEFAULT_SHM_SIZE,
        init=hc.get("Init"),
        security_opt=_strlist(hc, "SecurityOpt") or [],
        oom_score_adj=_int(hc, "OomScoreAdj"),
        masked_paths=masked if masked is not None else ([] if privileged else MASKED_PATHS[:]),
        readonly_paths=(
            readonly if readonly is not None else ([] if privileged else READONLY_PATHS[:])
        ),
        group_add=_strlist(hc, "GroupAdd") or [],
        ipc_mode=_str(hc, "IpcMode") or "private",
        pid_mode=_str(hc, "PidMode"),
        uts_mode=_str(hc, "UTSMode"),
    )


def _register_binds(hc: dict[str, Any], tmpfs: dict[str, str], mounts: list[Mount]) -> list[Mount]:
    """registerMountPoints steps 3-4: parse Binds, refuse duplicate destinations."""
    driver = _str(hc, "VolumeDriver")
    seen: set[str] = set()
    binds = []
    for raw in _strlist(hc, "Binds") or []:
        m = parse_bind(raw, driver)
        if m.target in seen or m.target in tmpfs:
            raise InvalidParameter(f"Duplicate mount point: {m.target}")
        seen.add(m.target)
        binds.append(m)
    for raw_mount, m in zip(hc.get("Mounts") or [], mounts, strict=True):
        if m.target in seen:
            raise InvalidParameter(f"Duplicate mount point: {raw_mount.get('Target')}")
        seen.add(m.target)
    return binds


# --------------------------------------------------------------------------- inspect shapes


def _config_json(body: dict[str, Any], merged: dict[str, Any], hostname: str) -> dict[str, Any]:
    """Docker's inspect `Config` (container.Config field order, omitempty honoured)."""
    out: dict[str, Any] = {
        "Hostname": hostname,
        "Domainname": _str(body, "Domainname"),
        "User": merged["User"],
        "AttachStdin": _bool(body, "AttachStdin"),
        "AttachStdout": _bool(body, "AttachStdout"),
        "AttachStderr": _bool(body, "AttachStderr"),
    }
    if merged["ExposedPorts"]:
        out["ExposedPorts"] = {k: {} for k in merged["ExposedPorts"]}
    out.update(
        {
            "Tty": _bool(body, "Tty"),
            "OpenStdin": _bool(body, "OpenStdin"),
            "StdinOnce": _bool(body, "StdinOnce"),
            "Env": merged["Env"],
            "Cmd": merged["Cmd"],
        }
    )
    if merged["Healthcheck"] is not None:
        out["Healthcheck"] = merged["Healthcheck"]
    if merged["ArgsEscaped"]:
        out["ArgsEscaped"] = True
    out["Image"] = _str(body, "Image")
    out["Volumes"] = {k: {} for k in merged["Volumes"]} if merged["Volumes"] else None
    out["WorkingDir"] = merged["WorkingDir"]
    out["Entrypoint"] = merged["Entrypoint"]
    if _bool(body, "NetworkDisabled"):
        out["NetworkDisabled"] = True
    if _str(body, "MacAddress"):
        out["MacAddress"] = _str(body, "MacAddress")
    out["OnBuild"] = _strlist(body, "OnBuild")
    out["Labels"] = merged["Labels"]
    if merged["StopSignal"]:
        out["StopSignal"] = merged["StopSignal"]
    if body.get("StopTimeout") is not None:
        out["StopTimeout"] = _int(body, "StopTimeout")
    if _strlist(body, "Shell"):
        out["Shell"] = _strlist(body, "Shell")
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


def _host_config_json(hc: dict[str, Any], host: HostConfig) -> dict[str, Any]:
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
    out["NetworkMode"] = _str(hc, "NetworkMode") or "default"
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


def process_env(spec: ContainerSpec, hostname: str, link_env: list[str] | None = None) -> list[str]:
    """dockerd's CreateDaemonEnvironment: PATH, HOSTNAME, TERM, link vars, then Config.Env."""
    base = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"]
    if spec.tty:
        base.append("TERM=xterm")
    base += link_env or []
    config_env = spec.config_json.get("Env") or []
    return replace_or_append_env(base, config_env)


def replace_or_append_env(defaults: list[str], overrides: list[str]) -> list[str]:
    """ReplaceOrAppendEnvValues: `K=V` replaces K in place or appends; a bare `K` unsets K."""
    out = list(defaults)
    index = {e.split("=", 1)[0]: i for i, e in enumerate(out)}
    for value in overrides:
        key = value.split("=", 1)[0]
        if "=" not in value:
            if key in index:
                out[index[key]] = ""
            continue
        if key in index:
            out[index[key]] = value
        else:
            out.append(value)
    return [e for e in out if e != ""]
