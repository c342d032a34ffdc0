"""Resource limits of a create or update body (memory, swap, CPUs, cpuset, pids) with
dockerd's verifyPlatformContainerResources checks and wording.
"""

from __future__ import annotations

import os
import re
from typing import Any

from proto.docker.errors import InvalidParameter
from runtime.config_fields import get_bool, get_int, get_opt_int, get_str
from runtime.config_types import Resources

MIN_MEMORY = 6 * 1024 * 1024  # dockerd's linuxMinMemory ("6MB")


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1


def _parse_cpuset(s: str) -> set[int]:
    """parsers.ParseUintList: `0-2,4`."""
    out: set[int] = set()
    if s == "":
        return out
    for part in s.split(","):
        m = re.fullmatch(r"([+-]?\d+)(?:-([+-]?\d+))?", part)
        if not m:
            raise ValueError(f"invalid format: {s}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if hi < lo:
            raise ValueError(f"invalid format: {s}")
        out.update(range(lo, hi + 1))
    return out


def parse_resources(hc: dict[str, Any], warnings: list[str]) -> Resources:
    """verifyPlatformContainerResources for the limits we implement."""
    r = Resources(
        memory=get_int(hc, "Memory"),
        memory_swap=get_int(hc, "MemorySwap"),
        memory_reservation=get_int(hc, "MemoryReservation"),
        memory_swappiness=get_opt_int(hc, "MemorySwappiness"),
        nano_cpus=get_int(hc, "NanoCpus"),
        cpu_shares=get_int(hc, "CpuShares"),
        cpu_period=get_int(hc, "CpuPeriod"),
        cpu_quota=get_int(hc, "CpuQuota"),
        cpuset_cpus=get_str(hc, "CpusetCpus"),
        cpuset_mems=get_str(hc, "CpusetMems"),
        pids_limit=get_opt_int(hc, "PidsLimit"),
        oom_kill_disable=get_bool(hc, "OomKillDisable"),
    )
    if r.pids_limit is not None and r.pids_limit <= 0:
        r.pids_limit = None  # 0 and -1 both mean "unlimited" (API router)
    _check_memory(r)
    if r.oom_kill_disable and r.memory == 0:
        warnings.append(
            "OOM killer is disabled for the container, but no memory limit is set, "
            "this can result in the system running out of resources."
        )
    _check_cpu(r)
    return r


def _check_memory(r: Resources) -> None:
    if r.memory != 0 and r.memory < MIN_MEMORY:
        raise InvalidParameter("Minimum memory limit allowed is 6MB")
    if r.memory > 0 and r.memory_swap > 0 and r.memory_swap < r.memory:
        raise InvalidParameter(
            "Minimum memoryswap limit should be larger than memory limit, see usage"
        )
    if r.memory == 0 and r.memory_swap > 0:
        raise InvalidParameter(
            "You should always set the Memory limit when using Memoryswap limit, see usage"
        )
    # -1 means "unset" (the CLI always sends it), as in dockerd.
    if r.memory_swappiness not in (None, -1) and not 0 <= r.memory_swappiness <= 100:
        raise InvalidParameter(
            f"Invalid value: {r.memory_swappiness}, valid memory swappiness range is 0-100"
        )
    if r.memory_reservation > 0 and r.memory_reservation < MIN_MEMORY:
        raise InvalidParameter("Minimum memory reservation allowed is 6MB")
    if r.memory > 0 and r.memory_reservation > 0 and r.memory < r.memory_reservation:
        raise InvalidParameter(
            "Minimum memory limit can not be less than memory reservation limit, see usage"
        )


def _check_cpu(r: Resources) -> None:
    if r.nano_cpus > 0 and r.cpu_period > 0:
        raise InvalidParameter("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if r.nano_cpus > 0 and r.cpu_quota > 0:
        raise InvalidParameter("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    ncpu = _cpu_count()
    if r.nano_cpus < 0 or r.nano_cpus > ncpu * 1_000_000_000:
        raise InvalidParameter(
            f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
        )
    if r.cpu_period != 0 and not 1000 <= r.cpu_period <= 1_000_000:
        raise InvalidParameter(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"
        )
    if 0 < r.cpu_quota < 1000:
        raise InvalidParameter("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    try:
        wanted = _parse_cpuset(r.cpuset_cpus)
    except ValueError as err:
        raise InvalidParameter(f"Invalid value {r.cpuset_cpus} for cpuset cpus: {err}") from None
    try:
        available = os.sched_getaffinity(0)
    except OSError:
        available = set(range(_cpu_count()))
    if not wanted <= available:
        raise InvalidParameter(
            f"Requested CPUs are not available - requested {r.cpuset_cpus}, "
            f"available: {_format_cpuset(available)}"
        )


def _format_cpuset(cpus: set[int]) -> str:
    ranges: list[str] = []
    for c in sorted(cpus):
        if ranges and "-" not in ranges[-1] and int(ranges[-1]) == c - 1:
            ranges[-1] = f"{ranges[-1]}-{c}"
        elif ranges and "-" in ranges[-1] and int(ranges[-1].split("-")[1]) == c - 1:
            ranges[-1] = f"{ranges[-1].split('-')[0]}-{c}"
        else:
            ranges.append(str(c))
    return ",".join(ranges)
