"""The failover bench's reading of heartbeat files (bench/failover_heartbeats.py), on synthetic
files: replacement times, overlaps (duplicates), losses and disturbances."""

from __future__ import annotations

import os

from bench import failover_heartbeats as hb


def beats(copy: str, start: float, end: float, step: float = 0.1) -> list[hb.Beat]:
    n = round((end - start) / step)
    return [hb.Beat(round(start + i * step, 2), copy) for i in range(n + 1)]


def write(path: str, items: list[hb.Beat]) -> None:
    with open(path, "a") as f:
        f.writelines(f"{b.t:.2f} {b.copy}\n" for b in items)


def test_clean_failover_is_timed_and_not_a_duplicate() -> None:
    # old copy beats until the fault + 3.2 s (its shim fences it), the new one from + 4.5 s.
    old, new = beats("a", 100.0, 103.2), beats("b", 104.5, 110.0)
    fault = 100.05
    assert hb.time_to_replacement(old + new, fault) == 104.5 - fault
    assert not hb.is_duplicated(old + new)
    assert hb.beating_at(old + new, 110.0)


def test_overlapping_copies_are_a_duplicate() -> None:
    old, new = beats("a", 100.0, 105.0), beats("b", 104.5, 110.0)
    [(a, b)] = hb.overlaps(old + new)
    assert (a.copy, b.copy) == ("a", "b") and a.end == 105.0 and b.start == 104.5


def test_a_stale_copy_coming_back_is_a_duplicate() -> None:
    # The old copy stopped, the new one runs, then the old one beats again (not removed).
    items = beats("a", 100.0, 101.0) + beats("b", 103.0, 110.0) + beats("a", 106.0, 106.3)
    assert hb.is_duplicated(items)
    assert [s.copy for s in hb.segments(items)] == ["a", "b", "a"]


def test_a_single_beat_inside_the_other_copy_counts() -> None:
    items = beats("b", 103.0, 110.0) + [hb.Beat(105.0, "a")]
    assert hb.is_duplicated(items)
    assert not hb.is_duplicated(beats("b", 103.0, 110.0) + [hb.Beat(110.0, "a")])


def test_no_replacement_and_silence_mean_lost() -> None:
    items = beats("a", 100.0, 101.0)
    assert hb.time_to_replacement(items, 100.5) is None
    assert not hb.beating_at(items, 120.0)


def test_disturbed_sees_a_gap_or_a_new_copy_but_not_steady_beating() -> None:
    steady = beats("a", 100.0, 120.0)
    assert not hb.disturbed(steady, 105.0, 115.0)
    gap = beats("a", 100.0, 106.0) + beats("a", 108.0, 120.0)
    assert hb.disturbed(gap, 105.0, 115.0)
    fenced = beats("a", 100.0, 106.0)
    assert hb.disturbed(fenced, 105.0, 115.0)
    moved = beats("a", 100.0, 106.0) + beats("b", 106.1, 120.0)
    assert hb.disturbed(moved, 105.0, 115.0)


def test_heartbeat_dir_reads_only_complete_lines_incrementally(tmp_path: str) -> None:
    d = str(tmp_path)
    path = os.path.join(d, "web-1")
    write(path, beats("a", 1.0, 1.2))
    with open(path, "a") as f:
        f.write("1.30 a\ngarbage\n1.4")  # a line being written
    watch = hb.HeartbeatDir(d)
    watch.poll()
    assert [b.t for b in watch.of("web-1")] == [1.0, 1.1, 1.2, 1.3]
    with open(path, "a") as f:
        f.write("0 a\n")  # completes "1.40 a"
    watch.poll()
    assert [b.t for b in watch.of("web-1")][-1] == 1.4
    assert len(watch.of("web-1")) == 5
    assert watch.of("missing") == []


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert hb.percentile(values, 50) == 50.0
    assert hb.percentile(values, 99) == 99.0
    assert hb.percentile([3.0], 99) == 3.0
    assert hb.percentile([], 50) is None


def test_the_container_script_beats_with_the_same_clock(tmp_path: str) -> None:
    """The busybox loop the bench runs writes lines this module reads, on CLOCK_BOOTTIME."""
    import shutil
    import subprocess

    import pytest

    from bench.failover_heartbeats import SCRIPT

    if not shutil.which("busybox"):
        pytest.skip("no busybox")
    script = SCRIPT.replace("/hb/", f"{tmp_path}/")
    before = hb.boottime()
    proc = subprocess.Popen(["busybox", "sh", "-c", script], env={"SWARMID": "x"})
    try:
        watch = hb.HeartbeatDir(str(tmp_path))
        deadline = before + 10
        while len(watch.of("x")) < 5 and hb.boottime() < deadline:
            watch.poll()
    finally:
        proc.kill()
        proc.wait()
    got = watch.of("x")
    assert len(got) >= 5 and len({b.copy for b in got}) == 1
    assert before - 0.02 <= got[0].t <= hb.boottime()
    assert 0.05 < got[-1].t - got[-2].t < 0.5
