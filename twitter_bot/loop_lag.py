"""How late the event loop runs a due timer: the wait a newly arrived request sees."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from twitter_bot.management.tasks import stop_task

# Often enough to react within a few milliseconds; each tick costs some 20 us.
SAMPLE_INTERVAL = 0.005


class LoopLagMonitor:
    """Sleeps ``interval`` at a time and reports how much later than asked it woke.

    The lag is the time the loop spent running other callbacks past the timer's
    due time: a request whose socket became readable then waits about as long.
    """

    def __init__(
        self,
        on_sample: Callable[[float], None] | None = None,
        interval: float = SAMPLE_INTERVAL,
    ) -> None:
        self._interval = interval
        self._listeners: list[Callable[[float], None]] = [on_sample] if on_sample else []

    def subscribe(self, listener: Callable[[float], None]) -> None:
        """Call ``listener(lag_seconds)`` after every sample."""
        self._listeners.append(listener)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + self._interval
            await asyncio.sleep(self._interval)
            lag = max(0.0, loop.time() - asked)
            for listener in self._listeners:
                listener(lag)

    async def resource(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: the sampling task lives as long as the application."""
        task = asyncio.create_task(self.run(), name="loop-lag-monitor")
        try:
            yield
        finally:
            await stop_task(task)
