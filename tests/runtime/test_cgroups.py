"""runtime.cgroups: v2 paths against a fake tree, real v1/v2 behaviour on this host as root."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from runtime import cgroups
from runtime.cgroups import Cgroups, Resources, shares_to_weight

MiB = 1024 * 1024


def test_resource_defaults() -> None:
    assert Resources(memory=64 * MiB).effective_swap() == 128 * MiB
    assert Resources(memory=64 * MiB, memory_swap=-1).effective_swap() == -1
    assert Resources(nano_cpus=1_500_000_000).cfs() == (150_000, 100_000)
    assert Resources().cfs() == (-1, 100_000)
    assert shares_to_weight(2) == 1
    assert shares_to_weight(1024) == 39
    assert shares_to_weight(262144) == 10000


# ---- v2 against a fake tree ------------------------------------------------------------------


def _fake_v2(root: str) -> None:
    """A pretend cgroup2 mount: control files are plain files."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "cgroup.controllers"), "w") as f:
        f.write("cpuset cpu io memory hugetlb pids rdma misc\n")
    with open(os.path.join(root, "cgroup.subtree_control"), "w") as f:
        f.write("")


def test_v2_fake_tree(tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    root = str(tmp_path)
    _fake_v2(root)
    # A real cgroupfs populates new dirs; mimic it so the v2 writers find their files.
    real_makedirs = os.makedirs

    def makedirs(path: str, exist_ok: bool = False) -> None:
        real_makedirs(path, exist_ok=exist_ok)
        for name in (
            "cgroup.controllers",
            "cgroup.subtree_control",
            "cgroup.procs",
            "cgroup.freeze",
            "memory.max",
            "memory.swap.max",
            "memory.low",
            "cpu.max",
            "cpu.weight",
            "pids.max",
            "cpuset.cpus",
        ):
            p = os.path.join(path, name)
            if not os.path.exists(p):
                with open(p, "w") as f:
                    f.write("cpuset cpu io memory pids\n" if name == "cgroup.controllers" else "")

    monkeypatch.setattr(cgroups.os, "makedirs", makedirs)
    cg = Cgroups("flotilla/node-0", root=root, version=2)
    res = Resources(memory=64 * MiB, nano_cpus=500_000_000, cpu_shares=512, pids_limit=100)
    dirs = cg.create("abc", res)
    leaf = os.path.join(root, "flotilla", "node-0", "abc")
    assert dirs == [leaf]

    def read(path: str) -> str:
        with open(path) as f:
            return f.read()

    assert read(os.path.join(leaf, "memory.max")) == str(64 * MiB)
    assert read(os.path.join(leaf, "memory.swap.max")) == str(64 * MiB)
    assert read(os.path.join(leaf, "cpu.max")) == "50000 100000"
    assert read(os.path.join(leaf, "cpu.weight")) == str(shares_to_weight(512))
    assert read(os.path.join(leaf, "pids.max")) == "100"
    for level in (root, os.path.join(root, "flotilla"), os.path.join(root, "flotilla", "node-0")):
        assert "+memory" in read(os.path.join(level, "cgroup.subtree_control"))
    assert cg.list_ids() == ["abc"]

    cg.update("abc", Resources())
    assert read(os.path.join(leaf, "memory.max")) == "max"
    assert read(os.path.join(leaf, "cpu.max")) == "max 100000"

    with open(os.path.join(leaf, "memory.events"), "w") as f:
        f.write("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert cg.oom_killed("abc")
    with open(os.path.join(leaf, "cpu.stat"), "w") as f:
        f.write("usage_usec 2000\nuser_usec 1500\nsystem_usec 500\nnr_periods 4\n")
    with open(os.path.join(leaf, "memory.current"), "w") as f:
        f.write("4096\n")
    st = cg.stats("abc")
    assert st["cpu_stats"]["cpu_usage"]["total_usage"] == 2_000_000
    assert st["cpu_stats"]["throttling_data"]["periods"] == 4
    assert st["memory_stats"]["usage"] == 4096


# ---- real kernel -----------------------------------------------------------------------------


@pytest.fixture
def real() -> Iterator[tuple[Cgroups, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    node = f"test-{uuid.uuid4().hex[:8]}"
    cg = Cgroups(f"flotilla-test/{node}")
    cid = uuid.uuid4().hex
    try:
        yield cg, cid
    finally:
        for c in cg.list_ids():
            cg.remove(c)
        # Drop the per-test parent levels too (leave nothing behind on the host).
        for d in cg.dirs(cid):
            node_dir = os.path.dirname(d)
            for level in (node_dir, os.path.dirname(node_dir)):
                with contextlib.suppress(OSError):
                    os.rmdir(level)


def _spawn(argv: list[str], cgdirs: list[str], **kw: object) -> subprocess.Popen[bytes]:
    """Start argv already inside the cgroups (like the shim does before exec)."""

    def join() -> None:
        for d in cgdirs:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    return subprocess.Popen(argv, preexec_fn=join, **kw)  # type: ignore[call-overload]


# Works a little, says so, then sleeps: once "ready" is read, its CPU time has been charged
# (the kernel charges at scheduling events; a bare `sleep` may not have met one yet).
WORK_THEN_SLEEP = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo ready; exec sleep 60"


def test_real_lifecycle(real: tuple[Cgroups, str]) -> None:
    cg, cid = real
    dirs = cg.create(cid, Resources(memory=64 * MiB, pids_limit=50, cpu_shares=512))
    assert all(os.path.isdir(d) for d in dirs)
    assert cid in cg.list_ids()
    proc = _spawn(["sh", "-c", WORK_THEN_SLEEP], dirs, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        assert cg.pids(cid) == [proc.pid]
        st = cg.stats(cid)
        assert st["memory_stats"]["limit"] == 64 * MiB
        assert st["memory_stats"]["usage"] > 0
        assert st["pids_stats"] == {"current": 1, "limit": 50}
        assert st["cpu_stats"]["cpu_usage"]["total_usage"] > 0
        assert st["cpu_stats"]["system_cpu_usage"] > 0
        assert st["cpu_stats"]["online_cpus"] >= 1
        if cg.version == 1:
            assert len(st["cpu_stats"]["cpu_usage"]["percpu_usage"]) >= 1
        cg.update(cid, Resources(memory=128 * MiB, nano_cpus=500_000_000))
        assert cg.stats(cid)["memory_stats"]["limit"] == 128 * MiB

        cg.freeze(cid)
        assert cg.is_frozen(cid)
        cg.thaw(cid)
        assert not cg.is_frozen(cid)
        assert not cg.oom_killed(cid)
        cg.freeze(cid)  # remove() must cope with a frozen cgroup
    finally:
        cg.remove(cid)
        proc.wait(timeout=10)
    assert proc.returncode == -9
    assert not any(os.path.exists(d) for d in dirs)
    cg.remove(cid)  # idempotent


def test_real_oom(real: tuple[Cgroups, str]) -> None:
    cg, cid = real
    dirs = cg.create(cid, Resources(memory=10 * MiB))
    hog = "b = []\nwhile True:\n    b.append(bytearray(1024 * 1024))\n"
    proc = _spawn([sys.executable, "-c", hog], dirs)
    try:
        proc.wait(timeout=30)
        assert proc.returncode == -9
        deadline = time.monotonic() + 5
        while not cg.oom_killed(cid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cg.oom_killed(cid)
    finally:
        if proc.poll() is None:
            proc.kill()
        cg.remove(cid)
    assert cid not in cg.list_ids()


def test_v1_mounts_combined(tmp_path: pytest.TempPathFactory) -> None:
    info = os.path.join(str(tmp_path), "mountinfo")
    with open(info, "w") as f:
        f.write(
            "25 24 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
            "26 25 0:23 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
            "27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
            "28 25 0:25 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
        )
    mounts = cgroups.v1_mounts(info)
    assert mounts == {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct",
        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "memory": "/sys/fs/cgroup/memory",
    }
    cg = Cgroups("flotilla/node-0", version=1, mounts=mounts)
    # cpu and cpuacct share one directory: the shim must get it once.
    assert cg.dirs("x") == [
        "/sys/fs/cgroup/cpu,cpuacct/flotilla/node-0/x",
        "/sys/fs/cgroup/memory/flotilla/node-0/x",
    ]
