"""Stopping a background task the same way everywhere: cancel, await, log what it raised."""

from __future__ import annotations

import asyncio

import structlog

log = structlog.get_logger(__name__)


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it; an exception it ended with is logged, not raised."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():  # we were cancelled ourselves while waiting
            raise
    except Exception:
        log.exception("task.failed", task=task.get_name())
