"""Linux capabilities as dockerd 20.10 handles them: the 14 defaults, the known set,
`--cap-add`/`--cap-drop` normalisation and the effective list of a container or exec.
"""

from __future__ import annotations

import functools

from proto.docker.errors import InvalidParameter, go_quote

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
            raise InvalidParameter(f"unknown capability: {go_quote(c)}")
        out.append(c)
    return out


def _known_caps() -> list[str]:
    last = _last_cap()
    return list(ALL_CAPABILITIES) if last is None else ALL_CAPABILITIES[: last + 1]


@functools.cache
def _last_cap() -> int | None:
    """The kernel's highest capability number: fixed while it runs, read once (every create
    asks)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _available_caps() -> list[str]:
    """The known capabilities this process can grant: dockerd's GetAllCapabilities leaves out
    those missing from its own bounding set (Docker-in-Docker, a restricted host), which a
    privileged container could never get (capset fails)."""
    try:
        with open("/proc/self/status") as f:
            bounding = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    except (OSError, StopIteration, ValueError):
        return _known_caps()
    return [c for c in _known_caps() if bounding >> ALL_CAPABILITIES.index(c) & 1]


def effective_caps(cap_add: list[str], cap_drop: list[str], privileged: bool) -> list[str]:
    """caps.TweakCapabilities over Docker's default 14 (duplicates kept, as dockerd does)."""
    if privileged:
        return _available_caps()
    if not cap_add and not cap_drop:
        return list(DEFAULT_CAPABILITIES)
    drops = normalize_caps(cap_drop)
    adds = normalize_caps(cap_add)
    if "ALL" in adds:
        return [c for c in _available_caps() if c not in drops]
    if "ALL" in drops:
        return adds
    return [c for c in DEFAULT_CAPABILITIES if c not in drops] + adds
