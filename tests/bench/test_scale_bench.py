"""bench/scale.py end to end in a tiny configuration (1 real node, 6 hollow nodes over 2 hollow
hosts, 3 containers per node, one host killed), so the script cannot rot: only what must hold
whatever the speed — every figure reported, nothing failed, lost or duplicated."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.scale import RESULT_KEYS
from deploy import dev_hollow
from deploy import devcluster as dc
from tests.fixtures import dev_cluster_skip_reason

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_scale_bench_tiny() -> None:
    reason = dev_cluster_skip_reason(need_docker=False)
    if reason:
        pytest.skip(reason)
    cmd = [sys.executable, os.path.join(REPO, "bench", "scale.py"), "--nodes", "6"]
    cmd += ["--per-host", "3", "--per-node", "3", "--real", "1", "--reschedule-every", "1"]
    cmd += ["--runs", "5", "--queries", "2", "--skip-small", "--timeout", "60"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    finally:
        if dc.is_up() or dev_hollow.hollow_pids():  # the bench was killed half-way
            dc.down()
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.splitlines()[-1])
    assert set(RESULT_KEYS) <= out.keys()
    assert out["nodes"] == 7 and out["containers"] == 21 and out["fill_errors"] == 0
    assert out["mass_failover_nodes"] == 3
    # Every container of the killed host was reschedulable, and each runs again elsewhere once.
    assert out["mass_failover_reschedulable"] > 0
    assert out["mass_failover_replaced"] == out["mass_failover_reschedulable"]
    assert out["duplicates_after_fill"] == 0
    assert out["mass_failover_duplicates"] == 0 and out["mass_failover_lost"] == 0
    assert out["mass_failover_p99_s"] is not None and out["restart_ready_s"] is not None
    assert out["create_p50_ratio_1000_vs_10"] is None  # --skip-small
    # The bench takes the dev cluster down after itself.
    assert not dc.is_up() and not dev_hollow.hollow_pids()


def test_running_elsewhere_skips_lost_nodes_and_stopped_copies() -> None:
    from bench.scale_failover import _running_elsewhere

    def row(node: str, sid: str, state: str = "running") -> dict:
        return {
            "Names": [f"/{node}/c-{sid}"],
            "Labels": {"com.docker.swarm.id": sid},
            "State": state,
        }

    rows = [
        row("hollow-5", "a"),  # still listed on the lost node: not a copy that counts
        row("hollow-1", "a"),
        row("hollow-2", "b"),
        row("hollow-3", "b"),  # two running copies on surviving nodes: a duplicate
        row("node-0", "c", "exited"),
    ]
    got = _running_elsewhere(rows, victims={"hollow-5"})
    assert got == {"a": ["hollow-1"], "b": ["hollow-2", "hollow-3"]}


def test_running_copies_counts_a_second_copy_running_at_once() -> None:
    from bench.scale_failover import RunningCopies
    from proto.records_pb2 import ContainerStatus

    def st(sid: str, state: str = "running") -> ContainerStatus:
        return ContainerStatus(state=state, labels={"com.docker.swarm.id": sid})

    copies = RunningCopies(excluded_nodes={"dead"})
    copies.apply("dead", "s/dead/1", st("a"))  # the lost node's last word: not counted
    copies.apply("n1", "s/n1/2", st("a"))
    assert copies.duplicates == set()
    copies.apply("n2", "s/n2/3", st("b"))
    copies.apply("n2", "s/n2/3", st("b", "exited"))  # stopped, then another one started
    copies.apply("n3", "s/n3/4", st("b"))
    copies.apply("n3", "s/n3/4", None)  # removed
    copies.apply("n1", "s/n1/5", st("b"))
    assert copies.duplicates == set()
    copies.apply("n3", "s/n3/6", st("a"))  # a second running copy of "a"
    assert copies.duplicates == {"a"}
