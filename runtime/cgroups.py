"""Container cgroups on cgroup v1 (one hierarchy per controller) and v2 (unified).

Layout: `<mount>/<parent>/<cid>` for every v1 controller, `<root>/<parent>/<cid>` on v2, where
`parent` is e.g. `flotilla/node-0`. The shim writes the container pid into the directories
returned by `Cgroups.create`; everything else (limits, stats, freeze, kill) lives here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass

from proto.docker.errors import InvalidParameter, NotFound
from runtime import cgroup_stats
from runtime.cgroup_files import read, read_kv, write

CGROUP_ROOT = "/sys/fs/cgroup"
V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")
V2_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "pids")

MIN_MEMORY = 6 * 1024 * 1024  # dockerd's linuxMinMemory
DEFAULT_CPU_PERIOD = 100_000
MIN_CPU_SHARES = 2
MAX_CPU_SHARES = 262_144


@dataclass
class Resources:
    """Docker HostConfig resource fields (same units as the API)."""

    memory: int = 0  # bytes, 0 = unlimited
    memory_swap: int = 0  # memory+swap bytes; -1 unlimited; 0 = Docker default (2x memory)
    memory_reservation: int = 0
    nano_cpus: int = 0
    cpu_shares: int = 0
    cpu_period: int = 0
    cpu_quota: int = 0
    cpuset_cpus: str = ""
    pids_limit: int = 0  # 0 or -1: unlimited

    def effective_swap(self) -> int:
        """memory+swap to apply: Docker gives 2x memory when only memory is set."""
        if self.memory > 0 and self.memory_swap == 0:
            return 2 * self.memory
        return self.memory_swap

    def cfs(self) -> tuple[int, int]:
        """(quota, period) in microseconds; quota -1 means unlimited."""
        if self.nano_cpus > 0:
            return self.nano_cpus * DEFAULT_CPU_PERIOD // 1_000_000_000, DEFAULT_CPU_PERIOD
        quota = self.cpu_quota if self.cpu_quota > 0 else -1
        return quota, self.cpu_period or DEFAULT_CPU_PERIOD


def parse_cpu_list(text: str) -> set[int] | None:
    """Parse `0-2,5` into {0,1,2,5}; None if malformed."""
    cpus: set[int] = set()
    try:
        for part in text.strip().split(","):
            if "-" in part:
                lo, hi = part.split("-", 1)
                if int(lo) > int(hi):
                    return None
                cpus.update(range(int(lo), int(hi) + 1))
            else:
                cpus.add(int(part))
    except ValueError:
        return None
    return cpus


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares [2..262144] to v2 cpu.weight [1..10000], runc's formula."""
    if shares == 0:
        return 0
    shares = min(max(shares, MIN_CPU_SHARES), MAX_CPU_SHARES)
    return 1 + ((shares - 2) * 9999) // 262142


def detect_version(root: str = CGROUP_ROOT) -> int:
    return 2 if os.path.exists(os.path.join(root, "cgroup.controllers")) else 1


def v1_mounts(mountinfo: str = "/proc/self/mountinfo") -> dict[str, str]:
    """Map each v1 controller to its mount point (cpu and cpuacct may share one)."""
    mounts: dict[str, str] = {}
    with open(mountinfo) as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields = post.split()
            if len(fields) < 3 or fields[0] != "cgroup":
                continue
            mount_point = pre.split()[4]
            for opt in fields[2].split(","):
                if opt in V1_CONTROLLERS:
                    mounts.setdefault(opt, mount_point)
    return mounts


