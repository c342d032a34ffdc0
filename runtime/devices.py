"""The devices a container may use, as dockerd 20.10 + runc decide them.

Two lists come out of a container's HostConfig: the device nodes to create in its /dev
(`--device`, or every host device for `--privileged`), and the device cgroup policy: a default
(allow or deny) and exceptions to it. The shim writes the policy to the v1 `devices` controller
or compiles it to a BPF_PROG_TYPE_CGROUP_DEVICE program on v2 (runtime/shim/devices.c), before
the container's first process joins the cgroup.

Without the policy, root in a container can `mknod` the host's disk and read it, and a 0666
device node carried in an image layer is usable by anyone in the container.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field

from proto.docker.errors import DockerError

WILDCARD = -1


@dataclass(frozen=True)
class Rule:
    """One device cgroup rule: type `a`/`c`/`b`, major/minor (-1 = `*`), access from `rwm`."""

    type: str
    major: int = WILDCARD
    minor: int = WILDCARD
    access: str = "rwm"
    allow: bool = True

    def text(self) -> str:
        """The v1 `devices.allow`/`devices.deny` line (and the shim's `device_rule` value)."""
        if self.type == "a":
            return "a"
        major = "*" if self.major == WILDCARD else str(self.major)
        minor = "*" if self.minor == WILDCARD else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"


def _allow(kind: str, major: int, minor: int, access: str = "rwm") -> Rule:
    return Rule(kind, major, minor, access, True)


# moby oci/defaults.go DefaultLinuxSpec: deny all, then null, zero, urandom, random, tty,
# console; fuse (10:229) explicitly denied.
MOBY_DEFAULT_RULES = [
    Rule("a", access="rwm", allow=False),
    _allow("c", 1, 5),
    _allow("c", 1, 3),
    _allow("c", 1, 9),
    _allow("c", 1, 8),
    _allow("c", 5, 0),
    _allow("c", 5, 1),
    Rule("c", 10, 229, "rwm", False),
]

# runc libcontainer/specconv AllowedDevices, appended by runc after the spec's own rules: mknod
# of any node (using one still needs an allow rule), the defaults again, full, the pty
# multiplexer and slaves, and tun (kept by runc for compatibility).
RUNC_ALLOWED_RULES = [
    _allow("c", WILDCARD, WILDCARD, "m"),
    _allow("b", WILDCARD, WILDCARD, "m"),
    _allow("c", 1, 3),
    _allow("c", 1, 8),
    _allow("c", 1, 7),
    _allow("c", 5, 0),
    _allow("c", 1, 5),
    _allow("c", 1, 9),
    _allow("c", 136, WILDCARD),
    _allow("c", 5, 2),
    _allow("c", 10, 200),
]


@dataclass(frozen=True)
class Device:
    """A node to create in the container: path inside it, type, numbers, mode bits, owner."""

    path: str
    type: str  # c | b
    major: int
    minor: int
    mode: int = 0o666
    uid: int = 0
    gid: int = 0

    def record(self) -> str:
        """The shim's `device` value (docs/shim-protocol.md)."""
        fields = [self.path, self.type, self.major, self.minor, f"{self.mode:o}"]
        return "\x1f".join(str(f) for f in [*fields, self.uid, self.gid])


@dataclass
class Policy:
    """The kernel's v1 device cgroup state after a sequence of rules (runc's emulator): v2 has
    no kernel state, so the BPF program the shim builds from this behaves exactly as v1."""

    default_allow: bool = True
    exceptions: list[Rule] = field(default_factory=list)

    def apply(self, rule: Rule) -> None:
        if rule.type == "a":
            # `a` switches the default and forgets every exception, whatever access it names.
            self.default_allow = rule.allow
            self.exceptions = []
            return
        same = [
            i
            for i, ex in enumerate(self.exceptions)
            if (ex.type, ex.major, ex.minor) == (rule.type, rule.major, rule.minor)
        ]
        if rule.allow == self.default_allow:
            # A rule agreeing with the default takes its access away from the matching exception.
            for i in reversed(same):
                ex = self.exceptions[i]
                left = "".join(c for c in ex.access if c not in rule.access)
                if left:
                    self.exceptions[i] = Rule(ex.type, ex.major, ex.minor, left, ex.allow)
                else:
                    del self.exceptions[i]
            return
        if same:
            ex = self.exceptions[same[0]]
            access = "".join(c for c in "rwm" if c in ex.access or c in rule.access)
            self.exceptions[same[0]] = Rule(ex.type, ex.major, ex.minor, access, ex.allow)
        else:
            self.exceptions.append(Rule(rule.type, rule.major, rule.minor, rule.access, rule.allow))

    def records(self) -> list[tuple[str, str]]:
        out = [("devices_default", "allow" if self.default_allow else "deny")]
        return out + [("device_rule", r.text()) for r in self.exceptions]


def policy_of(rules: list[Rule]) -> Policy:
    policy = Policy()
    for rule in rules:
        policy.apply(rule)
    return policy


_RULE_RE = re.compile(r"^([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})$")


def parse_cgroup_rule(text: str) -> Rule:
    """oci.AppendDevicePermissionsFromCgroupRules (20.10) for one `--device-cgroup-rule`."""
    m = _RULE_RE.match(text)
    if not m:
        raise DockerError(f"invalid device cgroup rule format: '{text}'")
    kind, major, minor, access = m.groups()

    def number(value: str, what: str) -> int:
        if value == "*":
            return WILDCARD
        n = int(value)
        if n >= 1 << 63:  # Go's strconv.ParseInt(…, 10, 64) range error
            raise DockerError(f"invalid {what} value in device cgroup rule format: '{text}'")
        return n

    return Rule(kind, number(major, "major"), number(minor, "minor"), access, True)


def _device_at(path: str, container_path: str) -> Device | None:
    """containerd's DeviceFromPath: a char or block node, else None (not a device)."""
    st = os.lstat(path)
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return Device(
        container_path,
        kind,
        os.major(st.st_rdev),
        os.minor(st.st_rdev),
        stat.S_IMODE(st.st_mode),
        st.st_uid,
        st.st_gid,
    )


def _errno_text(err: OSError) -> str:
    """Go's syscall.Errno text: the C message with a lower-case first letter."""
    text = os.strerror(err.errno) if err.errno else str(err)
    return text[:1].lower() + text[1:]


def devices_from_path(
    on_host: str, in_container: str, permissions: str
) -> tuple[list[Device], list[Rule]]:
    """oci.DevicesFromPath: one node, or every node below a directory, and an allow rule each."""
    resolved = on_host
    if os.path.islink(on_host):
        resolved = os.path.realpath(on_host)
    try:
        dev = _device_at(resolved, in_container)
        reason = "not a device node"
    except OSError as err:
        dev, reason = None, _errno_text(err)
    if dev:
        return [dev], [Rule(dev.type, dev.major, dev.minor, permissions, True)]
    devs: list[Device] = []
    if reason == "not a device node" and os.path.isdir(resolved):
        for top, dirs, files in os.walk(resolved):
            dirs.sort()
            for name in sorted(dirs + files):
                child = os.path.join(top, name)
                try:
                    found = _device_at(child, child.replace(resolved, in_container, 1))
                except OSError:
                    continue
                if found:
                    devs.append(found)
    if devs:
        return devs, [Rule(d.type, d.major, d.minor, permissions, True) for d in devs]
    raise DockerError(
        f"error gathering device information while adding custom device {_go_quote(on_host)}: "
        f"{reason}"
    )


def _go_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# containerd's HostDevices skips these directories of /dev, and /dev/console (the container
# gets its own).
_HOST_SKIP_DIRS = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}


