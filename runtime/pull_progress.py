"""Docker's JSON progress messages (jsonmessage.JSONMessage) as a pull writes them.

Keys in Go's field order (status, progressDetail, progress, id); `progress` is the bar
JSONProgress.String draws for a 200-column terminal, so a CLI that is not on a terminal prints
the same text dockerd's would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def human_size(size: float) -> str:
    """go-units HumanSize: decimal units, four significant digits."""
    i = 0
    while size >= 1000.0 and i < len(_UNITS) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.4g}{_UNITS[i]}"


def progress_bar(current: int, total: int) -> str:
    if current <= 0 and total <= 0:
        return ""
    if total <= 0:
        return f"{human_size(current):>8}"
    percentage = min(int(current / total * 100) // 2, 50)
    bar = f"[{'=' * percentage}>{' ' * max(50 - percentage, 0)}] "
    numbers = f"{human_size(current):>8}/{human_size(total)}"
    if current > total:
        numbers = f"{human_size(current):>8}"
    return bar + numbers


def status(text: str, ident: str = "") -> dict[str, Any]:
    """A plain status line (`Digest: …`, `Status: …`, `Pulling from …`)."""
    msg: dict[str, Any] = {"status": text}
    if ident:
        msg["id"] = ident
    return msg


def layer(text: str, ident: str, current: int = -1, total: int = 0) -> dict[str, Any]:
    """A layer's line (`Pulling fs layer`, `Downloading` with its counts, `Pull complete`, …)."""
    msg: dict[str, Any] = {"status": text, "progressDetail": {}}
    if current >= 0:
        msg["progressDetail"] = {"current": current, "total": total}
        msg["progress"] = progress_bar(current, total)
    msg["id"] = ident
    return msg


class Throttle:
    """When a layer's Downloading/Extracting line is due, as dockerd's progress.Reader decides:
    after every 512 KiB (1 % of a smaller total), at most one per 100 ms, and always the last.
    A fast transfer then sends a few lines per layer instead of one per 512 KiB, each of which
    would travel to the manager and the client."""

    STEP = 512 * 1024
    INTERVAL = 0.1

    def __init__(self, total: int, send: Callable[[int], None]) -> None:
        self.total = total
        self.send = send
        self.step = min(self.STEP, int(0.01 * total)) if total > 0 else self.STEP
        self.reset()

    def reset(self) -> None:
        self.last_count = 0
        self.sent_count = -1
        self.last_sent = float("-inf")

    def update(self, current: int, last: bool = False) -> None:
        if last or current == self.total:
            if current != self.sent_count:  # the end, once
                self._send(current)
            return
        if current - self.last_count <= self.step:
            return
        self.last_count = current
        if time.monotonic() - self.last_sent >= self.INTERVAL:
            self._send(current)

    def _send(self, current: int) -> None:
        self.last_sent = time.monotonic()
        self.sent_count = current
        self.send(current)


def error(text: str) -> dict[str, Any]:
    return {"errorDetail": {"message": text}, "error": text}
