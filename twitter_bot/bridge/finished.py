"""Answers finished from a crashed process's checkpoint before their messages came back.

After a crash a DM's checkpoint copy comes first (priority) and its message later. When
the answer was all out, the copy only waits a moment for the message (it holds a prefetch
slot meanwhile) and is then acked alone: the message may be held back for long, in a
pack still open elsewhere or behind a prefetch full of parked messages during a gateway
outage, or gone (acked) already. Until it turns up, the process that acked the copy is
the only one knowing the answer is out; killed too, the message would reach a process
with no record of it, and the bot would be asked again and its answer sent twice.

So before such a copy is acked alone, the message with its final progress is appended
to a stream every worker reads in full at each connect (queue/rabbit.py,
FinishedReader). A message delivered again with less progress is looked up here before
it is asked from scratch; the lookup waits for the reader to catch up after a connect.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from twitter_bot.queue.base import Envelope

log = structlog.get_logger(__name__)

# As many as the other per-message memories of the bridge, and as long as the stream
# keeps them (queue/rabbit.py, FINISHED_STREAM_MAX_AGE).
FINISHED_KEPT = 10_000
MAX_AGE = 600.0


class FinishedAnswers:
    """The finished answers recorded by any worker, by message id, and the recording."""

    def __init__(
        self,
        append: Callable[[Envelope], Awaitable[None]],
        kept: int = FINISHED_KEPT,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``append`` durably adds an envelope to the stream (PublishError if it cannot)."""
        self._append = append
        self._kept = kept
        self._max_age = max_age
        self._clock = clock
        # Oldest first: message id -> (final progress, when it was read).
        self._progress: OrderedDict[str, tuple[dict[str, Any], float]] = OrderedDict()
        self._caught_up = asyncio.Event()

    async def record(self, envelope: Envelope) -> None:
        """Record a message's final progress for every worker; PublishError if not durable."""
        await self._append(envelope)
        self.add(envelope)

    def add(self, envelope: Envelope) -> None:
        """One record read from the stream (repeats, after a reconnect, replace themselves)."""
        if envelope.progress is None:
            return
        now = self._clock()
        self._progress[envelope.message_id] = (dict(envelope.progress), now)
        self._progress.move_to_end(envelope.message_id)
        while self._progress:
            oldest, (_, read_at) = next(iter(self._progress.items()))
            if len(self._progress) <= self._kept and now - read_at <= self._max_age:
                break
            del self._progress[oldest]

    def caught_up(self, done: bool) -> None:
        """The reader's state: False from each (re)subscribe until it has read the stream."""
        if done:
            self._caught_up.set()
        else:
            self._caught_up.clear()

    async def progress_of(self, message_id: str, wait: float) -> dict[str, Any] | None:
        """The recorded final progress of a message, if any; waits up to ``wait`` seconds
        for the reader to catch up first."""
        if not self._caught_up.is_set():
            try:
                async with asyncio.timeout(wait):
                    await self._caught_up.wait()
            except TimeoutError:
                log.warning("bridge.finished_answers_not_caught_up", waited=wait)
        found = self._progress.get(message_id)
        return dict(found[0]) if found is not None else None
