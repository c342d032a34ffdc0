"""Docker's way of writing times: RFC 3339 with nanoseconds (`docker ps`'s durations are in
proto/ps_status.py, shared with the manager)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

ZERO_TIME = "0001-01-01T00:00:00Z"


def now_ns() -> int:
    return time.time_ns()


def rfc3339nano(ns: int) -> str:
    """Format like Go's time.RFC3339Nano in UTC: trailing zeros of the fraction are dropped."""
    if ns <= 0:
        return ZERO_TIME
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac == 0:
        return base + "Z"
    return f"{base}.{frac:09d}".rstrip("0") + "Z"


def parse_rfc3339(text: str) -> int:
    """Nanoseconds since the epoch from an RFC 3339 UTC string ("Z" suffix); 0 for Go's zero."""
    if not text or text.startswith("0001-01-01"):
        return 0
    text = text.rstrip("Z")
    base, _, frac = text.partition(".")
    secs = int(datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
    return secs * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])
