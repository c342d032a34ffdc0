"""What a container's processes are and use: `docker top` (host `ps` filtered by the container's
cgroup) and `docker stats` samples in Docker's shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from typing import TYPE_CHECKING, Any

from proto.docker.errors import Conflict, DockerError
from runtime.network import net_stats
from runtime.timefmt import rfc3339nano

if TYPE_CHECKING:
    from runtime.containers import Runtime


async def top(rt: Runtime, ref: str, ps_args: str = "-ef") -> dict[str, Any]:
    """`docker top`: the host's `ps` rows of the processes in the container's cgroup."""
    rec = rt.get(ref)
    if not rec.running:
        raise Conflict(f"Container {rec.id} is not running")
    pids = set(await asyncio.to_thread(rt.cgroups.pids, rec.id))
    proc = await asyncio.create_subprocess_exec(
        "ps", *ps_args.split(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise DockerError(f"Error running ps: {err.decode().strip()}", 500)
    lines = out.decode().splitlines()
    titles = lines[0].split()
    if "PID" not in titles:
        raise DockerError("Couldn't find PID field in ps output", 500)
    pid_col = titles.index("PID")
    processes = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) > pid_col and fields[pid_col].isdigit() and int(fields[pid_col]) in pids:
            processes.append(fields)
    return {"Titles": titles, "Processes": processes}


async def stats(rt: Runtime, ref: str) -> dict[str, Any]:
    """One sample in Docker's stats shape (the caller adds precpu_stats from the last one)."""
    rec = rt.get(ref)
    sample: dict[str, Any] = {
        "read": _rfc_now(),
        "name": f"/{rec.name}",
        "id": rec.id,
    }
    if not rec.running:
        sample.update(
            {
                "pids_stats": {},
                "blkio_stats": {},
                "cpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
                "memory_stats": {},
            }
        )
        return sample
    sample.update(await asyncio.to_thread(rt.cgroups.stats, rec.id))
    if rec.net.mode not in ("host",):
        with contextlib.suppress(OSError):
            sample["networks"] = await asyncio.to_thread(net_stats, rec.pid)
    return sample


def _rfc_now() -> str:
    return rfc3339nano(time.time_ns())
