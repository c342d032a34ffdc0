"""Placement decisions per second of manager/scheduler on a synthetic 1,000-node cluster.

Builds (seeded) 1,000 nodes carrying 30,000 containers, then makes N decisions with a mix of
create bodies (plain, with CPU/memory reservations, host ports, constraints, affinities, and
a few soft affinities no node meets: Swarm's worst case, every node checked twice), each
placed container added to its node as the manager does with pending creates. Prints
decisions/s and p50/p99 latency per decision, overall and per kind; the last line is JSON.
Run: `python bench/scheduler.py [--nodes 1000] [--containers 30000] [--decisions 5000]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from manager.scheduler import (  # noqa: E402
    ContainerInfo,
    NodeInfo,
    Scheduler,
    SchedulingError,
    parse_placement,
)

GIB = 1 << 30
MIB = 1 << 20
IMAGES = ["busybox:latest", "redis:7", "nginx:1.25", "postgres:16", "alpine:3.19"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def make_container(
    rng: random.Random,
    serial: int,
    image: str,
    memory: int,
    cpus: int,
    ports: list[tuple[str, int, str]],
) -> ContainerInfo:
    return ContainerInfo(
        id=f"{rng.getrandbits(256):064x}",
        name=f"c{serial}",
        image=image,
        image_id="sha256:" + f"{hash(image) & (2**256 - 1):064x}",
        labels={"com.example.tier": rng.choice(["web", "db", "cache"])},
        running=rng.random() < 0.9,
        cpu_shares=cpus,
        nano_cpus=0,
        memory=memory,
        host_ports=ports,
    )


def build_cluster(rng: random.Random, n_nodes: int, n_containers: int) -> list[NodeInfo]:
    nodes = []
    for i in range(n_nodes):
        nodes.append(
            NodeInfo(
                id=f"{rng.getrandbits(128):032x}",
                name=f"node-{i}",
                addr=f"10.0.{i // 250}.{i % 250 + 1}:7001",
                labels={
                    "region": rng.choice(["us-east", "us-west", "eu-west"]),
                    "disk": rng.choice(["ssd", "hdd"]),
                },
                healthy=rng.random() > 0.01,
                ncpu=rng.choice([4, 8, 16, 32]),
                memory=rng.choice([16, 32, 64]) * GIB,
                kernel_version="6.1.0-18-amd64",
                operating_system="Debian GNU/Linux 12 (bookworm)",
                os_type="linux",
                storage_driver="overlay2",
                images=set(rng.sample(IMAGES, 3)),
                containers=[],
            )
        )
    for serial in range(n_containers):
        node = nodes[serial % n_nodes]
        memory = rng.choice([0, 0, 128 * MIB, 256 * MIB])
        cpus = rng.choice([0, 0, 0, 1])
        ports = [("0.0.0.0", 8000 + rng.randrange(50), "tcp")] if rng.random() < 0.1 else []
        node.containers.append(make_container(rng, serial, rng.choice(IMAGES), memory, cpus, ports))
    return nodes


def make_body(rng: random.Random, kind: str) -> dict:
    body: dict = {"Image": "busybox:latest", "Env": ["PATH=/bin"], "HostConfig": {}}
    if kind == "reserved":
        body["HostConfig"].update({"Memory": 256 * MIB, "CpuShares": 1})
    elif kind == "port":
        port = str(9000 + rng.randrange(200))
        body["HostConfig"]["PortBindings"] = {"80/tcp": [{"HostIp": "", "HostPort": port}]}
    elif kind == "constraint":
        body["Env"].append("constraint:region==us-*")
        body["Env"].append("constraint:disk!=hdd")
    elif kind == "affinity":
        body["Env"].append("affinity:image==redis")
        body["Env"].append("affinity:container==~c1*")
    elif kind == "soft_miss":
        # Worst case by Swarm's design: no node meets the soft expression, so every node is
        # checked before the retry without it.
        body["Env"].append("affinity:image==redis")
        body["Env"].append("affinity:com.example.tier!=~db")
    return body


# Per 100 decisions: 48 plain, 20 with reservations, 10 with a host port, 10 with
# constraints, 10 with affinities (one soft), 2 whose soft affinity no node meets.
KINDS = (
    ["plain"] * 48
    + ["reserved"] * 20
    + ["port"] * 10
    + ["constraint"] * 10
    + ["affinity"] * 10
    + ["soft_miss"] * 2
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--containers", type=int, default=30000)
    parser.add_argument("--decisions", type=int, default=5000)
    parser.add_argument("--strategy", default="spread")
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    nodes = build_cluster(rng, args.nodes, args.containers)
    scheduler = Scheduler(args.strategy, rng=random.Random(args.seed))
    bodies = [
        (k, parse_placement(make_body(rng, k)))
        for k in (rng.choice(KINDS) for _ in range(args.decisions))
    ]

    latencies: dict[str, list[float]] = {k: [] for k in dict.fromkeys(KINDS)}
    all_ms: list[float] = []
    failures = 0
    started = time.perf_counter()
    for serial, (kind, body) in enumerate(bodies):
        t0 = time.perf_counter()
        try:
            node = scheduler.select(nodes, body, None)
        except SchedulingError:
            failures += 1
            node = None
        ms = (time.perf_counter() - t0) * 1000
        latencies[kind].append(ms)
        all_ms.append(ms)
        if node is not None:  # the manager registers the pending create before the next one
            host = body["HostConfig"]
            ports = [
                ("0.0.0.0", int(b["HostPort"]), "tcp")
                for b in host.get("PortBindings", {}).get("80/tcp", [])
            ]
            node.containers.append(
                make_container(
                    rng,
                    args.containers + serial,
                    body["Image"],
                    host.get("Memory", 0),
                    host.get("CpuShares", 0),
                    ports,
                )
            )
    elapsed = time.perf_counter() - started

    rate = len(all_ms) / elapsed
    p50, p99 = percentile(all_ms, 50), percentile(all_ms, 99)
    print(f"{args.nodes} nodes, {args.containers} containers, strategy {args.strategy}")
    for kind, values in latencies.items():
        if values:
            print(
                f"  {kind:<11} n={len(values):<5} p50 {percentile(values, 50):.3f} ms"
                f"  p99 {percentile(values, 99):.3f} ms"
            )
    print(f"decisions/s {rate:.0f}  p50 {p50:.3f} ms  p99 {p99:.3f} ms  failures {failures}")
    print(
        json.dumps(
            {
                "decisions_per_s": round(rate, 1),
                "p50_ms": round(p50, 3),
                "p99_ms": round(p99, 3),
                "nodes": args.nodes,
                "containers": args.containers,
                "decisions": len(all_ms),
                "failures": failures,
                "strategy": args.strategy,
            }
        )
    )


if __name__ == "__main__":
    main()
