"""Docker's container create body, validated and merged with the image config like dockerd does.

`parse_create` applies, in dockerd 20.10's order, the checks a create request goes through
(decode-time network-mode conflicts, `verifyContainerSettings`, `verifyNetworkingConfig`,
`adaptContainerSettings`, the image merge, the log config, mount and link registration) and
returns a typed `ContainerSpec` (`runtime/config_types.py`). Errors carry dockerd's wording and
status. The checks of one kind live in their own module (`config_network`, `config_mounts`,
`config_resources`, `config_logs`, `config_caps`, `config_values`); this one holds the order,
the container-level checks (working dir, env, healthcheck, restart policy), the image merge and
the process environment.
"""

from __future__ import annotations

import copy
import posixpath
import socket
from typing import Any

from proto.docker.errors import DockerError, InvalidParameter
from runtime.config_caps import normalize_caps
from runtime.config_fields import (
    get_bool,
    get_dict,
    get_int,
    get_opt_int,
    get_str,
    get_strlist,
    type_error,
)
from runtime.config_inspect import config_json, host_config_json
from runtime.config_logs import parse_log_config
from runtime.config_mounts import parse_mount, parse_volumes_from, register_binds
from runtime.config_network import (
    is_user_defined_network,
    port_bindings,
    validate_extra_host,
    validate_net_mode,
    verify_networking_config,
)
from runtime.config_resources import parse_resources
from runtime.config_types import (
    DEFAULT_SHM_SIZE,
    MASKED_PATHS,
    READONLY_PATHS,
    ContainerSpec,
    HostConfig,
    Mount,
    Resources,
    RestartPolicy,
)
from runtime.config_values import DEFAULT_STOP_SIGNAL, parse_signal
from runtime.links import parse_link
from runtime.security import validate_host_config as validate_security

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


MIN_DURATION_NS = 1_000_000  # containertypes.MinimumDuration (1ms)


RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")


def _image_config(image_config: dict[str, Any] | None) -> dict[str, Any]:
    """Accept the image's config blob (`config`), an inspect body (`Config`) or the Config."""
    if not image_config:
        return {}
    for key in ("config", "Config"):
        inner = image_config.get(key)
        if isinstance(inner, dict):
            return inner
    return image_config


def _validate_container_config(body: dict[str, Any]) -> None:
    wd = get_str(body, "WorkingDir")
    if wd and not wd.startswith("/"):
        raise InvalidParameter(
            f"the working directory '{wd}' is invalid, it needs to be an absolute path"
        )
    if get_str(body, "StopSignal"):
        parse_signal(get_str(body, "StopSignal"))
    for env in get_strlist(body, "Env") or []:
        if env.split("=", 1)[0] == "":
            raise InvalidParameter(f"invalid environment variable: {env}")
    _validate_healthcheck(get_dict(body, "Healthcheck"))


def _validate_healthcheck(h: dict[str, Any] | None) -> None:
    if h is None:
        return
    for key in ("Interval", "Timeout"):
        if get_int(h, key) != 0 and get_int(h, key) < MIN_DURATION_NS:
            raise InvalidParameter(f"{key} in Healthcheck cannot be less than 1ms")
    if get_int(h, "Retries") < 0:
        raise InvalidParameter("Retries in Healthcheck cannot be negative")
    if get_int(h, "StartPeriod") != 0 and get_int(h, "StartPeriod") < MIN_DURATION_NS:
        raise InvalidParameter("StartPeriod in Healthcheck cannot be less than 1ms")


def _restart_policy(hc: dict[str, Any]) -> RestartPolicy:
    rp = get_dict(hc, "RestartPolicy") or {}
    return RestartPolicy(get_str(rp, "Name"), get_int(rp, "MaximumRetryCount"))


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


def _validate_host_config(hc: dict[str, Any], check_bind_sources: bool) -> list[Mount]:
    """validateHostConfig: AutoRemove, Mounts, ExtraHosts, ports, restart policy, caps."""
    rp = _restart_policy(hc)
    if get_bool(hc, "AutoRemove") and rp.name not in ("", "no"):
        raise InvalidParameter("can't create 'AutoRemove' container with restart policy")
    mounts = [parse_mount(m, check_bind_sources) for m in (hc.get("Mounts") or [])]
    for extra in get_strlist(hc, "ExtraHosts") or []:
        validate_extra_host(extra)
    port_bindings(hc)
    _validate_restart_policy(rp)
    for key in ("CapAdd", "CapDrop"):
        try:
            normalize_caps(get_strlist(hc, key) or [])
        except DockerError as err:
            raise InvalidParameter(f"invalid {key}: {err.message}") from None
    return mounts


