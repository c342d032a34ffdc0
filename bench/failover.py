"""Failover drills on a dev cluster of its own, measured from the containers themselves.

For each kind of fault — kill (agent kill -9), crash (the whole host), freeze (agent SIGSTOP),
partition (host cut off) — N runs: 10 reschedulable containers (`-e reschedule:on-node-failure`,
soft constraint to the victim node) start on node-1, each appending a heartbeat line every
100 ms to /tmp/flt-failover-hb/<its name> (bind-mounted at /hb; see bench/failover_heartbeats.py
for the line format), the fault is injected, and the bench watches the files until each logical
container beats again from a new copy, then heals the node and watches a little longer:
  time to running elsewhere = fault → the replacement's first heartbeat;
  duplicate = two copies of one logical container whose heartbeats overlap in time;
  lost = a logical container with no copy beating at the end of its run.
Then B 2-second blips (partition 2 s, heal: any copy silenced or replaced is a false failover)
and one etcd outage (every member down for 60 s: any container silenced or replaced counts in
`etcd_outage_stopped`). Prints a table; the last line is JSON with kill_p50_s, kill_p99_s,
crash_p99_s, freeze_p99_s, partition_p99_s, duplicates, lost, false_failovers and
etcd_outage_stopped. Targets with default settings: every p99 ≤ 5 s, the other four 0.

Brings up (and at the end takes down) the one dev cluster of the machine, so run it under the
shared lock: `flock /tmp/flt-dev.lock python3 bench/failover.py [--runs 20] [--blips 5]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench import failover_heartbeats as hb  # noqa: E402
from deploy import dev_drills, dev_processes  # noqa: E402
from deploy import devcluster as dc  # noqa: E402

HB_DIR = "/tmp/flt-failover-hb"
VICTIM = "node-1"
KINDS = ("kill", "crash", "freeze", "partition")
PER_RUN = 10


@dataclass
class Results:
    times: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    duplicates: int = 0
    lost: int = 0
    false_failovers: int = 0
    etcd_outage_stopped: int | None = None
    problems: list[str] = field(default_factory=list)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


LISTING_SETTLE_S = 2.0


def wait_until(cond: Callable[[], bool], timeout: float, poll: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


class Bench:
    def __init__(self, client: object, watch: hb.HeartbeatDir) -> None:
        self.client = client
        self.watch = watch
        self.res = Results()

    # ---- containers

    def start_containers(self, prefix: str, constraint: str | None) -> list[str]:
        names = [f"{prefix}-{i}" for i in range(PER_RUN)]
        for name in names:
            env = [f"SWARMID={name}", "reschedule:on-node-failure"]
            if constraint:
                env.append(f"constraint:node==~{constraint}")
            self.client.containers.run(  # type: ignore[attr-defined]
                "busybox:latest",
                ["sh", "-c", hb.SCRIPT],
                name=name,
                environment=env,
                volumes={HB_DIR: {"bind": "/hb", "mode": "rw"}},
                detach=True,
            )
        if not wait_until(lambda: self._all_beating(names), 30):
            silent = [n for n in names if not self._beating(n)]
            self.res.problems.append(f"{prefix}: never beat: {', '.join(silent)}")
        return names

    def placed_on(self, names: list[str]) -> dict[str, str]:
        """Where the manager says each container is (Names are /node/name)."""
        out: dict[str, str] = {}
        for row in self.client.api.containers(all=True):  # type: ignore[attr-defined]
            for full in row.get("Names") or []:
                node, _, name = full.lstrip("/").partition("/")
                if name in names:
                    out[name] = node
        return out

    def remove_containers(self, names: list[str]) -> None:
        for name in names:
            try:
                self.client.api.remove_container(name, force=True)  # type: ignore[attr-defined]
            except Exception as e:  # noqa: BLE001 - reported, the bench goes on
                if "No such container" not in str(e):
                    self.res.problems.append(f"rm {name}: {e}")

    def remove_all(self) -> None:
        """Every container a bench step made (after a step failed half-way)."""
        rows = self.client.api.containers(all=True)  # type: ignore[attr-defined]
        names = [n.rsplit("/", 1)[-1] for r in rows for n in r.get("Names") or []]
        self.remove_containers([n for n in names if n.startswith("fo-")])

    def _beating(self, name: str) -> bool:
        self.watch.poll()
        return hb.beating_at(self.watch.of(name), hb.boottime())

    def _all_beating(self, names: list[str]) -> bool:
        return all(self._beating(n) for n in names)

    # ---- the drills

    def failover_run(self, kind: str, run: int, timeout: float) -> None:
        names = self.start_containers(f"fo-{kind}-{run}", VICTIM)
        where = self.placed_on(names)
        if any(node != VICTIM for node in where.values()):
            self.res.problems.append(f"{kind} #{run}: not all on {VICTIM}: {where}")
        fault_t = hb.boottime()
        dev_drills.DRILLS[kind][0](VICTIM)

        def replaced() -> bool:
            self.watch.poll()
            return all(hb.time_to_replacement(self.watch.of(n), fault_t) is not None for n in names)

        wait_until(replaced, timeout)
        # Only another node can run the replacements while the victim is down. A replacement
        # beats as soon as it starts, a moment before the manager records where it went
        # (docs/failover.md): the listing is given that moment to follow.
        where: dict[str, str] = {}

        def listed_elsewhere() -> bool:
            nonlocal where
            where = self.placed_on(names)
            return all(node != VICTIM for node in where.values())

        wait_until(listed_elsewhere, LISTING_SETTLE_S)
        stayed = sorted(n for n, node in where.items() if node == VICTIM)
        moved = {node for node in where.values() if node != VICTIM}
        if stayed:
            self.res.problems.append(f"{kind} #{run}: still listed on {VICTIM}: {stayed}")
        dev_drills.heal(VICTIM, timeout=60)
        time.sleep(3)  # the healed node's stale copies must not beat again
        self.watch.poll()
        end_t = hb.boottime()
        for n in names:
            beats = self.watch.of(n)
            took = hb.time_to_replacement(beats, fault_t)
            if took is not None:
                self.res.times[kind].append(took)
            if hb.is_duplicated(beats):
                self.res.duplicates += 1
            if not hb.beating_at(beats, end_t, 1.0):
                self.res.lost += 1
        done = [t for n in names if (t := hb.time_to_replacement(self.watch.of(n), fault_t))]
        log(
            f"{kind} #{run}: {len(done)}/{len(names)} replaced, "
            f"max {max(done, default=float('nan')):.2f}s, now on {', '.join(sorted(moved))}"
        )
        self.remove_containers(names)

    def blip(self, run: int, seconds: float, watch_s: float) -> None:
        names = self.start_containers(f"fo-blip-{run}", VICTIM)
        t0 = hb.boottime()
        dev_drills.partition(VICTIM)
        time.sleep(seconds)
        dev_drills.heal(VICTIM, timeout=60)
        time.sleep(watch_s)
        self.watch.poll()
        t1 = hb.boottime()
        hit = [n for n in names if hb.disturbed(self.watch.of(n), t0, t1)]
        self.res.false_failovers += len(hit)
        log(f"blip #{run}: {len(hit)} disturbed")
        self.remove_containers(names)

    def etcd_outage(self, seconds: float, watch_s: float) -> None:
        names = self.start_containers("fo-etcd", None)
        t0 = hb.boottime()
        dev_processes.stop_etcd()
        time.sleep(seconds)
        dev_processes.start_etcd()
        time.sleep(watch_s)
        self.watch.poll()
        t1 = hb.boottime()
        hit = [n for n in names if hb.disturbed(self.watch.of(n), t0, t1)]
        self.res.etcd_outage_stopped = len(hit)
        log(f"etcd outage {seconds:.0f}s: {len(hit)} stopped or moved")
        self.remove_containers(names)


def summary(res: Results) -> dict[str, object]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    return {
        "kill_p50_s": r(hb.percentile(res.times["kill"], 50)),
        "kill_p99_s": r(hb.percentile(res.times["kill"], 99)),
        "crash_p99_s": r(hb.percentile(res.times["crash"], 99)),
        "freeze_p99_s": r(hb.percentile(res.times["freeze"], 99)),
        "partition_p99_s": r(hb.percentile(res.times["partition"], 99)),
        "duplicates": res.duplicates,
        "lost": res.lost,
        "false_failovers": res.false_failovers,
        "etcd_outage_stopped": res.etcd_outage_stopped,
    }


def table(res: Results, runs: int) -> list[str]:
    out = [f"{'fault':<10} {'replaced':>9} {'p50 s':>7} {'p99 s':>7} {'max s':>7}"]
    for kind in KINDS:
        t = res.times[kind]
        cells = [hb.percentile(t, 50), hb.percentile(t, 99), max(t, default=None)]
        shown = " ".join(f"{'-' if v is None else f'{v:.2f}':>7}" for v in cells)
        out.append(f"{kind:<10} {len(t):>4}/{runs * PER_RUN:<4} {shown}")
    out.append(
        f"duplicates {res.duplicates}  lost {res.lost}  false failovers {res.false_failovers}  "
        f"etcd outage stopped {res.etcd_outage_stopped}"
    )
    out += [f"problem: {p}" for p in res.problems]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="drills of each kind (default 20)")
    ap.add_argument("--blips", type=int, default=5, help="2 s partitions (default 5)")
    ap.add_argument("--etcd-outage", type=float, default=60.0, metavar="S", help="0: skip")
    ap.add_argument("--timeout", type=float, default=30.0, help="wait for replacements, per run")
    ap.add_argument("--nodes", type=int, default=3)
    args = ap.parse_args()

    import docker

    shutil.rmtree(HB_DIR, ignore_errors=True)
    os.makedirs(HB_DIR)
    log(f"dev cluster of {args.nodes} nodes")
    dc.up(args.nodes, timeout=60)
    client = docker.DockerClient(base_url=dc.docker_host(), timeout=60)
    bench = Bench(client, hb.HeartbeatDir(HB_DIR))
    steps: list[tuple[str, Callable[[], None]]] = [
        (f"{kind} #{run}", lambda k=kind, r=run: bench.failover_run(k, r, args.timeout))
        for kind in KINDS
        for run in range(args.runs)
    ]
    steps += [(f"blip #{r}", lambda r=r: bench.blip(r, 2.0, 8.0)) for r in range(args.blips)]
    if args.etcd_outage > 0:
        steps.append(("etcd outage", lambda: bench.etcd_outage(args.etcd_outage, 10.0)))
    try:
        for what, step in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - one failed drill is reported, not fatal
                bench.res.problems.append(f"{what}: {type(e).__name__}: {e}")
                log(f"{what} failed: {e}")
                dev_processes.start_etcd()
                dev_drills.heal(VICTIM, timeout=60)
                bench.remove_all()
    except KeyboardInterrupt:
        bench.res.problems.append("interrupted")
    finally:
        client.close()
        dc.down()
    for line in table(bench.res, args.runs):
        print(line)
    print(json.dumps(summary(bench.res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
