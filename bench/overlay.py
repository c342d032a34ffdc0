"""Overlay network cost, in one run: the same measurements host to host over the underlay and
container to container across hosts over the overlay (VXLAN), then the ratios.

- throughput: iperf3 TCP from node-1 to node-0, 1 stream and 8 streams, `--seconds` each,
  underlay and overlay interleaved for `--rounds` rounds (median per figure);
- RTT: `ping -c 50 -i 0.05` both ways, the mean of the two averages; added = overlay − underlay;
- reachable: `docker run -d` of a new container on node-1 (on the network, with a `--ip` given so
  the address is known when the command returns) → first echo reply from a container on node-0;
  the median of `--tries` containers (node-1 already has the network's devices: the iperf3
  container runs there), after checking that an address nobody holds does not answer;
- the machine's CPU busy fraction during each transfer (both ends share its cores).
The tools run from the host inside the namespaces (a node's /run/netns/node-N, a container's
/proc/<pid>/ns/net), so the busybox image needs neither iperf3 nor ping.

Targets: ratio ≥ 0.90 with 8 streams, ≥ 0.70 with 1 stream, ≤ 50 µs added RTT, reachable ≤ 1 s.
Uses the dev cluster when one is up (and leaves it up), else brings up 2 nodes and takes them
down at the end; run it from the checkout's root under the shared lock:
`flock /tmp/flt-dev.lock /opt/flotilla/venv/bin/python bench/overlay.py`. Last line: JSON.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench import netns_probes as probe  # noqa: E402
from bench.dockerd import docker  # noqa: E402
from deploy import devcluster  # noqa: E402
from deploy.dev_layout import NETNS_DIR, node_ip  # noqa: E402

HOST = devcluster.docker_host()
NETWORK = "flt-bench-overlay"
# Given, not chosen by the manager: `--ip` needs a user-configured subnet (dockerd's rule).
SUBNET = "10.231.0.0/24"
PREFIX = "flt-ob-"
TARGETS = {"ratio_8_streams": 0.90, "ratio_1_stream": 0.70}
ADDED_RTT_TARGET_US = 50.0
REACHABLE_TARGET_S = 1.0
REACH_DEADLINE_S = 10


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Endpoint:
    """One end of a measurement: a network namespace and the address others reach it at."""

    def __init__(self, label: str, netns: str, address: str) -> None:
        self.label, self.netns, self.address = label, netns, address


def node_endpoint(i: int) -> Endpoint:
    return Endpoint(f"node-{i}", os.path.join(NETNS_DIR, f"node-{i}"), node_ip(i))


def run_container(name: str, node: str, *extra: str) -> str:
    return docker(
        HOST, "run", "-d", "--name", name, "--network", NETWORK,
        "-e", f"constraint:node=={node}", *extra, "busybox", "sleep", "3600",
    ).strip()  # fmt: skip


def container_endpoint(name: str) -> Endpoint:
    """The container's netns as the host sees it. The manager reports the PID seen on the
    container's node; the dev agents share the host's PID namespace, so it is a host PID — checked
    here: that PID's netns must hold the container's overlay address."""
    info = json.loads(docker(HOST, "inspect", name))[0]
    pid = int(info["State"]["Pid"])
    address = info["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
    netns = f"/proc/{pid}/ns/net"
    shown = subprocess.run(
        probe.in_netns(netns, "ip", "-4", "-o", "addr", "show"),
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    if not pid or f" {address}/" not in shown:
        raise RuntimeError(f"{name}: PID {pid} is not the container here (no {address} there)")
    return Endpoint(name, netns, address)


def cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of the whole machine, from /proc/stat's first line."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields)  # idle + iowait


def throughput(
    client: Endpoint, server: Endpoint, streams: int, seconds: int
) -> tuple[float, float]:
    """Gbit/s from client to server, and the machine's CPU busy fraction meanwhile (both ends
    share this machine's cores: when it is near 1, the figure is CPU-bound)."""
    proc = probe.start_iperf3_server(server.netns)
    try:
        idle0, total0 = cpu_times()
        gbps = probe.iperf3_client(client.netns, server.address, streams, seconds)
        idle1, total1 = cpu_times()
    finally:
        probe.stop(proc)
    return gbps, 1 - (idle1 - idle0) / max(1, total1 - total0)


def rtt_us(a: Endpoint, b: Endpoint) -> float:
    """Mean of the average RTT a→b and b→a, in µs."""
    return (probe.ping_avg(a.netns, b.address) + probe.ping_avg(b.netns, a.address)) / 2 * 1000


def reachable_after(origin: Endpoint, tries: int) -> list[float | None]:
    """For each try, a new container on node-1: seconds from `docker run -d` returning to
    the first echo reply from `origin` (None: none within REACH_DEADLINE_S)."""
    hosts = [str(a) for a in ipaddress.ip_network(SUBNET).hosts()]
    # The control: an address nobody holds must not answer, or a reply would prove nothing.
    if probe.first_reply(origin.netns, hosts[-1], 1):
        raise RuntimeError(f"{hosts[-1]} answers though no container holds it")
    times: list[float | None] = []
    # Addresses near the top of the subnet, away from the ones the manager hands out first.
    for i, address in enumerate(hosts[-1 - tries : -1]):
        name = f"{PREFIX}reach-{i}"
        run_container(name, "node-1", "--ip", address)
        returned = time.monotonic()
        ok = probe.first_reply(origin.netns, address, REACH_DEADLINE_S)
        took = time.monotonic() - returned
        times.append(took if ok else None)
        log(f"reach #{i} ({address}): {f'{took:.3f} s' if ok else 'never'}")
        docker(HOST, "rm", "-f", name)
    return times