def _verify_platform(hc: dict[str, Any], warnings: list[str]) -> Resources:
    """verifyPlatformContainerSettings."""
    resources = parse_resources(hc, warnings)
    if get_int(hc, "ShmSize") < 0:
        raise InvalidParameter("SHM size can not be less than 0")
    adj = get_int(hc, "OomScoreAdj")
    if not -1000 <= adj <= 1000:
        raise InvalidParameter(f"Invalid value {adj}, range for oom score adj is [-1000, 1000]")
    if get_str(hc, "NetworkMode") == "host" and hc.get("PortBindings"):
        warnings.append("Published ports are discarded when using host network mode")
    runtime = get_str(hc, "Runtime") or "runc"
    if runtime != "runc":
        raise InvalidParameter(f"Unknown runtime specified {runtime}")
    for dest in get_dict(hc, "Tmpfs") or {}:
        if posixpath.normpath(dest.replace("\\", "/")) == "/":
            raise InvalidParameter("invalid specification: destination can't be '/'")
        if not dest.startswith("/"):
            raise InvalidParameter(f"invalid mount path: '{dest}' mount path must be absolute")
    validate_security(hc)
    cgroupns = get_str(hc, "CgroupnsMode")
    if cgroupns not in ("", "host", "private"):
        raise InvalidParameter(f"invalid cgroup namespace mode: {cgroupns}")
    return resources


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
        "User": get_str(body, "User") or get_str(image, "User"),
        "ExposedPorts": _merge_set(get_dict(body, "ExposedPorts"), get_dict(image, "ExposedPorts")),
        "Env": _merge_env(get_strlist(body, "Env"), get_strlist(image, "Env")),
        "WorkingDir": get_str(body, "WorkingDir") or get_str(image, "WorkingDir"),
        "Volumes": _merge_set(get_dict(body, "Volumes"), get_dict(image, "Volumes")),
        "StopSignal": get_str(body, "StopSignal") or get_str(image, "StopSignal"),
        "Healthcheck": _merge_healthcheck(
            get_dict(body, "Healthcheck"), get_dict(image, "Healthcheck")
        ),
        "ArgsEscaped": get_bool(body, "ArgsEscaped"),
    }
    labels = dict(get_dict(body, "Labels") or {})
    for k, v in (get_dict(image, "Labels") or {}).items():
        labels.setdefault(k, v)
    conf["Labels"] = labels
    entrypoint = get_strlist(body, "Entrypoint")
    cmd = get_strlist(body, "Cmd")
    if not entrypoint:
        if not cmd:
            cmd = get_strlist(image, "Cmd")
            conf["ArgsEscaped"] = get_bool(image, "ArgsEscaped")
        if entrypoint is None:
            entrypoint = get_strlist(image, "Entrypoint")
    # `--entrypoint ""` arrives as [""]: it clears the image's entrypoint
    if entrypoint == [""]:
        entrypoint = None
    if not entrypoint and not cmd:
        raise InvalidParameter("No command specified")
    conf["Entrypoint"] = entrypoint
    conf["Cmd"] = cmd
    return conf


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
    hc = get_dict(body, "HostConfig") or {}
    nc = get_dict(body, "NetworkingConfig") or {}
    warnings: list[str] = []
    validate_net_mode(body, hc)
    _validate_container_config(body)
    mounts = _validate_host_config(hc, check_bind_sources)
    resources = _verify_platform(hc, warnings)
    verify_networking_config(nc)
    if resources.memory > 0 and resources.memory_swap == 0:
        resources.memory_swap = resources.memory * 2  # adaptContainerSettings
    merged = _merge(body, _image_config(image_config))
    log_config = parse_log_config(hc)
    host = _build_host_config(hc, mounts, resources, log_config)
    entrypoint, cmd = merged["Entrypoint"], merged["Cmd"]
    stop_signal_raw = merged["StopSignal"]
    hostname = get_str(body, "Hostname")
    if not hostname:
        hostname = socket.gethostname() if host.network_mode == "host" else cid[:12]
    env = _process_base_env(merged["Env"] or [])
    spec = ContainerSpec(
        cid=cid,
        image=get_str(body, "Image"),
        args=list(entrypoint or []) + list(cmd or []),
        entrypoint=entrypoint,
        cmd=cmd,
        env=env,
        working_dir=merged["WorkingDir"],
        user=merged["User"],
        hostname=hostname,
        domainname=get_str(body, "Domainname"),
        tty=get_bool(body, "Tty"),
        open_stdin=get_bool(body, "OpenStdin"),
        stdin_once=get_bool(body, "StdinOnce"),
        attach_stdin=get_bool(body, "AttachStdin"),
        attach_stdout=get_bool(body, "AttachStdout"),
        attach_stderr=get_bool(body, "AttachStderr"),
        labels=merged["Labels"],
        stop_signal=parse_signal(stop_signal_raw) if stop_signal_raw else DEFAULT_STOP_SIGNAL,
        stop_timeout=get_opt_int(body, "StopTimeout"),
        exposed_ports=list(merged["ExposedPorts"] or {}),
        healthcheck=merged["Healthcheck"],
        volumes=list(merged["Volumes"] or {}),
        host_config=host,
        networking_config=nc,
        warnings=warnings,
        config_json={},
        host_config_json={},
    )
    spec.config_json = config_json(body, merged, hostname)
    spec.host_config_json = host_config_json(hc, host)
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
    mode = get_str(hc, "NetworkMode") or "default"
    privileged = get_bool(hc, "Privileged")
    tmpfs = {str(k): str(v) for k, v in (get_dict(hc, "Tmpfs") or {}).items()}
    binds = register_binds(hc, tmpfs, mounts)
    volumes_from = [parse_volumes_from(v) for v in get_strlist(hc, "VolumesFrom") or []]
    links = get_strlist(hc, "Links") or []
    if not is_user_defined_network(mode):  # registerLinks ignores links on user-defined networks
        for link in links:
            parse_link(link)
    masked = get_strlist(hc, "MaskedPaths")
    readonly = get_strlist(hc, "ReadonlyPaths")
    return HostConfig(
        network_mode="bridge" if mode == "default" else mode,
        port_bindings=port_bindings(hc),
        publish_all=get_bool(hc, "PublishAllPorts"),
        binds=binds,
        mounts=mounts,
        volume_driver=get_str(hc, "VolumeDriver"),
        tmpfs=tmpfs,
        volumes_from=volumes_from,
        links=links,
        restart_policy=_restart_policy(hc),
        auto_remove=get_bool(hc, "AutoRemove"),
        resources=resources,
        cap_add=normalize_caps(get_strlist(hc, "CapAdd") or []),
        cap_drop=normalize_caps(get_strlist(hc, "CapDrop") or []),
        privileged=privileged,
        devices=_device_mappings(hc),
        device_cgroup_rules=get_strlist(hc, "DeviceCgroupRules") or [],
        readonly_rootfs=get_bool(hc, "ReadonlyRootfs"),
        dns=get_strlist(hc, "Dns") or [],
        dns_search=get_strlist(hc, "DnsSearch") or [],
        dns_options=get_strlist(hc, "DnsOptions") or [],
        extra_hosts=[validate_extra_host(e) for e in get_strlist(hc, "ExtraHosts") or []],
        log_config=log_config,
        sysctls={str(k): str(v) for k, v in (get_dict(hc, "Sysctls") or {}).items()},
        shm_size=get_int(hc, "ShmSize") or DEFAULT_SHM_SIZE,
        init=hc.get("Init"),
        security_opt=get_strlist(hc, "SecurityOpt") or [],
        oom_score_adj=get_int(hc, "OomScoreAdj"),
        masked_paths=masked if masked is not None else ([] if privileged else MASKED_PATHS[:]),
        readonly_paths=(
            readonly if readonly is not None else ([] if privileged else READONLY_PATHS[:])
        ),
        group_add=get_strlist(hc, "GroupAdd") or [],
        ipc_mode=get_str(hc, "IpcMode") or "private",
        pid_mode=get_str(hc, "PidMode"),
        uts_mode=get_str(hc, "UTSMode"),
    )


def _device_mappings(hc: dict[str, Any]) -> list[dict[str, str]]:
    """HostConfig.Devices as []DeviceMapping: objects of three strings."""
    raw = hc.get("Devices")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise type_error(raw, "[]container.DeviceMapping")
    out = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise type_error(entry, "container.DeviceMapping")
        keys = ("PathOnHost", "PathInContainer", "CgroupPermissions")
        out.append({k: get_str(entry, k) for k in keys})
    return out


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
