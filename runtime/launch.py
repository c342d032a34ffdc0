"""Turning a container record into a shim spec: root filesystem, mounts, namespaces, identity.

Everything here runs when a container starts; what it sets up in the kernel outside the
container's own namespaces (cgroups, veth, netns file, NAT rules) is undone by `teardown` in
`runtime/containers.py`, which also runs on reconcile after a crash.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from runtime import config_types


@dataclass
class MountSpec:
    source: str
    target: str
    fstype: str = "none"
    flags: list[str] = field(default_factory=list)
    data: str = ""

    def record(self) -> str:
        return "\x1f".join([self.source, self.target, self.fstype, ",".join(self.flags), self.data])


def bind(source: str, target: str, readonly: bool = False) -> MountSpec:
    flags = ["rbind", "rprivate"] + (["ro"] if readonly else [])
    return MountSpec(source, target, "bind", flags)


def tmpfs(target: str, options: str) -> MountSpec:
    flags = ["nosuid", "nodev", "noexec"]
    data: list[str] = []
    for opt in (o for o in options.split(",") if o):
        if opt in ("ro", "nosuid", "nodev", "noexec", "rw", "exec", "suid", "dev"):
            if opt == "exec":
                flags.remove("noexec")
            elif opt == "suid":
                flags.remove("nosuid")
            elif opt == "dev":
                flags.remove("nodev")
            elif opt != "rw":
                flags.append(opt)
        else:
            data.append(opt)
    return MountSpec("tmpfs", target, "tmpfs", flags, ",".join(data))


def parse_user(user: str) -> str:
    return user or "0:0"


@dataclass
class ShimInputs:
    """What `spec_records` needs beyond the container spec itself."""

    bundle: str
    lowerdirs: list[str]
    cgroup_dirs: list[str]
    netns: str
    net_ip: str = ""
    net_prefix: int = 0
    net_gw: str = ""
    hostname: str = ""
    env: list[str] = field(default_factory=list)
    mounts: list[MountSpec] = field(default_factory=list)
    caps: list[str] = field(default_factory=list)
    log_max_size: int = 0
    log_max_file: int = 1
    log_path: str = ""
    hold_output: bool = False
    # devices_default / device_rule / device records (runtime/devices.py)
    devices: list[tuple[str, str]] = field(default_factory=list)
    ipcns: str = "new"
    pidns: str = "new"
    seccomp: str = ""  # rule file; "" = unconfined
    no_new_privs: bool = False


def spec_records(spec: config_types.ContainerSpec, inputs: ShimInputs) -> list[tuple[str, str]]:
    b = inputs.bundle
    records: list[tuple[str, str]] = [("mode", "container")]
    records += [("arg", a) for a in spec.args]
    records += [("env", e) for e in inputs.env]
    records += [
        ("cwd", spec.working_dir or "/"),
        ("user", parse_user(spec.user)),
        ("hostname", inputs.hostname),
        ("tty", "1" if spec.tty else "0"),
        ("open_stdin", "1" if spec.open_stdin else "0"),
        ("stdin_once", "1" if spec.stdin_once else "0"),
        ("lowerdir", ":".join(inputs.lowerdirs)),
        ("upperdir", os.path.join(b, "upper")),
        ("workdir", os.path.join(b, "work")),
        ("rootfs", os.path.join(b, "rootfs")),
        ("readonly_rootfs", "1" if spec.host_config.readonly_rootfs else "0"),
        ("sysfs_rw", "1" if spec.host_config.privileged else "0"),
        ("netns", inputs.netns),
        ("ipcns", inputs.ipcns),
        ("utsns", "host" if spec.host_config.network_mode == "host" else "new"),
        ("pidns", inputs.pidns),
        ("no_new_privs", "1" if inputs.no_new_privs else "0"),
        ("seccomp", inputs.seccomp),
        ("oom_score_adj", str(spec.host_config.oom_score_adj)),
        ("log_path", inputs.log_path),
        ("log_max_size", str(inputs.log_max_size)),
        ("log_max_file", str(inputs.log_max_file)),
        ("exit_path", os.path.join(b, "exit.json")),
        ("pid_path", os.path.join(b, "init.pid")),
        ("attach_sock", os.path.join(b, "attach.sock")),
        ("hold_output", "1" if inputs.hold_output else "0"),
    ]
    if inputs.net_ip:
        records += [
            ("net_ip", inputs.net_ip),
            ("net_prefix", str(inputs.net_prefix)),
            ("net_gw", inputs.net_gw),
        ]
    records += [("cgroup", d) for d in inputs.cgroup_dirs]
    records += [("mount", m.record()) for m in inputs.mounts]
    records += [("mask", p) for p in spec.host_config.masked_paths]
    records += [("readonly", p) for p in spec.host_config.readonly_paths]
    records += [("sysctl", f"{k}={v}") for k, v in sorted(spec.host_config.sysctls.items())]
    records += [("cap", c) for c in inputs.caps]
    records += inputs.devices
    return records


def exec_records(
    exec_dir: str,
    target_pid: int,
    args: list[str],
    env: list[str],
    user: str,
    cwd: str,
    tty: bool,
    open_stdin: bool,
    caps: list[str],
    cgroup_dirs: list[str],
    no_new_privs: bool,
    seccomp: str,
) -> list[tuple[str, str]]:
    records: list[tuple[str, str]] = [("mode", "exec"), ("target_pid", str(target_pid))]
    records += [("arg", a) for a in args]
    records += [("env", e) for e in env]
    records += [
        ("cwd", cwd or "/"),
        ("user", parse_user(user)),
        ("tty", "1" if tty else "0"),
        ("open_stdin", "1" if open_stdin else "0"),
        ("stdin_once", "1" if open_stdin else "0"),
        ("no_new_privs", "1" if no_new_privs else "0"),
        ("seccomp", seccomp),
        ("exit_path", os.path.join(exec_dir, "exit.json")),
        ("pid_path", os.path.join(exec_dir, "init.pid")),
        ("attach_sock", os.path.join(exec_dir, "attach.sock")),
        ("wait_attach", "1"),
    ]
    records += [("cgroup", d) for d in cgroup_dirs]
    records += [("cap", c) for c in caps]
    return records


def host_hostname() -> str:
    return socket.gethostname()
