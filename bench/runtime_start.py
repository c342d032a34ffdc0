"""Container start cost of runtime/, against the kernel floor measured in the same run.

Prints p50/p99 of create→start→exit→remove of `/bin/true` with network none and with the
default bridge (in-process, as the agent calls it), the `unshare … chroot ROOTFS /bin/true`
floor, their ratio, and the PSS of our own processes per running container (50 `sleep`s).
Run as root: `python bench/runtime_start.py [--runs 50]`. The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deploy.busybox_image import build_rootfs_tar  # noqa: E402
from runtime import image_transfer  # noqa: E402
from runtime.containers import Runtime  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def time_runs(rt: Runtime, network: str, runs: int) -> list[float]:
    body = {"Image": "busybox", "Cmd": ["/bin/true"], "HostConfig": {"NetworkMode": network}}
    times = []
    for _ in range(runs + 3):
        start = time.perf_counter()
        rec = await rt.create(body)
        await rt.start(rec.id)
        await rt.wait(rec.id)
        await rt.remove(rec.id)
        times.append((time.perf_counter() - start) * 1000)
    return times[3:]  # the first runs warm caches (shim binary, bridge)


def floor_runs(rootfs: str, runs: int) -> list[float]:
    cmd = [
        "unshare",
        "--fork",
        "--pid",
        "--mount",
        "--uts",
        "--ipc",
        "--net",
        "chroot",
        rootfs,
        "/bin/true",
    ]
    times = []
    for _ in range(runs + 3):
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        times.append((time.perf_counter() - start) * 1000)
    return times[3:]


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


async def pss_per_container(rt: Runtime, count: int) -> float:
    ids = []
    try:
        for _ in range(count):
            rec = await rt.create(
                {"Image": "busybox", "Cmd": ["sleep", "600"], "HostConfig": {"NetworkMode": "none"}}
            )
            await rt.start(rec.id)
            ids.append(rec.id)
        await asyncio.sleep(0.5)
        total = sum(pss_kib(rt.get(cid).shim_pid) for cid in ids)
        return total / count / 1024
    finally:
        for cid in ids:
            await rt.remove(cid, force=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--containers", type=int, default=50)
    args = parser.parse_args()

    # A network namespace of our own: the bench's bridge and NAT rules vanish with it.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    work = tempfile.mkdtemp(prefix="flt-bench-")
    rt = Runtime(os.path.join(work, "root"), node_name="bench", bridge_name="fltbench0")
    try:
        tar_path = build_rootfs_tar(os.path.join(work, "busybox.tar"))
        await rt.open()
        with open(tar_path, "rb") as f:
            image_id = image_transfer.import_tarball(rt.images, f, "busybox:latest")
        rootfs = rt.images.layer_dirs(image_id)[0]  # the unpacked one-layer busybox

        none = await time_runs(rt, "none", args.runs)
        bridge = await time_runs(rt, "bridge", args.runs)
        floor = floor_runs(rootfs, args.runs)
        pss = await pss_per_container(rt, args.containers)
    finally:
        await rt.close()
        await asyncio.to_thread(rt.bridge.teardown)
        rt.cgroups.remove_parent()
        shutil.rmtree(work, ignore_errors=True)

    figures = {
        "p50_none_ms": round(statistics.median(none), 2),
        "p99_none_ms": round(percentile(none, 99), 2),
        "p50_bridge_ms": round(statistics.median(bridge), 2),
        "p99_bridge_ms": round(percentile(bridge, 99), 2),
        "floor_ms": round(statistics.median(floor), 2),
        "ratio_none_vs_floor": round(statistics.median(none) / statistics.median(floor), 2),
        "pss_per_container_mib": round(pss, 3),
        "runs": args.runs,
        "containers": args.containers,
    }
    print(f"runs per case: {args.runs}")
    print(f"network none : p50 {figures['p50_none_ms']} ms, p99 {figures['p99_none_ms']} ms")
    print(f"bridge       : p50 {figures['p50_bridge_ms']} ms, p99 {figures['p99_bridge_ms']} ms")
    print(f"kernel floor : p50 {figures['floor_ms']} ms (unshare --fork … chroot ROOTFS /bin/true)")
    print(f"ratio none/floor: {figures['ratio_none_vs_floor']}")
    print(f"shim PSS per running container: {figures['pss_per_container_mib']} MiB")
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
