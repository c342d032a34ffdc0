"""Heartbeats written by the failover bench's containers, and what they prove.

Every container of the bench appends a line `<uptime> <copy>` to `<dir>/<logical name>` every
100 ms: <uptime> is the first field of /proc/uptime (CLOCK_BOOTTIME in seconds, 10 ms steps, the
same clock inside and outside the containers: no time namespace) — busybox's `date` has no
sub-second format; <copy> is a UUID the container's shell draws when it starts, so each start of
each copy is told apart (a rescheduled copy may well keep the old one's hostname).

From these lines alone (not from the manager's view): the time from a fault to a replacement's
first heartbeat, duplicates (two copies of one logical container beating at the same time),
losses (no copy beating at the end) and stops (a copy that went silent, i.e. was fenced).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

BEAT_S = 0.1
# The containers' side (busybox sh): the heartbeat file is /hb/$SWARMID.
SCRIPT = (
    "read me < /proc/sys/kernel/random/uuid; "
    'while true; do read up idle < /proc/uptime; echo "$up $me" >> /hb/$SWARMID; '
    "usleep 100000; done"
)
GAP_S = 0.5  # a copy silent this long stopped (5 missed beats); it may start again later


def boottime() -> float:
    """Now, on the clock the heartbeats carry."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass(frozen=True)
class Beat:
    t: float
    copy: str


@dataclass(frozen=True)
class Segment:
    """One copy beating without a gap longer than GAP_S."""

    copy: str
    start: float
    end: float


def parse_lines(text: str) -> list[Beat]:
    """The beats in complete lines of a heartbeat file; malformed lines are skipped."""
    beats: list[Beat] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            t = float(parts[0])
        except ValueError:
            continue
        beats.append(Beat(t, parts[1]))
    return beats


@dataclass
class HeartbeatDir:
    """Follows every heartbeat file in a directory, reading only what was appended since."""

    path: str
    beats: dict[str, list[Beat]] = field(default_factory=dict)
    _offsets: dict[str, int] = field(default_factory=dict)

    def poll(self) -> None:
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return
        for name in names:
            full = os.path.join(self.path, name)
            try:
                with open(full, "rb") as f:
                    f.seek(self._offsets.get(name, 0))
                    data = f.read()
            except OSError:
                continue
            # Only complete lines: a writer may be in the middle of one.
            end = data.rfind(b"\n") + 1
            self._offsets[name] = self._offsets.get(name, 0) + end
            new = parse_lines(data[:end].decode(errors="replace"))
            self.beats.setdefault(name, []).extend(new)

    def of(self, logical: str) -> list[Beat]:
        return self.beats.get(logical, [])


def segments(beats: list[Beat], gap_s: float = GAP_S) -> list[Segment]:
    """Each copy's beats cut where it was silent longer than `gap_s`."""
    by_copy: dict[str, list[float]] = {}
    for b in beats:
        by_copy.setdefault(b.copy, []).append(b.t)
    out: list[Segment] = []
    for copy, times in by_copy.items():
        times.sort()
        start = prev = times[0]
        for t in times[1:]:
            if t - prev > gap_s:
                out.append(Segment(copy, start, prev))
                start = t
            prev = t
        out.append(Segment(copy, start, prev))
    return sorted(out, key=lambda s: (s.start, s.copy))


def _beat_together(a: Segment, b: Segment) -> bool:
    lo, hi = max(a.start, b.start), min(a.end, b.end)
    if hi > lo:
        return True
    # A one-beat segment counts when it falls strictly inside the other's span.
    return hi == lo and (a.start < lo < a.end or b.start < lo < b.end)


def overlaps(beats: list[Beat], gap_s: float = GAP_S) -> list[tuple[Segment, Segment]]:
    """Pairs of segments of two different copies that beat during a common time."""
    segs = segments(beats, gap_s)
    return [
        (a, b)
        for i, a in enumerate(segs)
        for b in segs[i + 1 :]
        if a.copy != b.copy and _beat_together(a, b)
    ]


def is_duplicated(beats: list[Beat]) -> bool:
    return bool(overlaps(beats))


def copies_before(beats: list[Beat], t: float) -> set[str]:
    return {b.copy for b in beats if b.t <= t}


def time_to_replacement(beats: list[Beat], fault_t: float) -> float | None:
    """Fault → first beat of a copy that had not beaten before the fault (None: none yet)."""
    old = copies_before(beats, fault_t)
    new = [b.t for b in beats if b.t > fault_t and b.copy not in old]
    return min(new) - fault_t if new else None


def beating_at(beats: list[Beat], t: float, window_s: float = GAP_S) -> bool:
    """Whether some copy beat within `window_s` before `t`."""
    return any(t - window_s <= b.t <= t for b in beats)


def disturbed(beats: list[Beat], t_from: float, t_to: float, gap_s: float = 1.0) -> bool:
    """Whether, between `t_from` and `t_to`, a copy went silent longer than `gap_s` (fenced or
    stopped) or a new copy started (rescheduled): what a blip or an etcd outage must not do."""
    old = copies_before(beats, t_from)
    if any(t_from < b.t <= t_to and b.copy not in old for b in beats):
        return True
    times = sorted(b.t for b in beats if b.copy in old and b.t >= t_from - gap_s)
    times = [t for t in times if t <= t_to]
    if not times:
        return True
    edges = [t_from, *times, t_to]
    return any(b - a > gap_s for a, b in zip(edges, edges[1:], strict=False))


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]
