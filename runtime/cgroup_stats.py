"""Docker's stats fields of one container read from its cgroups, v1 and v2
(`Cgroups.stats`)."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from runtime.cgroup_files import (
    CLOCK_TICKS,
    host_memory,
    online_cpus,
    read,
    read_int,
    read_kv,
    system_cpu_usage,
)

if TYPE_CHECKING:
    from runtime.cgroups import Cgroups


def container_stats(cg: Cgroups, cid: str) -> dict:
    """memory_stats, cpu_stats, pids_stats, blkio_stats."""
    if cg.version == 2:
        return {
            "memory_stats": _memory_v2(cg, cid),
            "cpu_stats": _cpu_v2(cg, cid),
            "pids_stats": _pids_stats(cg, cid),
            "blkio_stats": _blkio_v2(cg, cid),
        }
    return {
        "memory_stats": _memory_v1(cg, cid),
        "cpu_stats": _cpu_v1(cg, cid),
        "pids_stats": _pids_stats(cg, cid),
        "blkio_stats": _blkio_v1(cg, cid),
    }


def _limit_or_host(limit: int) -> int:
    # Unlimited reads as a huge number (v1) or "max" (v2); Docker reports host memory.
    host = host_memory()
    return limit if 0 < limit < host else host


def _memory_v1(cg: Cgroups, cid: str) -> dict:
    if "memory" not in cg.mounts:
        return {}

    def ctl(name: str) -> str:
        return cg._ctl("memory", cid, name)

    return {
        "usage": read_int(ctl("memory.usage_in_bytes")),
        "max_usage": read_int(ctl("memory.max_usage_in_bytes")),
        "failcnt": read_int(ctl("memory.failcnt")),
        "stats": read_kv(ctl("memory.stat")),
        "limit": _limit_or_host(read_int(ctl("memory.limit_in_bytes"))),
    }


def _memory_v2(cg: Cgroups, cid: str) -> dict:
    d = cg._dir("", cid)
    return {
        "usage": read_int(os.path.join(d, "memory.current")),
        "stats": read_kv(os.path.join(d, "memory.stat")),
        "limit": _limit_or_host(read_int(os.path.join(d, "memory.max"))),
    }


def _cpu_v1(cg: Cgroups, cid: str) -> dict:
    acct = "cpuacct" if "cpuacct" in cg.mounts else "cpu"
    percpu_text = ""
    with contextlib.suppress(OSError):
        percpu_text = read(cg._ctl(acct, cid, "cpuacct.usage_percpu"))
    ticks = read_kv(cg._ctl(acct, cid, "cpuacct.stat"))
    tick_ns = 1_000_000_000 // CLOCK_TICKS
    throttle = read_kv(cg._ctl("cpu", cid, "cpu.stat")) if "cpu" in cg.mounts else {}
    return {
        "cpu_usage": {
            "total_usage": read_int(cg._ctl(acct, cid, "cpuacct.usage")),
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


def _cpu_v2(cg: Cgroups, cid: str) -> dict:
    st = read_kv(cg._ctl("", cid, "cpu.stat"))
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


def _pids_stats(cg: Cgroups, cid: str) -> dict:
    if cg.version == 1 and "pids" not in cg.mounts:
        return {}
    out = {"current": read_int(cg._ctl("pids", cid, "pids.current"))}
    limit = read_int(cg._ctl("pids", cid, "pids.max"))
    if limit > 0:
        out["limit"] = limit
    return out


def _blkio_v1(cg: Cgroups, cid: str) -> dict:
    stats = _empty_blkio()
    if "blkio" not in cg.mounts:
        return stats
    for key, name in (
        ("io_service_bytes_recursive", "blkio.throttle.io_service_bytes_recursive"),
        ("io_serviced_recursive", "blkio.throttle.io_serviced_recursive"),
    ):
        stats[key] = _parse_blkio_v1(cg._ctl("blkio", cid, name))
    return stats


def _blkio_v2(cg: Cgroups, cid: str) -> dict:
    stats = _empty_blkio()
    try:
        text = read(cg._ctl("", cid, "io.stat"))
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
        text = read(path)
    except OSError:
        return entries
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue  # the trailing "Total N" line
        major, minor = (int(x) for x in parts[0].split(":"))
        entries.append({"major": major, "minor": minor, "op": parts[1], "value": int(parts[2])})
    return entries
