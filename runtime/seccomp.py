"""Seccomp: Docker's default profile, user profiles (`--security-opt seccomp=<json>`) and their
translation into the rule file the shim loads with libseccomp (runtime/shim/seccomp.c).

The default profile is written here in our own compact form and expanded into Docker's profile
schema (`defaultAction`, `archMap`, `syscalls[]` with `includes`/`excludes`), so the default and
a user's profile go through one translator. It allows what Docker's default profile allows:
the same syscalls, the same ones gated on a capability of the container's bounding set or on the
architecture, the same argument filters (`socket` without AF_VSOCK, `personality` with the five
harmless personas, `clone` without namespace flags), `clone3` answering ENOSYS without
CAP_SYS_ADMIN so libcs fall back to `clone`, and EPERM for everything else.

Rule file (one rule a line, space separated):
    default <action> <ret>
    arch <libseccomp arch name>
    <action> <ret> <syscall> [<arg index> <op> <value> <value two>]...
actions: allow errno kill kill_process trap trace log; ops: ne lt le eq ge gt masked_eq.
Conditions on one line are ANDed; rules for one syscall are ORed.
"""

from __future__ import annotations

import json
import os
import platform
from typing import Any

from proto.docker.errors import DockerError

# ---------------------------------------------------------------- the default profile

_ALLOWED = """
accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2
dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchown fchown32 fchownat fcntl
fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64
fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_time64 futex_waitv futimesat getcpu
getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups
getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid
getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid getsockname
getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr inotify_add_watch
inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy io_getevents
io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit io_uring_enter
io_uring_register io_uring_setup ipc kill landlock_add_rule landlock_create_ruleset
landlock_restrict_self lchown lchown32 lgetxattr link linkat listen listxattr llistxattr _llseek
lremovexattr lseek lsetxattr lstat lstat64 madvise membarrier memfd_create memfd_secret mincore
mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify
mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap
msgctl msgget msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep
newfstatat _newselect open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2
pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2
prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead
readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages
removexattr rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending
rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
sched_get_priority_min sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select
semctl semget semop semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg
sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer
setpgid setpriority setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid
setreuid32 setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid
setuid32 setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask
sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync
sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun
timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime
timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit
umask uname unlink unlinkat utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid
waitpid write writev
"""

# Allowed only when the container's bounding set holds the capability.
_BY_CAP = {
    "CAP_DAC_READ_SEARCH": "open_by_handle_at",
    "CAP_SYS_ADMIN": "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie "
    "mount mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname "
    "sethostname setns syslog umount umount2 unshare",
    "CAP_SYS_BOOT": "reboot",
    "CAP_SYS_CHROOT": "chroot",
    "CAP_SYS_MODULE": "delete_module init_module finit_module",
    "CAP_SYS_PACCT": "acct",
    "CAP_SYS_PTRACE": "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
    "CAP_SYS_RAWIO": "iopl ioperm",
    "CAP_SYS_TIME": "settimeofday stime clock_settime clock_settime64",
    "CAP_SYS_TTY_CONFIG": "vhangup",
    "CAP_SYS_NICE": "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
    "CAP_SYSLOG": "syslog",
    "CAP_BPF": "bpf",
    "CAP_PERFMON": "perf_event_open",
}

# Allowed on these (Go) architectures only.
_BY_ARCH = [
    ("sync_file_range2 swapcontext", ["ppc64le"]),
    (
        "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
        ["arm", "arm64"],
    ),
    ("arch_prctl", ["amd64", "x32"]),
    ("modify_ldt", ["amd64", "x32", "x86"]),
    ("s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr", ["s390", "s390x"]),
    ("riscv_flush_icache", ["riscv64"]),
]

# personality(2) personas a container may switch to: Linux, and its 32-bit and uname variants.
_PERSONAS = [0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF]
_AF_VSOCK = 40
# CLONE_NEWNS|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWCGROUP: clone may not make namespaces.
_CLONE_NS_FLAGS = 0x7E020000

_ARCH_MAP = {
    "SCMP_ARCH_X86_64": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "SCMP_ARCH_AARCH64": ["SCMP_ARCH_ARM"],
    "SCMP_ARCH_MIPS64": ["SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32"],
    "SCMP_ARCH_MIPS64N32": ["SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64"],
    "SCMP_ARCH_MIPSEL64": ["SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32"],
    "SCMP_ARCH_MIPSEL64N32": ["SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64"],
    "SCMP_ARCH_S390X": ["SCMP_ARCH_S390"],
    "SCMP_ARCH_RISCV64": [],
}

