"""Reading and writing cgroup and /proc files (runtime/cgroups.py, runtime/cgroup_stats.py)."""

from __future__ import annotations

import os

# /proc/stat and cpuacct.stat count in USER_HZ ticks.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def read_int(path: str, default: int = 0) -> int:
    try:
        text = read(path)
    except OSError:
        return default
    if text == "max":
        return default
    try:
        return int(text)
    except ValueError:
        return default


def write(path: str, value: str | int) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def read_kv(path: str) -> dict[str, int]:
    """Parse flat `key value` files like memory.stat / cpu.stat."""
    out: dict[str, int] = {}
    try:
        text = read(path)
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
    for line in read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def system_cpu_usage() -> int:
    """Host CPU time in ns like dockerd: sum of the first 7 /proc/stat cpu fields."""
    for line in read("/proc/stat").splitlines():
        if line.startswith("cpu "):
            ticks = sum(int(x) for x in line.split()[1:8])
            return ticks * 1_000_000_000 // CLOCK_TICKS
    return 0


def online_cpus() -> int:
    return int(os.sysconf("SC_NPROCESSORS_ONLN"))
