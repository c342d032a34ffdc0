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

CGROUP_ROOT = "/sys/fs/cgroup"
V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")
V2_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "pids")

MIN_MEMORY = 6 * 1024 * 1024  # dockerd's linuxMinMemory
DEFAULT_CPU_PERIOD = 100_000
MIN_CPU_SHARES = 2
MAX_CPU_SHARES = 262_144
# /proc/stat and cpuacct.stat count in USER_HZ ticks.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _read_int(path: str, default: int = 0) -> int:
    try:
        text = _read(path)
    except OSError:
        return default
    if text == "max":
        return default
    try:
        return int(text)
    except ValueError:
        return default


def _write(path: str, value: str | int) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def _read_kv(path: str) -> dict[str, int]:
    """Parse flat `key value` files like memory.stat / cpu.stat."""
    out: dict[str, int] = {}
    try:
        text = _read(path)
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def host_memory() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def system_cpu_usage() -> int:
    """Host CPU time in ns like dockerd: sum of the first 7 /proc/stat cpu fields."""
    for line in _read("/proc/stat").splitlines():
        if line.startswith("cpu "):
            ticks = sum(int(x) for x in line.split()[1:8])
            return ticks * 1_000_000_000 // CLOCK_TICKS
    return 0


def online_cpus() -> int:
    return int(os.sysconf("SC_NPROCESSORS_ONLN"))


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
                if os.path.exists(path) and not _read(path):
                    _write(path, _read(os.path.join(parent, name)))

    def _create_v2(self, cid: str) -> None:
        current = self.root
        for part in [*self.parent.split("/"), cid]:
            self._enable_subtree(current)
            current = os.path.join(current, part)
            os.makedirs(current, exist_ok=True)

    def _enable_subtree(self, path: str) -> None:
        """Delegate our controllers to children (v2 needs this at every ancestor)."""
        try:
            available = set(_read(os.path.join(path, "cgroup.controllers")).split())
            enabled = set(_read(os.path.join(path, "cgroup.subtree_control")).split())
        except FileNotFoundError:
            return
        missing = [c for c in V2_CONTROLLERS if c in available and c not in enabled]
        if not missing:
            return
        ctl = os.path.join(path, "cgroup.subtree_control")
        line = " ".join("+" + c for c in missing)
        try:
            _write(ctl, line)
        except OSError as exc:
            # EBUSY: "no internal processes" - our namespace root (e.g. the agent runs in a
            # container with a private cgroupns) still holds processes.
            if exc.errno != errno.EBUSY or path != self.root:
                raise
            self._evacuate_root()
            _write(ctl, line)

    def _evacuate_root(self) -> None:
        """Move the processes of a non-host cgroup root into a leaf, like docker-in-docker."""
        leaf = os.path.join(self.root, "init")
        os.makedirs(leaf, exist_ok=True)
        for pid in _read(os.path.join(self.root, "cgroup.procs")).split():
            with contextlib.suppress(OSError):  # exited, or a kernel thread that cannot move
                _write(os.path.join(leaf, "cgroup.procs"), pid)

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
                _write(memsw, -1)
            _write(self._ctl("memory", cid, "memory.limit_in_bytes"), res.memory or -1)
            if has_swap:
                _write(memsw, res.effective_swap() if res.memory > 0 else -1)
            soft = self._ctl("memory", cid, "memory.soft_limit_in_bytes")
            _write(soft, res.memory_reservation or -1)
        if "cpu" in self.mounts:
            if res.cpu_shares > 0:
                _write(self._ctl("cpu", cid, "cpu.shares"), res.cpu_shares)
            quota, period = res.cfs()
            # Setting the period first fails if the current quota does not fit; clear it.
            _write(self._ctl("cpu", cid, "cpu.cfs_quota_us"), -1)
            _write(self._ctl("cpu", cid, "cpu.cfs_period_us"), period)
            _write(self._ctl("cpu", cid, "cpu.cfs_quota_us"), quota)
        if "cpuset" in self.mounts and res.cpuset_cpus:
            self._write_cpuset(self._ctl("cpuset", cid, "cpuset.cpus"), res.cpuset_cpus)
        if "pids" in self.mounts:
            limit = res.pids_limit if res.pids_limit > 0 else "max"
            _write(self._ctl("pids", cid, "pids.max"), limit)

    def _apply_v2(self, cid: str, res: Resources) -> None:
        d = self._dir("", cid)

        def put(name: str, value: str | int) -> None:
            path = os.path.join(d, name)
            if os.path.exists(path):
                _write(path, value)

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
            _write(path, cpus)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            available = _read(os.path.join(os.path.dirname(os.path.dirname(path)), "cpuset.cpus"))
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
            text = _read(os.path.join(self._procs_dir(cid), "cgroup.procs"))
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
            _write(path, 1 if frozen else 0)
        else:
            if "freezer" not in self.mounts:
                return
            path = self._ctl("freezer", cid, "freezer.state")
            if not os.path.exists(path):
                return
            _write(path, "FROZEN" if frozen else "THAWED")
        # Freezing is asynchronous: wait until the kernel reports the final state.
        deadline = time.monotonic() + timeout
        while self.is_frozen(cid) != frozen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"cgroup {cid} did not {'freeze' if frozen else 'thaw'}")
            if self.version == 1 and frozen:
                _write(path, "FROZEN")  # FREEZING can need a nudge
            time.sleep(0.005)

    def is_frozen(self, cid: str) -> bool:
        try:
            if self.version == 2:
                events = _read_kv(self._ctl("", cid, "cgroup.events"))
                return events.get("frozen", 0) == 1
            if "freezer" not in self.mounts:
                return False
            return _read(self._ctl("freezer", cid, "freezer.state")) == "FROZEN"
        except FileNotFoundError:
            return False

    # ---- accounting --------------------------------------------------------------------------

    def oom_killed(self, cid: str) -> bool:
        if self.version == 2:
            return _read_kv(self._ctl("", cid, "memory.events")).get("oom_kill", 0) > 0
        if "memory" not in self.mounts:
            return False
        return _read_kv(self._ctl("memory", cid, "memory.oom_control")).get("oom_kill", 0) > 0

    def stats(self, cid: str) -> dict:
        """Docker stats fields (memory_stats, cpu_stats, pids_stats, blkio_stats)."""
        if not self.exists(cid):
            raise NotFound(f"No such container: {cid}")
        if self.version == 2:
            return {
                "memory_stats": self._memory_v2(cid),
                "cpu_stats": self._cpu_v2(cid),
                "pids_stats": self._pids_stats(cid),
                "blkio_stats": self._blkio_v2(cid),
            }
        return {
            "memory_stats": self._memory_v1(cid),
            "cpu_stats": self._cpu_v1(cid),
            "pids_stats": self._pids_stats(cid),
            "blkio_stats": self._blkio_v1(cid),
        }

    def _limit_or_host(self, limit: int) -> int:
        # Unlimited reads as a huge number (v1) or "max" (v2); Docker reports host memory.
        host = host_memory()
        return limit if 0 < limit < host else host

    def _memory_v1(self, cid: str) -> dict:
        if "memory" not in self.mounts:
            return {}

        def ctl(name: str) -> str:
            return self._ctl("memory", cid, name)

        return {
            "usage": _read_int(ctl("memory.usage_in_bytes")),
            "max_usage": _read_int(ctl("memory.max_usage_in_bytes")),
            "failcnt": _read_int(ctl("memory.failcnt")),
            "stats": _read_kv(ctl("memory.stat")),
            "limit": self._limit_or_host(_read_int(ctl("memory.limit_in_bytes"))),
        }

    def _memory_v2(self, cid: str) -> dict:
        d = self._dir("", cid)
        return {
            "usage": _read_int(os.path.join(d, "memory.current")),
            "stats": _read_kv(os.path.join(d, "memory.stat")),
            "limit": self._limit_or_host(_read_int(os.path.join(d, "memory.max"))),
        }

    def _cpu_v1(self, cid: str) -> dict:
        acct = "cpuacct" if "cpuacct" in self.mounts else "cpu"
        percpu_text = ""
        with contextlib.suppress(OSError):
            percpu_text = _read(self._ctl(acct, cid, "cpuacct.usage_percpu"))
        ticks = _read_kv(self._ctl(acct, cid, "cpuacct.stat"))
        tick_ns = 1_000_000_000 // CLOCK_TICKS
        throttle = _read_kv(self._ctl("cpu", cid, "cpu.stat")) if "cpu" in self.mounts else {}
        return {
            "cpu_usage": {
                "total_usage": _read_int(self._ctl(acct, cid, "cpuacct.usage")),
                "percpu_usage": [int(x) for x in percpu_text.split()],
                "usage_in_kernelmode": ticks.get("system", 0) * tick_ns,
                "usage_in_usermode": ticks.get("user", 0) * tick_ns,
            },
            "system_cpu_usage": system_cpu_usage(),
            "online_cpus": online_cpus(),
            "throttling_data": {
                "periods": throttle.get("nr_periods", 0),
                "throttled_periods": throttle.get("nr_throttled", 0),
                "throttled_time": throttle.get("throttled_time", 0),
            },
        }

    def _cpu_v2(self, cid: str) -> dict:
        st = _read_kv(self._ctl("", cid, "cpu.stat"))
        return {
            "cpu_usage": {
                "total_usage": st.get("usage_usec", 0) * 1000,
                "usage_in_kernelmode": st.get("system_usec", 0) * 1000,
                "usage_in_usermode": st.get("user_usec", 0) * 1000,
            },
            "system_cpu_usage": system_cpu_usage(),
            "online_cpus": online_cpus(),
            "throttling_data": {
                "periods": st.get("nr_periods", 0),
                "throttled_periods": st.get("nr_throttled", 0),
                "throttled_time": st.get("throttled_usec", 0) * 1000,
            },
        }

    def _pids_stats(self, cid: str) -> dict:
        if self.version == 1 and "pids" not in self.mounts:
            return {}
        out = {"current": _read_int(self._ctl("pids", cid, "pids.current"))}
        limit = _read_int(self._ctl("pids", cid, "pids.max"))
        if limit > 0:
            out["limit"] = limit
        return out

    def _blkio_v1(self, cid: str) -> dict:
        stats = _empty_blkio()
        if "blkio" not in self.mounts:
            return stats
        for key, name in (
            ("io_service_bytes_recursive", "blkio.throttle.io_service_bytes_recursive"),
            ("io_serviced_recursive", "blkio.throttle.io_serviced_recursive"),
        ):
            stats[key] = _parse_blkio_v1(self._ctl("blkio", cid, name))
        return stats

    def _blkio_v2(self, cid: str) -> dict:
        stats = _empty_blkio()
        try:
            text = _read(self._ctl("", cid, "io.stat"))
        except OSError:
            return stats
        for line in text.splitlines():
            dev, *fields = line.split()
            major, minor = (int(x) for x in dev.split(":"))
            kv = dict(f.split("=", 1) for f in fields if "=" in f)
            for key, field, op in (
                ("io_service_bytes_recursive", "rbytes", "read"),
                ("io_service_bytes_recursive", "wbytes", "write"),
                ("io_serviced_recursive", "rios", "read"),
                ("io_serviced_recursive", "wios", "write"),
            ):
                if field in kv:
                    stats[key].append(
                        {"major": major, "minor": minor, "op": op, "value": int(kv[field])}
                    )
        return stats


def _empty_blkio() -> dict:
    keys = (
        "io_service_bytes_recursive",
        "io_serviced_recursive",
        "io_queue_recursive",
        "io_service_time_recursive",
        "io_wait_time_recursive",
        "io_merged_recursive",
        "io_time_recursive",
        "sectors_recursive",
    )
    return {k: [] for k in keys}


def _parse_blkio_v1(path: str) -> list[dict]:
    entries: list[dict] = []
    try:
        text = _read(path)
    except OSError:
        return entries
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue  # the trailing "Total N" line
        major, minor = (int(x) for x in parts[0].split(":"))
        entries.append({"major": major, "minor": minor, "op": parts[1], "value": int(parts[2])})
    return entries
