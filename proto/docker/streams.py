"""Docker's stream formats: the 8-byte multiplexed frame (stdcopy) and log timestamps."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

STREAM_IDS = {"stdin": 0, "stdout": 1, "stderr": 2}


def frame(stream: str, data: bytes) -> bytes:
    """Docker's multiplexed-stream frame (stdcopy): [stream, 0, 0, 0, len32be] + data."""
    return struct.pack(">BxxxI", STREAM_IDS[stream], len(data)) + data


def format_timestamp(ns: int) -> str:
    """RFC3339Nano with all nine fraction digits, as `docker logs -t` prints (RFC3339NanoFixed)."""
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"


def format_time(ns: int) -> str:
    """Go's time.RFC3339Nano in UTC, as inspect's `Created`: trailing zeros of the fraction
    dropped."""
    fixed = format_timestamp(ns)[:-1].rstrip("0").rstrip(".")
    return fixed + "Z"