class Cgroups:
    """Cgroups of the containers of one node, below `parent` (e.g. `flotilla/node-0`)."""

    def __init__(
        self,
        parent: str,
        root: str = CGROUP_ROOT,
        version: int | None = None,
        mounts: dict[str, str] | None = None,
    ) -> None:
        self.parent = parent.strip("/")
        self.root = root
        self.version = version or detect_version(root)
        if self.version == 1:
            if mounts is None:
                # A non-default root is a fake tree laid out like /sys/fs/cgroup/<controller>.
                mounts = (
                    v1_mounts()
                    if root == CGROUP_ROOT
                    else {c: os.path.join(root, c) for c in V1_CONTROLLERS}
                )
            self.mounts = mounts
        else:
            self.mounts = {}

    # ---- paths -------------------------------------------------------------------------------

    def _dir(self, controller: str, cid: str = "") -> str:
        base = self.root if self.version == 2 else self.mounts[controller]
        return os.path.join(base, self.parent, cid) if cid else os.path.join(base, self.parent)

    def dirs(self, cid: str) -> list[str]:
        """Distinct directories holding the container (one per hierarchy)."""
        if self.version == 2:
            return [self._dir("", cid)]
        seen: list[str] = []
        for controller in V1_CONTROLLERS:
            if controller in self.mounts:
                d = self._dir(controller, cid)
                if d not in seen:
                    seen.append(d)
        return seen

    def _ctl(self, controller: str, cid: str, name: str) -> str:
        """Path of a control file; on v2 the controller is implied by the file name."""
        if self.version == 2:
            return os.path.join(self._dir("", cid), name)
        return os.path.join(self._dir(controller, cid), name)

    def _main_controller(self) -> str:
        """The hierarchy used for membership questions (procs, listing)."""
        if self.version == 2:
            return ""
        for controller in ("memory", "pids", "freezer", "cpu"):
            if controller in self.mounts:
                return controller
        return next(iter(self.mounts))

    def _procs_dir(self, cid: str) -> str:
        return self._dir(self._main_controller(), cid)

    def exists(self, cid: str) -> bool:
        return os.path.isdir(self._procs_dir(cid))

    # ---- lifecycle ---------------------------------------------------------------------------

    def create(self, cid: str, res: Resources) -> list[str]:
        """Create the container's cgroups with `res` applied; returns the dirs for the shim."""
        if self.version == 2:
            self._create_v2(cid)
        else:
            self._create_v1(cid)
        try:
            self._apply(cid, res)
        except BaseException:
            self.remove(cid)
            raise
        return self.dirs(cid)

    def _create_v1(self, cid: str) -> None:
        for controller in V1_CONTROLLERS:
            if controller not in self.mounts:
                continue
            d = self._dir(controller, cid)
            if controller == "cpuset":
                self._mkdir_cpuset(self.mounts[controller], d)
            else:
                os.makedirs(d, exist_ok=True)

    def _mkdir_cpuset(self, mount: str, target: str) -> None:
        """Create each level, inheriting cpus/mems: a new cpuset is empty and refuses tasks."""
        rel = os.path.relpath(target, mount)
        current = mount
        for part in rel.split(os.sep):
            parent, current = current, os.path.join(current, part)
            if not os.path.isdir(current):
                os.makedirs(current, exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):
                path = os.path.join(current, name)
                if os.path.exists(path) and not read(path):
                    write(path, read(os.path.join(parent, name)))

    def _create_v2(self, cid: str) -> None:
        current = self.root
        for part in [*self.parent.split("/"), cid]:
            self._enable_subtree(current)
            current = os.path.join(current, part)
            os.makedirs(current, exist_ok=True)

    def _enable_subtree(self, path: str) -> None:
        """Delegate our controllers to children (v2 needs this at every ancestor)."""
        try:
            available = set(read(os.path.join(path, "cgroup.controllers")).split())
            enabled = set(read(os.path.join(path, "cgroup.subtree_control")).split())
        except FileNotFoundError:
            return
        missing = [c for c in V2_CONTROLLERS if c in available and c not in enabled]
        if not missing:
            return
        ctl = os.path.join(path, "cgroup.subtree_control")
        line = " ".join("+" + c for c in missing)
        try:
            write(ctl, line)
        except OSError as exc:
            # EBUSY: "no internal processes" - our namespace root (e.g. the agent runs in a
            # container with a private cgroupns) still holds processes.
            if exc.errno != errno.EBUSY or path != self.root:
                raise
            self._evacuate_root()
            write(ctl, line)

    def _evacuate_root(self) -> None:
        """Move the processes of a non-host cgroup root into a leaf, like docker-in-docker."""
        leaf = os.path.join(self.root, "init")
        os.makedirs(leaf, exist_ok=True)
        for pid in read(os.path.join(self.root, "cgroup.procs")).split():
            with contextlib.suppress(OSError):  # exited, or a kernel thread that cannot move
                write(os.path.join(leaf, "cgroup.procs"), pid)

    def update(self, cid: str, res: Resources) -> None:
        """Apply `res` as the complete new resource set (merge partial updates before)."""
        if not self.exists(cid):
            raise NotFound(f"No such container: {cid}")
        self._apply(cid, res)

    def _apply(self, cid: str, res: Resources) -> None:
        if self.version == 2:
            self._apply_v2(cid, res)
        else:
            self._apply_v1(cid, res)

    def _apply_v1(self, cid: str, res: Resources) -> None:
        if "memory" in self.mounts:
            memsw = self._ctl("memory", cid, "memory.memsw.limit_in_bytes")
            has_swap = os.path.exists(memsw)
            # memsw must stay >= limit at every step: open it up first, then tighten.
            if has_swap:
                write(memsw, -1)
            write(self._ctl("memory", cid, "memory.limit_in_bytes"), res.memory or -1)
            if has_swap:
                write(memsw, res.effective_swap() if res.memory > 0 else -1)
            soft = self._ctl("memory", cid, "memory.soft_limit_in_bytes")
            write(soft, res.memory_reservation or -1)
        if "cpu" in self.mounts:
            if res.cpu_shares > 0:
                write(self._ctl("cpu", cid, "cpu.shares"), res.cpu_shares)
            quota, period = res.cfs()
            # Setting the period first fails if the current quota does not fit; clear it.
            write(self._ctl("cpu", cid, "cpu.cfs_quota_us"), -1)
            write(self._ctl("cpu", cid, "cpu.cfs_period_us"), period)
            write(self._ctl("cpu", cid, "cpu.cfs_quota_us"), quota)
        if "cpuset" in self.mounts and res.cpuset_cpus:
            self._write_cpuset(self._ctl("cpuset", cid, "cpuset.cpus"), res.cpuset_cpus)
        if "pids" in self.mounts:
            limit = res.pids_limit if res.pids_limit > 0 else "max"
            write(self._ctl("pids", cid, "pids.max"), limit)

    def _apply_v2(self, cid: str, res: Resources) -> None:
        d = self._dir("", cid)

        def put(name: str, value: str | int) -> None:
            path = os.path.join(d, name)
            if os.path.exists(path):
                write(path, value)

        put("memory.max", res.memory or "max")
        swap = res.effective_swap()
        # v2 limits swap alone, v1/Docker count memory+swap.
        put("memory.swap.max", swap - res.memory if res.memory > 0 and swap > 0 else "max")
        put("memory.low", res.memory_reservation)
        quota, period = res.cfs()
        put("cpu.max", f"{quota if quota > 0 else 'max'} {period}")
        if res.cpu_shares > 0:
            put("cpu.weight", shares_to_weight(res.cpu_shares))
        if res.cpuset_cpus:
            self._write_cpuset(os.path.join(d, "cpuset.cpus"), res.cpuset_cpus)
        put("pids.max", res.pids_limit if res.pids_limit > 0 else "max")

    def _write_cpuset(self, path: str, cpus: str) -> None:
        try:
            write(path, cpus)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            available = read(os.path.join(os.path.dirname(os.path.dirname(path)), "cpuset.cpus"))
            raise InvalidParameter(
                f"Requested CPUs are not available - requested {cpus}, available: {available}"
            ) from exc

    def remove(self, cid: str) -> None:
        """Kill whatever is left in the container's cgroups and delete them; idempotent."""
        if self.exists(cid):
            try:
                self.thaw(cid)  # frozen tasks cannot act on SIGKILL
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENODEV):
                    raise  # else: removed under us by a concurrent remove
            self._kill_all(cid)
        for d in self.dirs(cid):
            self._rmdir(d)

    def _kill_all(self, cid: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids(cid)
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise TimeoutError(f"cgroup {cid} still has processes {pids}")
            time.sleep(0.01)

    def _rmdir(self, path: str) -> None:
        # Exited tasks can linger briefly as zombies in the cgroup, which gives EBUSY.
        for _ in range(200):
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                time.sleep(0.01)
        os.rmdir(path)

    def remove_parent(self) -> None:
        """Delete the node's (now empty) parent cgroups, up to the first one still in use."""
        for controller in [""] if self.version == 2 else list(self.mounts):
            base = self.root if self.version == 2 else self.mounts[controller]
            parts = self.parent.split("/")
            for depth in range(len(parts), 0, -1):
                try:
                    os.rmdir(os.path.join(base, *parts[:depth]))
                except FileNotFoundError:
                    continue
                except OSError:
                    break

    def list_ids(self) -> list[str]:
        base = self._dir(self._main_controller())
        try:
            return sorted(e.name for e in os.scandir(base) if e.is_dir())
        except FileNotFoundError:
            return []

    def pids(self, cid: str) -> list[int]:
        try:
            text = read(os.path.join(self._procs_dir(cid), "cgroup.procs"))
        except FileNotFoundError:
            return []
        return [int(x) for x in text.split()]

    # ---- freezer -----------------------------------------------------------------------------

    def freeze(self, cid: str) -> None:
        self._set_frozen(cid, True)

    def thaw(self, cid: str) -> None:
        self._set_frozen(cid, False)

    def _set_frozen(self, cid: str, frozen: bool, timeout: float = 10.0) -> None:
        if self.version == 2:
            path = self._ctl("", cid, "cgroup.freeze")
            if not os.path.exists(path):
                return
            write(path, 1 if frozen else 0)
        else:
            if "freezer" not in self.mounts:
                return
            path = self._ctl("freezer", cid, "freezer.state")
            if not os.path.exists(path):
                return
            write(path, "FROZEN" if frozen else "THAWED")
        # Freezing is asynchronous: wait until the kernel reports the final state.
        deadline = time.monotonic() + timeout
        while self.is_frozen(cid) != frozen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"cgroup {cid} did not {'freeze' if frozen else 'thaw'}")
            if self.version == 1 and frozen:
                write(path, "FROZEN")  # FREEZING can need a nudge
            time.sleep(0.005)

    def is_frozen(self, cid: str) -> bool:
        try:
            if self.version == 2:
                events = read_kv(self._ctl("", cid, "cgroup.events"))
                return events.get("frozen", 0) == 1
            if "freezer" not in self.mounts:
                return False
            return read(self._ctl("freezer", cid, "freezer.state")) == "FROZEN"
        except FileNotFoundError:
            return False

    # ---- accounting --------------------------------------------------------------------------

    def oom_killed(self, cid: str) -> bool:
        if self.version == 2:
            return read_kv(self._ctl("", cid, "memory.events")).get("oom_kill", 0) > 0
        if "memory" not in self.mounts:
            return False
        return read_kv(self._ctl("memory", cid, "memory.oom_control")).get("oom_kill", 0) > 0

    def stats(self, cid: str) -> dict:
        """Docker stats fields (memory_stats, cpu_stats, pids_stats, blkio_stats)."""
        if not self.exists(cid):
            raise NotFound(f"No such container: {cid}")
        return cgroup_stats.container_stats(self, cid)
