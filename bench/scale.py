"""Scale: one manager, N hollow nodes plus real dev nodes, C containers, measured end to end
(issue 13; docs/scale.md).

For each configuration (the large one, then the same containers per node on 10 nodes for the
ratio) it brings up the dev cluster (R real nodes, N hollow nodes in `flotilla hollow`
processes of --per-host nodes each), and measures in one run:

  fill       (N+R) × per-node containers, `docker run -d busybox sleep` (create + start)
             through the Engine API by 32 concurrent clients (one connection each): creates/s;
             every --reschedule-every'th carries reschedule:on-node-failure
  idle etcd  writes/s over 10 s with nothing happening (revision delta; which keys were put),
             etcd db size (maintenance status)
  run -d     --runs sequential create + start at the end: p50, p99
  ps, info   `docker ps` (running) and `docker info`: p50 of --queries
  RSS        the manager's (/proc)
  restart    the manager SIGKILLed and started again as the dev cluster starts it: time until
             `GET /containers/json?all=1` lists every container
  failover   (large configuration, ≥ 2 hollow hosts) one hollow host SIGKILLed: its nodes lost
             at once (bench/scale_failover.py)

Run as root under the dev-cluster lock; it takes the dev cluster down at the end:
    flock /tmp/flt-dev.lock python bench/scale.py [--nodes 1000] [--per-node 30] [--per-host 100]
        [--real 2] [--skip-small] [--skip-failover]
Prints a table; the last line is one JSON object (keys in RESULT_KEYS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench import scale_probes as probes  # noqa: E402
from bench.api import percentile  # noqa: E402
from bench.scale_failover import MassFailover, mass_failover  # noqa: E402
from deploy import dev_hollow, dev_layout, dev_processes  # noqa: E402
from deploy import devcluster as dc  # noqa: E402

CLIENTS = 32
SMALL_NODES = 10
IDLE_WINDOW_S = 10.0
SETTLE_S = 5.0  # after the fill: status reports and events flushed before the idle window
RESULT_KEYS = (
    "creates_per_s",
    "create_p50_ms",
    "create_p99_ms",
    "ps_p50_ms",
    "info_p50_ms",
    "manager_rss_mib",
    "etcd_writes_per_s_idle",
    "restart_ready_s",
    "create_p50_ratio_1000_vs_10",
    "mass_failover_p99_s",
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Figures:
    nodes: int  # real + hollow
    shared_lease: bool = False  # one lease per hollow process (--shared-lease)
    containers: int = 0
    fill_errors: list[str] = field(default_factory=list)
    creates_per_s: float = 0.0
    fill_p50_ms: float = 0.0
    create_ms: list[float] = field(default_factory=list)
    ps_ms: list[float] = field(default_factory=list)  # until the whole answer is received
    ps_decode_ms: list[float] = field(default_factory=list)  # this client's json.loads of it
    info_ms: list[float] = field(default_factory=list)
    rss_mib: float = 0.0
    idle: probes.IdleWrites | None = None
    etcd: probes.EtcdSize | None = None
    restart_s: float | None = None
    duplicates_after_fill: int | None = None  # logical containers running twice
    failover: MassFailover | None = None

    def create_p(self, q: float) -> float | None:
        return percentile(self.create_ms, q) if self.create_ms else None


# --------------------------------------------------------------------------- the steps


async def fill(count: int, reschedule_every: int, fig: Figures) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    times: list[float] = []

    async def worker() -> None:
        async with probes.client() as s:
            while not queue.empty():
                i = queue.get_nowait()
                t = time.perf_counter()
                try:
                    await probes.run_detached(s, f"scale-{i}", i % reschedule_every == 0)
                except (TimeoutError, probes.ApiError, OSError) as e:
                    fig.fill_errors.append(f"scale-{i}: {e}")
                    continue
                times.append((time.perf_counter() - t) * 1000)
                if len(times) % 1000 == 0:
                    log(f"  {len(times)}/{count} running")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    took = time.perf_counter() - start
    fig.containers = len(times)
    fig.creates_per_s = len(times) / took
    fig.fill_p50_ms = statistics.median(times) if times else 0.0
    log(f"  {fig.creates_per_s:.1f} creates/s, {len(fig.fill_errors)} errors")
    for error in fig.fill_errors[:5]:
        log(f"    {error}")


async def run_d(runs: int, fig: Figures) -> None:
    """`docker run -d` one after the other; the probes are removed after."""
    ids = []
    async with probes.client() as s:
        for i in range(runs):
            t = time.perf_counter()
            ids.append(await probes.run_detached(s, f"scale-probe-{i}", False))
            fig.create_ms.append((time.perf_counter() - t) * 1000)
        for cid in ids:
            await probes.call(s, "DELETE", f"/containers/{cid}?force=1")


async def queries(n: int, fig: Figures) -> None:
    async with probes.client() as s:
        for _ in range(n):
            t = time.perf_counter()
            raw = await probes.raw(s, "GET", "/containers/json?all=0")
            fig.ps_ms.append((time.perf_counter() - t) * 1000)
            # Decoding 30 MB is the client's own cost (Python's json here, Go's for the docker
            # CLI): measured apart, not in the API's answer time.
            t = time.perf_counter()
            json.loads(raw)
            fig.ps_decode_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            await probes.call(s, "GET", "/info")
            fig.info_ms.append((time.perf_counter() - t) * 1000)


async def duplicates_running() -> int:
    """Logical containers (com.docker.swarm.id) listed running on two nodes or more: a node
    that lost its lease for a moment (a busy host) while its containers kept running."""
    async with probes.client() as s:
        rows = await probes.containers(s)
    nodes: dict[str, set[str]] = {}
    for row in rows:
        sid = (row.get("Labels") or {}).get(probes.SWARM_ID)
        if sid:
            nodes.setdefault(sid, set()).add(probes.node_of(row))
    return sum(1 for n in nodes.values() if len(n) > 1)


async def restart_ready(timeout: float) -> float:
    """SIGKILL the manager, start it again as `dev up` did; until ps lists every container."""
    async with probes.client() as s:
        want = len(await probes.containers(s, all=True))
    dev_processes.kill_manager()
    t0 = time.monotonic()
    starting = asyncio.create_task(asyncio.to_thread(dev_processes.restart_manager, timeout))
    try:
        while time.monotonic() - t0 < timeout:
            try:
                async with probes.client() as s:
                    if len(await probes.containers(s, all=True)) == want:
                        return time.monotonic() - t0
            except (TimeoutError, probes.ApiError, OSError):
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the restarted manager did not list {want} containers in {timeout}s")
    finally:
        await starting


def measure(args: argparse.Namespace, hollow: int, failover: bool) -> Figures:
    fig = Figures(nodes=hollow + args.real, shared_lease=args.shared_lease)
    log(f"dev cluster: {args.real} real + {hollow} hollow nodes ({args.per_host} per host)")
    dc.up(
        nodes=args.real,
        hollow=hollow,
        hollow_per_host=args.per_host,
        hollow_shared_lease=args.shared_lease,
        timeout=60 + hollow * 0.1,
    )
    try:
        total = fig.nodes * args.per_node
        log(f"fill: {total} containers, {CLIENTS} clients")
        asyncio.run(fill(total, args.reschedule_every, fig))
        time.sleep(SETTLE_S)
        log(f"idle etcd writes over {IDLE_WINDOW_S:.0f}s")
        fig.idle = probes.idle_writes(IDLE_WINDOW_S)
        fig.etcd = probes.etcd_size()
        fig.duplicates_after_fill = asyncio.run(duplicates_running())
        log(f"docker run -d x{args.runs}")
        asyncio.run(run_d(args.runs, fig))
        log(f"docker ps, docker info x{args.queries}")
        asyncio.run(queries(args.queries, fig))
        fig.rss_mib = probes.rss_mib(probes.manager_pid())
        log("manager restart")
        fig.restart_s = asyncio.run(restart_ready(args.timeout))
        hosts = len(dev_hollow.host_slices(hollow, args.per_host)) if hollow else 0
        if failover and hosts >= 2:
            log(f"mass failover: hollow host {hosts - 1} killed")
            fig.failover = asyncio.run(mass_failover(hosts - 1, args.timeout))
    finally:
        dc.down()
    return fig


# --------------------------------------------------------------------------- report


def _r(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(v, nd)


def result(big: Figures, small: Figures | None) -> dict[str, object]:
    fo = big.failover
    p50 = big.create_p(50)
    small_p50 = small.create_p(50) if small else None
    out: dict[str, object] = {
        "creates_per_s": _r(big.creates_per_s),
        "create_p50_ms": _r(p50),
        "create_p99_ms": _r(big.create_p(99)),
        "ps_p50_ms": _r(statistics.median(big.ps_ms) if big.ps_ms else None),
        "ps_decode_p50_ms": _r(statistics.median(big.ps_decode_ms) if big.ps_decode_ms else None),
        "info_p50_ms": _r(statistics.median(big.info_ms) if big.info_ms else None),
        "manager_rss_mib": _r(big.rss_mib),
        "etcd_writes_per_s_idle": _r(big.idle.per_s if big.idle else None),
        "restart_ready_s": _r(big.restart_s, 2),
        "create_p50_ratio_1000_vs_10": (
            round(p50 / small_p50, 2) if p50 is not None and small_p50 else None
        ),
        "mass_failover_p99_s": (
            _r(percentile(list(fo.replaced.values()), 99), 2) if fo and fo.replaced else None
        ),
        "nodes": big.nodes,
        "containers": big.containers,
        "fill_errors": len(big.fill_errors),
        "duplicates_after_fill": big.duplicates_after_fill,
        "etcd_db_mib": _r(big.etcd.db_mib if big.etcd else None),
        "etcd_db_in_use_mib": _r(big.etcd.in_use_mib if big.etcd else None),
        "etcd_idle_keys": dict(big.idle.keys) if big.idle else {},
        "hollow_ttl": dev_hollow.TTL,
        "hollow_heartbeat": dev_hollow.HEARTBEAT,
        "hollow_shared_lease": big.shared_lease,
        "real_ttl": dev_layout.TTL,
    }
    if fo is not None:
        out |= {
            "mass_failover_nodes": fo.nodes,
            "mass_failover_reschedulable": fo.reschedulable,
            "mass_failover_replaced": len(fo.replaced),
            "mass_failover_p50_s": _r(percentile(list(fo.replaced.values()), 50), 2)
            if fo.replaced
            else None,
            "mass_failover_leases_expired_s": _r(fo.leases_expired_s, 2),
            "mass_failover_duplicates": len(fo.duplicates),
            "mass_failover_lost": fo.lost,
        }
    if small is not None:
        out |= {
            "small_nodes": small.nodes,
            "small_create_p50_ms": _r(small_p50),
            "small_creates_per_s": _r(small.creates_per_s),
        }
    return out


def table(big: Figures, small: Figures | None, res: dict[str, object]) -> list[str]:
    def row(what: str, key: str, small_v: object = "") -> str:
        v = res.get(key)
        return f"{what:<34} {'-' if v is None else v!s:>12} {small_v!s:>12}"

    s = small
    lines = [f"{'':<34} {f'{big.nodes} nodes':>12} {f'{s.nodes} nodes' if s else '':>12}"]
    lines.append(row("containers", "containers", s.containers if s else ""))
    lines.append(row("creates/s while filling", "creates_per_s", _r(s.creates_per_s) if s else ""))
    lines.append(row("docker run -d p50 ms", "create_p50_ms", _r(s.create_p(50)) if s else ""))
    lines.append(row("docker run -d p99 ms", "create_p99_ms", _r(s.create_p(99)) if s else ""))
    sp = _r(statistics.median(s.ps_ms)) if s and s.ps_ms else ""
    si = _r(statistics.median(s.info_ms)) if s and s.info_ms else ""
    lines.append(row("docker ps p50 ms", "ps_p50_ms", sp))
    lines.append(row("docker info p50 ms", "info_p50_ms", si))
    lines.append(row("manager RSS MiB", "manager_rss_mib", _r(s.rss_mib) if s else ""))
    lines.append(
        row(
            "etcd writes/s at rest",
            "etcd_writes_per_s_idle",
            _r(s.idle.per_s) if s and s.idle else "",
        )
    )
    lines.append(
        row("etcd db MiB (in use)", "etcd_db_mib", _r(s.etcd.db_mib) if s and s.etcd else "")
    )
    lines.append(
        row("manager restart to ready s", "restart_ready_s", _r(s.restart_s, 2) if s else "")
    )
    lines.append(row("run -d p50 ratio", "create_p50_ratio_1000_vs_10"))
    if big.idle:
        lines.append(f"keys put at rest ({IDLE_WINDOW_S:.0f} s): {dict(big.idle.keys) or 'none'}")
    fo = big.failover
    if fo is not None:
        lines.append(
            f"mass failover: hollow host {fo.host} ({fo.nodes} nodes) SIGKILLed, "
            f"{fo.reschedulable} reschedulable containers, {len(fo.replaced)} replaced; "
            f"leases expired after {res['mass_failover_leases_expired_s']} s "
            f"(TTL {res['hollow_ttl']}, heartbeat {res['hollow_heartbeat']}); p50 "
            f"{res['mass_failover_p50_s']} s, p99 {res['mass_failover_p99_s']} s; "
            f"duplicates {len(fo.duplicates)}, lost {fo.lost} "
            f"({fo.status_events} status changes watched)"
        )
    lines.append(f"logical containers running twice after the fill: {big.duplicates_after_fill}")
    lines += [f"fill error: {e.strip()}" for e in big.fill_errors[:5]]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1000, help="hollow nodes (default 1000)")
    ap.add_argument("--per-node", type=int, default=30, help="containers per node (default 30)")
    ap.add_argument("--per-host", type=int, default=100, help="hollow nodes per process")
    ap.add_argument("--real", type=int, default=2, help="real dev nodes besides (default 2)")
    ap.add_argument(
        "--reschedule-every",
        type=int,
        default=3,
        metavar="K",
        help="every K-th container is reschedulable (default 3)",
    )
    ap.add_argument("--runs", type=int, default=300, help="docker run -d at the end (default 300)")
    ap.add_argument("--queries", type=int, default=20, help="docker ps / info each (default 20)")
    ap.add_argument("--timeout", type=float, default=120.0, help="restart, failover: seconds")
    ap.add_argument("--skip-small", action="store_true", help="no 10-node run (no ratio)")
    ap.add_argument("--skip-failover", action="store_true", help="no mass failover")
    ap.add_argument(
        "--shared-lease",
        action="store_true",
        help="one lease per hollow process instead of one per hollow node (docs/scale.md)",
    )
    args = ap.parse_args()
    if args.nodes + args.real < 1 or args.per_node < 1 or args.reschedule_every < 1:
        ap.error("needs at least one node, one container per node, --reschedule-every ≥ 1")

    big = measure(args, args.nodes, failover=not args.skip_failover)
    small = None
    if not args.skip_small:
        small = measure(args, max(0, SMALL_NODES - args.real), failover=False)
    res = result(big, small)
    for line in table(big, small, res):
        print(line)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
