"""The typed result of `config.parse_create`: `ContainerSpec` and its `HostConfig`, `Mount`,
`Resources`, `RestartPolicy`, with dockerd's defaults (SHM size, masked and read-only paths).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_SHM_SIZE = 64 * 1024 * 1024


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
    volume_driver: str = ""  # for `-v NAME:/dst` and the anonymous volumes of Config.Volumes
    links: list[str] = field(default_factory=list)  # raw "name:alias"; see links.parse_link
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    auto_remove: bool = False
    resources: Resources = field(default_factory=Resources)
    cap_add: list[str] = field(default_factory=list)  # normalized: CAP_X or ALL
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    # HostConfig.Devices entries (PathOnHost, PathInContainer, CgroupPermissions) and
    # DeviceCgroupRules, resolved at start by runtime/devices.py as dockerd does.
    devices: list[dict[str, str]] = field(default_factory=list)
    device_cgroup_rules: list[str] = field(default_factory=list)
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
