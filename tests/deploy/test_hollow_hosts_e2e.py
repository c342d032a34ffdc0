"""Hollow nodes in several hosts (`flotilla dev up --hollow N --hollow-per-host M`), one host
killed hard (`flotilla dev kill-hollow K`), and `dev down` after it: through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from deploy import dev_hollow, dev_layout, dev_processes
from deploy import devcluster as dc
from tests.fixtures import dev_cluster_skip_reason

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TTL_S = 5.0  # the hollow nodes' lease (deploy/dev_hollow.py)
MARGIN_S = 10.0


def flotilla(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )


def hollow_registered() -> set[str]:
    return {n for n in dc.registered() if dev_hollow.is_hollow_name(n)}


def test_host_slices() -> None:
    assert dev_hollow.host_slices(1000, 100) == [(i * 100, 100) for i in range(10)]
    assert dev_hollow.host_slices(7, 3) == [(0, 3), (3, 3), (6, 1)]
    assert dev_hollow.host_slices(5, 0) == [(0, 5)]  # 0: one host for all
    assert dev_hollow.host_slices(5, 9) == [(0, 5)]


def test_hosts_kill_hollow_and_down() -> None:
    reason = dev_cluster_skip_reason(need_docker=False)
    if reason:
        pytest.skip(reason)
    try:
        up = flotilla("dev", "up", "--nodes", "0", "--hollow", "7", "--hollow-per-host", "3")
        assert up.returncode == 0, up.stderr
        assert "7 hollow nodes: hollow-0 … hollow-6" in up.stdout
        hosts = dc.status().hollow
        assert [(h.index, h.first, h.count, h.registered) for h in hosts] == [
            (0, 0, 3, 3),
            (1, 3, 3, 3),
            (2, 6, 1, 1),
        ]
        pids = [h.pid for h in hosts]
        assert None not in pids and len(set(pids)) == 3
        assert dev_hollow.hollow_pids() == set(pids)
        for i in range(3):
            assert os.path.exists(dev_layout.log_path(dev_hollow.host_log(i)))
        status = flotilla("dev", "status")
        assert "hollow-host-1  3 nodes (hollow-3 … hollow-5)  process=running" in status.stdout

        killed = flotilla("dev", "kill-hollow", "1")
        assert killed.returncode == 0, killed.stderr
        assert "hollow-3 … hollow-5 lost" in killed.stdout
        assert not dev_processes.alive(pids[1])
        # Nothing deregistered: the records stay until their leases run out.
        deadline = time.monotonic() + TTL_S + MARGIN_S
        while hollow_registered() & {"hollow-3", "hollow-4", "hollow-5"}:
            assert time.monotonic() < deadline, "the killed host's nodes are still registered"
            time.sleep(0.2)
        assert hollow_registered() == {f"hollow-{i}" for i in (0, 1, 2, 6)}
        hosts = dc.status().hollow
        assert (hosts[1].pid, hosts[1].registered) == (None, 0)
        assert "hollow-host-1  3 nodes (hollow-3 … hollow-5)  process=stopped" in (
            flotilla("dev", "status").stdout
        )

        again = flotilla("dev", "kill-hollow", "1")
        assert again.returncode == 1 and "hollow host 1 is not running" in again.stderr
        unknown = flotilla("dev", "kill-hollow", "3")
        assert unknown.returncode == 1 and "no hollow host 3 (the cluster has 3)" in unknown.stderr

        down = flotilla("dev", "down")
        assert down.returncode == 0, down.stderr
        assert not any(dev_processes.alive(p) for p in pids)
        assert not dev_hollow.hollow_pids() and not dev_processes.etcd_pids()
        assert not dev_processes.manager_pids() and not dc.is_up()
    finally:
        dc.down()