def measure(rounds: int, seconds: int, tries: int) -> dict[str, object]:
    under = (node_endpoint(0), node_endpoint(1))
    docker(HOST, "network", "create", "--subnet", SUBNET, NETWORK)
    run_container(f"{PREFIX}a", "node-0")
    run_container(f"{PREFIX}b", "node-1")
    over = (container_endpoint(f"{PREFIX}a"), container_endpoint(f"{PREFIX}b"))
    log(f"underlay {under[1].address} → {under[0].address}, "
        f"overlay {over[1].address} → {over[0].address}")  # fmt: skip
    gbps: dict[tuple[str, int], list[float]] = {}
    busy: dict[tuple[str, int], list[float]] = {}
    for r in range(rounds):
        for streams in (1, 8):
            for kind, (server, client) in (("underlay", under), ("overlay", over)):
                got, cpu = throughput(client, server, streams, seconds)
                gbps.setdefault((kind, streams), []).append(got)
                busy.setdefault((kind, streams), []).append(cpu)
                log(f"round {r + 1}: {kind} {streams} stream(s) {got:.2f} Gbit/s, CPU {cpu:.0%}")
    rtt_under, rtt_over = rtt_us(*under), rtt_us(*over)
    log(f"rtt underlay {rtt_under:.1f} µs, overlay {rtt_over:.1f} µs")
    reach = reachable_after(over[0], tries)
    med = {key: statistics.median(values) for key, values in gbps.items()}
    cpu_busy = {f"{k}_{n}": round(statistics.median(v), 2) for (k, n), v in busy.items()}
    reached = [t for t in reach if t is not None]
    return {
        "ratio_8_streams": round(med["overlay", 8] / med["underlay", 8], 3),
        "ratio_1_stream": round(med["overlay", 1] / med["underlay", 1], 3),
        "added_rtt_us": round(rtt_over - rtt_under, 1),
        # One try never reached makes it null: a median must not hide a container never reached.
        "reachable_after_s": round(statistics.median(reached), 3)
        if len(reached) == tries
        else None,
        "underlay_1_gbps": round(med["underlay", 1], 2),
        "overlay_1_gbps": round(med["overlay", 1], 2),
        "underlay_8_gbps": round(med["underlay", 8], 2),
        "overlay_8_gbps": round(med["overlay", 8], 2),
        "underlay_rtt_us": round(rtt_under, 1),
        "overlay_rtt_us": round(rtt_over, 1),
        "reachable_tries_s": [None if t is None else round(t, 3) for t in reach],
        "cpu_busy": cpu_busy,
        "rounds": rounds,
        "seconds": seconds,
    }


def cleanup() -> None:
    rows = docker(HOST, "ps", "-a", "--format", "{{.Names}}").split()
    ours = [n.rsplit("/", 1)[-1] for n in rows if n.rsplit("/", 1)[-1].startswith(PREFIX)]
    if ours:
        docker(HOST, "rm", "-f", *ours)
    if NETWORK in docker(HOST, "network", "ls", "--format", "{{.Name}}").split():
        docker(HOST, "network", "rm", NETWORK)


def mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def table(res: dict) -> list[str]:
    r1, r8, added = res["ratio_1_stream"], res["ratio_8_streams"], res["added_rtt_us"]
    reach = res["reachable_after_s"]
    rows = [
        ("TCP 1 stream Gbit/s", res["underlay_1_gbps"], res["overlay_1_gbps"], f"{r1:.3f}",
         ">= 0.70", r1 >= TARGETS["ratio_1_stream"]),
        ("TCP 8 streams Gbit/s", res["underlay_8_gbps"], res["overlay_8_gbps"], f"{r8:.3f}",
         ">= 0.90", r8 >= TARGETS["ratio_8_streams"]),
        ("ping RTT us", res["underlay_rtt_us"], res["overlay_rtt_us"], f"+{added:.1f}",
         "<= 50", added <= ADDED_RTT_TARGET_US),
        ("reachable after s", "", reach, "", "<= 1",
         reach is not None and reach <= REACHABLE_TARGET_S),
    ]  # fmt: skip
    out = [f"{'':<21} {'underlay':>9} {'overlay':>9} {'ratio':>7} {'target':>8}"]
    for label, under, over, ratio, target, ok in rows:
        out.append(f"{label:<21} {under!s:>9} {over!s:>9} {ratio:>7} {target:>8}  {mark(ok)}")
    out.append(f"reachable tries (s): {res['reachable_tries_s']}")
    out.append(f"machine CPU busy during iperf3 (median): {res['cpu_busy']}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="throughput rounds (default 5)")
    ap.add_argument("--seconds", type=int, default=4, help="per iperf3 run (default 4)")
    ap.add_argument("--tries", type=int, default=5, help="reachability tries (default 5)")
    args = ap.parse_args()

    ours = not devcluster.is_up()
    if ours:
        log("dev cluster of 2 nodes")
        devcluster.up(2, timeout=60)
    try:
        cleanup()  # a crashed earlier run's leftovers
        res = measure(args.rounds, args.seconds, args.tries)
    finally:
        try:
            cleanup()
        finally:
            if ours:
                devcluster.down()
    for line in table(res):
        print(line)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