# Go's GOARCH (what profiles' `arches` name) and the libseccomp native arch, from uname -m.
_GOARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64": "mips64",
}
_NATIVE_SCMP = {
    "amd64": "SCMP_ARCH_X86_64",
    "arm64": "SCMP_ARCH_AARCH64",
    "arm": "SCMP_ARCH_ARM",
    "386": "SCMP_ARCH_X86",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "s390x": "SCMP_ARCH_S390X",
    "riscv64": "SCMP_ARCH_RISCV64",
    "mips64": "SCMP_ARCH_MIPS64",
}


def default_profile() -> dict[str, Any]:
    """Docker's default seccomp profile, in Docker's profile schema."""
    allow = "SCMP_ACT_ALLOW"
    rules: list[dict[str, Any]] = [{"names": _ALLOWED.split(), "action": allow}]
    rules.append(
        {
            "names": ["process_vm_readv", "process_vm_writev", "ptrace"],
            "action": allow,
            "includes": {"minKernel": "4.8"},
        }
    )
    rules.append(
        {
            "names": ["socket"],
            "action": allow,
            "args": [{"index": 0, "value": _AF_VSOCK, "op": "SCMP_CMP_NE"}],
        }
    )
    for persona in _PERSONAS:
        rules.append(
            {
                "names": ["personality"],
                "action": allow,
                "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}],
            }
        )
    for names, arches in _BY_ARCH:
        rules.append({"names": names.split(), "action": allow, "includes": {"arches": arches}})
    for cap in ("CAP_DAC_READ_SEARCH", "CAP_SYS_ADMIN"):
        rules.append({"names": _BY_CAP[cap].split(), "action": allow, "includes": {"caps": [cap]}})
    for index, arches_key in ((0, "excludes"), (1, "includes")):
        # s390 passes clone's flags second.
        rule: dict[str, Any] = {
            "names": ["clone"],
            "action": allow,
            "args": [{"index": index, "value": _CLONE_NS_FLAGS, "op": "SCMP_CMP_MASKED_EQ"}],
            "excludes": {"caps": ["CAP_SYS_ADMIN"]},
        }
        if arches_key == "excludes":
            rule["excludes"]["arches"] = ["s390", "s390x"]
        else:
            rule["includes"] = {"arches": ["s390", "s390x"]}
        rules.append(rule)
    rules.append(
        {
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 38,  # ENOSYS
            "excludes": {"caps": ["CAP_SYS_ADMIN"]},
        }
    )
    for cap, names in _BY_CAP.items():
        if cap not in ("CAP_DAC_READ_SEARCH", "CAP_SYS_ADMIN"):
            rules.append({"names": names.split(), "action": allow, "includes": {"caps": [cap]}})
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [
            {"architecture": a, "subArchitectures": subs or None} for a, subs in _ARCH_MAP.items()
        ],
        "syscalls": rules,
    }


# ---------------------------------------------------------------- user profiles


def _go_json_error(text: str, e: json.JSONDecodeError) -> str:
    """Go encoding/json's wording for the usual malformed documents."""
    if e.pos >= len(text.rstrip()):
        return "unexpected end of JSON input"
    return f"invalid character {text[e.pos]!r} looking for beginning of value"


def load_profile(text: str) -> dict[str, Any]:
    """A profile sent as `seccomp=<json>`; malformed → dockerd's start error."""
    try:
        profile = json.loads(text)
    except json.JSONDecodeError as e:
        raise DockerError(f"Decoding seccomp profile failed: {_go_json_error(text, e)}") from None
    if not isinstance(profile, dict):
        kind = "array" if isinstance(profile, list) else type(profile).__name__
        raise DockerError(
            f"Decoding seccomp profile failed: json: cannot unmarshal {kind} into Go value of "
            "type seccomp.Seccomp"
        )
    return profile


# ---------------------------------------------------------------- translation

_ACTIONS = {
    "SCMP_ACT_KILL": "kill",
    "SCMP_ACT_KILL_THREAD": "kill",
    "SCMP_ACT_KILL_PROCESS": "kill_process",
    "SCMP_ACT_TRAP": "trap",
    "SCMP_ACT_ERRNO": "errno",
    "SCMP_ACT_TRACE": "trace",
    "SCMP_ACT_ALLOW": "allow",
    "SCMP_ACT_LOG": "log",
}
_OPS = {
    "SCMP_CMP_NE": "ne",
    "SCMP_CMP_LT": "lt",
    "SCMP_CMP_LE": "le",
    "SCMP_CMP_EQ": "eq",
    "SCMP_CMP_GE": "ge",
    "SCMP_CMP_GT": "gt",
    "SCMP_CMP_MASKED_EQ": "masked_eq",
}
_EPERM = 1