def host_devices(root: str = "/dev") -> list[Device]:
    """Every char and block node below /dev, at the same path: what `--privileged` gets."""
    out: list[Device] = []

    def walk(path: str) -> None:
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in _HOST_SKIP_DIRS:
                    walk(entry.path)
                continue
            if entry.name == "console":
                continue
            try:
                dev = _device_at(entry.path, entry.path)
            except OSError:
                continue
            if dev:
                out.append(dev)

    walk(root)
    return out


@dataclass
class DeviceConfig:
    devices: list[Device]
    policy: Policy

    def records(self) -> list[tuple[str, str]]:
        return self.policy.records() + [("device", d.record()) for d in self.devices]


def container_devices(
    mappings: list[dict[str, str]], cgroup_rules: list[str], privileged: bool
) -> DeviceConfig:
    """daemon.WithDevices then runc's AllowedDevices, for one start (errors in their words)."""
    devs: list[Device] = []
    if privileged:
        devs = host_devices()
        for m in mappings:
            on_host, in_container, _ = _mapping(m)
            if on_host == in_container:
                continue  # already there with the host's /dev
            devs += devices_from_path(on_host, in_container, "rwm")[0]
        return DeviceConfig(devs, Policy(default_allow=True))
    rules = list(MOBY_DEFAULT_RULES)
    for m in mappings:
        found, allowed = devices_from_path(*_mapping(m))
        devs += found
        rules += allowed
    rules += [parse_cgroup_rule(r) for r in cgroup_rules]
    return DeviceConfig(devs, policy_of(rules + RUNC_ALLOWED_RULES))


def _mapping(m: dict[str, str]) -> tuple[str, str, str]:
    on_host = str(m.get("PathOnHost") or "")
    return (
        on_host,
        str(m.get("PathInContainer") or on_host),
        str(m.get("CgroupPermissions") or "rwm"),
    )
