"""HostConfig security options as dockerd 20.10 and runc apply them: `SecurityOpt`
(no-new-privileges, seccomp, label, apparmor), the IPC / PID / UTS / user namespace modes and
`Sysctls`.

Create-time checks (`validate_host_config`) answer with dockerd's `verifyPlatformContainerSettings`
and `parseSecurityOpt` wording; start-time ones (`shim_security`) with runc's, as the container
start wraps them.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proto.docker.errors import DockerError, InvalidParameter
from runtime import seccomp, shm
from runtime.config_fields import get_str

if TYPE_CHECKING:
    from runtime.config_types import ContainerSpec, HostConfig
    from runtime.containers import Runtime

UNCONFINED = "unconfined"
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


@dataclass
class SecurityOptions:
    no_new_privileges: bool = False
    seccomp: str = ""  # "" = the default profile, "unconfined", or a profile's JSON


def parse_security_opts(opts: list[str]) -> SecurityOptions:
    """daemon.parseSecurityOpt: labels and AppArmor profiles are accepted as dockerd does on a
    host where SELinux and AppArmor are off (flotilla applies neither)."""
    out = SecurityOptions()
    for opt in opts:
        if opt == "no-new-privileges":
            out.no_new_privileges = True
            continue
        if opt == "disable":
            continue
        if "=" in opt:
            key, value = opt.split("=", 1)
        elif ":" in opt:
            key, value = opt.split(":", 1)
        else:
            raise DockerError(f'invalid --security-opt 1: "{opt}"')
        if key in ("label", "apparmor"):
            continue
        if key == "seccomp":
            out.seccomp = value
        elif key == "no-new-privileges" and value in _TRUE + _FALSE:
            out.no_new_privileges = value in _TRUE
        else:
            raise DockerError(f'invalid --security-opt 2: "{opt}"')
    return out


def _mode_ok(mode: str, plain: tuple[str, ...]) -> bool:
    if mode in plain:
        return True
    kind, _, target = mode.partition(":")
    return kind == "container" and target != ""


def validate_host_config(hc: dict[str, Any]) -> None:
    """verifyPlatformContainerSettings' namespace checks, plus SecurityOpt as create parses it."""
    ipc = get_str(hc, "IpcMode")
    if not _mode_ok(ipc, ("", "none", "private", "shareable", "host")):
        raise InvalidParameter(f"invalid IPC mode: {ipc}")
    pid = get_str(hc, "PidMode")
    if not _mode_ok(pid, ("", "host")):
        raise InvalidParameter(f"invalid PID mode: {pid}")
    uts = get_str(hc, "UTSMode")
    if uts not in ("", "host"):
        raise InvalidParameter(f"invalid UTS mode: {uts}")
    # Only the host user namespace exists here (no --userns-remap): anything else is refused
    # rather than silently run as host root.
    userns = get_str(hc, "UsernsMode")
    if userns not in ("", "host"):
        raise InvalidParameter(f"invalid USER mode: {userns}")
    parse_security_opts([str(o) for o in hc.get("SecurityOpt") or []])


# ---------------------------------------------------------------- start time

_IPC_SYSCTLS = {
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
}


def _runc_error(message: str) -> DockerError:
    return DockerError(
        f"failed to create shim task: OCI runtime create failed: runc create failed: {message}: "
        "unknown"
    )


def check_sysctls(sysctls: dict[str, str], hc: HostConfig) -> None:
    """runc's validator: only sysctls of a namespace the container has to itself."""
    for key in sysctls:
        if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
            if hc.ipc_mode == "host":
                raise _runc_error(f'sysctl "{key}" is not allowed in the hosts ipc namespace')
            continue
        if key.startswith("net."):
            if hc.network_mode == "host":
                raise _runc_error(f'sysctl "{key}" is not allowed in the hosts network namespace')
            continue
        if hc.uts_mode != "host":
            if key == "kernel.domainname":
                continue
            if key == "kernel.hostname":
                raise _runc_error(
                    f'sysctl "{key}" is not allowed as it conflicts with the OCI "hostname" field'
                )
        raise _runc_error(f'sysctl "{key}" is not in a separate kernel namespace')


@dataclass
class ShimSecurity:
    """What `launch.spec_records` writes for the options above."""

    ipcns: str = "new"
    pidns: str = "new"
    seccomp_path: str = ""
    no_new_privs: bool = False
    # `--ipc container:`: the donor's /dev/shm directory on the host (runtime/shm.py).
    shm_source: str = ""


def _running_pid(rt: Runtime, ref: str, what: str) -> int:
    try:
        target = rt.get(ref)
    except DockerError as err:
        raise DockerError(f"{what}: {err.message}") from None
    if not target.running:
        raise DockerError(f"{what}: Container {target.id} is not running")
    return target.pid


def shim_security(rt: Runtime, spec: ContainerSpec, bundle: str, caps: list[str]) -> ShimSecurity:
    """Resolve the namespace modes and compile the seccomp profile for one start."""
    hc = spec.host_config
    opts = parse_security_opts(hc.security_opt)
    out = ShimSecurity(no_new_privs=opts.no_new_privileges)
    check_sysctls(hc.sysctls, hc)
    if hc.ipc_mode == "host":
        out.ipcns = "host"
    elif hc.ipc_mode.startswith("container:"):
        ref = hc.ipc_mode.split(":", 1)[1]
        what = f"can't join IPC of container {ref}"
        pid = _running_pid(rt, ref, what)
        out.shm_source = shm.joinable(rt.get(ref))
        if not out.shm_source:
            raise DockerError(
                f"{what}: non-shareable IPC (hint: use IpcMode:shareable for the donor container)"
            )
        out.ipcns = f"/proc/{pid}/ns/ipc"
    if hc.pid_mode == "host":
        out.pidns = "host"
    elif hc.pid_mode.startswith("container:"):
        ref = hc.pid_mode.split(":", 1)[1]
        pid = _running_pid(rt, ref, f"cannot join PID of a non running container: {ref}")
        out.pidns = f"/proc/{pid}/ns/pid"
    path = os.path.join(bundle, "seccomp")
    if hc.privileged or opts.seccomp == UNCONFINED:
        _remove(path)
        return out
    profile = seccomp.load_profile(opts.seccomp) if opts.seccomp else seccomp.default_profile()
    seccomp.write_rules(path, seccomp.compile_profile(profile, caps))
    out.seccomp_path = path
    return out


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
