"""The agent's background tasks end one way: cancelled, then awaited until they are gone."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel(*tasks: asyncio.Task[None] | None) -> None:
    """Cancel every task given (None is skipped) and wait until each has finished."""
    live = [t for t in tasks if t is not None]
    for task in live:
        task.cancel()
    for task in live:
        with contextlib.suppress(asyncio.CancelledError):
            await task