def host_goarch() -> str:
    return _GOARCH.get(platform.machine(), platform.machine())


def kernel_version() -> tuple[int, int]:
    parts = platform.release().split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def _version(text: str) -> tuple[int, int]:
    parts = (text.split(".") + ["0"])[:2]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        raise DockerError(f"invalid kernel version: {text}") from None


def _action(name: Any, ret: Any) -> str:
    if name not in _ACTIONS:
        raise DockerError(f"unsupported seccomp action: {name}")
    if name == "SCMP_ACT_ERRNO":
        return f"errno {int(ret) if ret is not None else _EPERM}"
    if name == "SCMP_ACT_TRACE":
        return f"trace {int(ret) if ret is not None else _EPERM}"
    return f"{_ACTIONS[name]} 0"


Filter = dict[str, Any] | None


def _included(filt: Filter, caps: list[str], arch: str, kernel: tuple[int, int]) -> bool:
    """`includes`: every condition it lists holds (all its caps, one of its arches)."""
    if not filt:
        return True
    if filt.get("caps") and not all(c in caps for c in filt["caps"]):
        return False
    if filt.get("arches") and arch not in filt["arches"]:
        return False
    return not filt.get("minKernel") or kernel >= _version(str(filt["minKernel"]))


def _excluded(filt: Filter, caps: list[str], arch: str, kernel: tuple[int, int]) -> bool:
    """`excludes`: any condition it lists holds."""
    if not filt:
        return False
    if any(c in caps for c in filt.get("caps") or []):
        return True
    if arch in (filt.get("arches") or []):
        return True
    return bool(filt.get("minKernel")) and kernel >= _version(str(filt["minKernel"]))


def _arches(profile: dict[str, Any], arch: str) -> list[str]:
    if profile.get("architectures") and profile.get("archMap"):
        raise DockerError(
            "'architectures' and 'archMap' were specified in the seccomp profile, use either "
            "'architectures' or 'archMap'"
        )
    arches = list(profile.get("architectures") or [])
    native = _NATIVE_SCMP.get(arch)
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == native:
            arches += [entry["architecture"], *(entry.get("subArchitectures") or [])]
    return [a.removeprefix("SCMP_ARCH_").lower() for a in arches]


def _conditions(args: list[dict[str, Any]]) -> list[list[str]]:
    """runc's rule: conditions on distinct arguments are ANDed in one rule; several on one
    argument (libseccomp can't AND those) become one rule each."""
    conds = []
    for a in args:
        op = a.get("op")
        if op not in _OPS:
            raise DockerError(f"unsupported seccomp operator: {op}")
        conds.append(
            f"{int(a.get('index', 0))} {_OPS[op]} {int(a.get('value', 0))} "
            f"{int(a.get('valueTwo', 0))}"
        )
    indexes = [int(a.get("index", 0)) for a in args]
    if len(set(indexes)) == len(indexes):
        return [conds]
    return [[c] for c in conds]


def compile_profile(
    profile: dict[str, Any], caps: list[str], arch: str = "", kernel: tuple[int, int] | None = None
) -> str:
    """The shim's rule file for `profile` in a container whose bounding set is `caps`."""
    arch = arch or host_goarch()
    kernel = kernel or kernel_version()
    default = _action(profile.get("defaultAction"), profile.get("defaultErrnoRet"))
    lines = [f"default {default}"]
    lines += [f"arch {a}" for a in _arches(profile, arch)]
    for call in profile.get("syscalls") or []:
        if call.get("name") and call.get("names"):
            raise DockerError(
                "'name' and 'names' were specified in the seccomp profile, use either 'name' "
                "or 'names'"
            )
        if not _included(call.get("includes"), caps, arch, kernel):
            continue
        if _excluded(call.get("excludes"), caps, arch, kernel):
            continue
        action = _action(call.get("action"), call.get("errnoRet"))
        names = call.get("names") or ([call["name"]] if call.get("name") else [])
        for name in names:
            for conds in _conditions(call.get("args") or []):
                lines.append(" ".join([action, name, *conds]))
    return "\n".join(lines) + "\n"


def write_rules(path: str, text: str) -> None:
    """Written private: it is read by the root shim only."""
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
