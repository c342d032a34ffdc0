"""How often a layer's Downloading/Extracting line goes out: dockerd's progress.Reader rule
(every 512 KiB or 1 % of a smaller total, at most one per 100 ms, always the end), on a clock
the test moves."""

from __future__ import annotations

import pytest

from runtime import pull_progress
from runtime.pull_progress import Throttle

MIB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(pull_progress.time, "monotonic", c)
    return c


def test_a_fast_transfer_sends_one_line_per_100ms_and_the_end(clock: Clock) -> None:
    sent: list[int] = []
    throttle = Throttle(100 * MIB, sent.append)
    for n in range(1, 1601):  # 64 KiB reads, 5 ms apart: 8 s in all
        throttle.update(n * 64 * 1024)
        clock.now += 0.005
    # The first line once 512 KiB are in, then at most one per 100 ms (20 reads; the first
    # 512 KiB step after them: 27 reads), then the end.
    assert sent[0] == 9 * 64 * 1024
    assert all(b - a == 27 * 64 * 1024 for a, b in zip(sent, sent[1:-1], strict=False))
    assert sent[-1] == 100 * MIB
    throttle.update(100 * MIB, last=True)  # EOF read after the end: not told twice
    assert sent.count(100 * MIB) == 1


def test_a_slow_transfer_sends_every_512k(clock: Clock) -> None:
    sent: list[int] = []
    throttle = Throttle(100 * MIB, sent.append)
    for n in range(1, 65):  # 64 KiB reads, 1 s apart
        throttle.update(n * 64 * 1024)
        clock.now += 1
    assert sent == [n * 64 * 1024 for n in range(9, 65, 9)]


def test_small_totals_step_by_one_percent_and_restart(clock: Clock) -> None:
    sent: list[int] = []
    throttle = Throttle(10_000, sent.append)
    throttle.update(50)
    throttle.update(101)
    assert sent == [101]
    clock.now += 1
    throttle.reset()  # a retried download starts over
    throttle.update(101)
    throttle.update(10_000)
    assert sent == [101, 101, 10_000]
