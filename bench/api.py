"""The manager through the real docker CLI: `docker run --rm`, `docker run -d`, `docker ps`.

Brings up a 3-node dev cluster (unless one is already up: then it uses it and leaves it up),
times each command as a user sees it (CLI process included), and, when a dockerd is installed
(Debian `docker.io`), measures it in the same run for the ratio: the running one at
/var/run/docker.sock, or else a private dockerd started for the run in a network namespace of
its own (its bridge and iptables rules stay there) with a throwaway data root, removed after
(bench/dockerd.py).
Run as root: `python bench/api.py [--runs 30] [--ps-containers 300]`. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.dockerd import docker, dockerd_host  # noqa: E402
from deploy import devcluster  # noqa: E402

MANAGER = "tcp://127.0.0.1:2375"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def timed(host: str, runs: int, *args: str) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        docker(host, *args)
        times.append((time.perf_counter() - start) * 1000)
    return times


def measure(host: str, runs: int, network: str) -> dict[str, list[float]]:
    net = ["--network", network] if network else []
    run_rm = timed(host, runs, "run", "--rm", *net, "busybox", "true")
    run_d: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        cid = docker(host, "run", "-d", *net, "busybox", "sleep", "600").strip()
        run_d.append((time.perf_counter() - start) * 1000)
        docker(host, "rm", "-f", cid)
    return {"run_rm": run_rm, "run_d": run_d}


def ps_with(host: str, count: int, runs: int) -> list[float]:
    ids = []
    try:
        for _ in range(count):
            ids.append(docker(host, "create", "--network", "none", "busybox", "true").strip())
        return timed(host, runs, "ps", "-a")
    finally:
        for i in range(0, len(ids), 50):
            docker(host, "rm", "-f", *ids[i : i + 50])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--ps-containers", type=int, default=300)
    args = parser.parse_args()

    ours = not devcluster.is_up()
    if ours:
        devcluster.up(nodes=3)
    try:
        figures_bridge = measure(MANAGER, args.runs, "")
        figures_none = measure(MANAGER, args.runs, "none")
        ps = ps_with(MANAGER, args.ps_containers, 10)
    finally:
        if ours:
            devcluster.down()

    dockerd_p50 = None
    with dockerd_host() as host:
        if host is not None:
            dockerd_p50 = statistics.median(measure(host, args.runs, "")["run_rm"])

    result = {
        "run_rm_p50_ms": round(statistics.median(figures_bridge["run_rm"]), 1),
        "run_rm_p99_ms": round(percentile(figures_bridge["run_rm"], 99), 1),
        "run_d_p50_ms": round(statistics.median(figures_bridge["run_d"]), 1),
        "run_rm_none_p50_ms": round(statistics.median(figures_none["run_rm"]), 1),
        "run_d_none_p50_ms": round(statistics.median(figures_none["run_d"]), 1),
        "ps300_p50_ms": round(statistics.median(ps), 1),
        "dockerd_run_rm_p50_ms": round(dockerd_p50, 1) if dockerd_p50 else None,
        "ratio_vs_dockerd": (
            round(statistics.median(figures_bridge["run_rm"]) / dockerd_p50, 2)
            if dockerd_p50
            else None
        ),
        "runs": args.runs,
        "ps_containers": args.ps_containers,
    }
    print(
        f"docker run --rm busybox true  p50 {result['run_rm_p50_ms']} ms, "
        f"p99 {result['run_rm_p99_ms']} ms (network none: {result['run_rm_none_p50_ms']} ms)"
    )
    print(
        f"docker run -d busybox sleep   p50 {result['run_d_p50_ms']} ms "
        f"(network none: {result['run_d_none_p50_ms']} ms)"
    )
    print(f"docker ps -a, {args.ps_containers} containers  p50 {result['ps300_p50_ms']} ms")
    if dockerd_p50 is None:
        print("dockerd: not installed here, no ratio (anchors: 263 ms median with its bridge)")
    else:
        print(
            f"dockerd docker run --rm: p50 {result['dockerd_run_rm_p50_ms']} ms; "
            f"ratio {result['ratio_vs_dockerd']}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
