"""How many messages the bridge works on at once, when it shares its process with the webhook.

In ``--role all`` one event loop serves X's webhook calls and runs the bridge.
Unchecked, a backlog makes the bridge fill every loop pass with its own work
and each webhook answer waits behind it: at 200 deliveries/s on two cores the
answers took seconds. X must never wait for the bridge (that is what the
queue is for), so the bridge's concurrency follows the loop's lag, additive
increase and multiplicative decrease as in TCP congestion control: it grows
by one while the loop is prompt and every slot is busy, and shrinks by a
third whenever the loop lags more than the target. A backlog then waits in the
broker, where it is safe, rather than in the loop, and drains at whatever pace
leaves the webhook prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol


class Admission(Protocol):
    """Bounds how many bridge steps (a processor call and its settling) run at once.

    ``resuming``: the step goes on with a message already under way (its bot has
    answered; the replies are to go out). Such steps go before new messages: a
    message taken on holds its broker delivery (and its pack) open until it is done.
    """

    def slot(self, resuming: bool = False) -> contextlib.AbstractAsyncContextManager[None]: ...


class Unlimited:
    """No bound: a worker process has no webhook to keep prompt."""

    @contextlib.asynccontextmanager
    async def slot(self, resuming: bool = False) -> AsyncIterator[None]:
        yield


class LagAdaptiveLimit:
    """A concurrency limit that shrinks when the event loop lags and grows when it does not.

    Feed it lag samples with ``observe`` (``LoopLagMonitor`` does), and tell it
    of webhook traffic with ``ingested``: the limit narrows only while deliveries
    came in within ``quiet_after`` seconds, so with X quiet (after a burst, or
    catching up after an outage) the bridge drains at full speed. The limit
    may fall to zero: on a saturated loop even one message at a time keeps every
    pass busy, and only a pause gives the webhook an idle loop. So that the
    bridge never starves, a sample that finds nothing granted for
    ``starvation_guard`` seconds lets one waiting message through regardless.
    """

    DECREASE = 2 / 3

    def __init__(
        self,
        target_lag: float,
        *,
        maximum: int = 4096,
        initial: int = 16,
        starvation_guard: float = 0.1,
        quiet_after: float = 1.0,
        on_change: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= initial <= maximum:
            raise ValueError("need 0 <= initial <= maximum")
        self._target = target_lag
        self._maximum = maximum
        self._limit = initial
        self._in_use = 0
        # Two lanes, each first come first served: steps resuming a message, then new ones.
        self._resuming: deque[asyncio.Future[None]] = deque()
        self._starting: deque[asyncio.Future[None]] = deque()
        self._starvation_guard = starvation_guard
        self._clock = clock
        self._last_grant = clock()
        self._quiet_after = quiet_after
        self._last_ingest = -float("inf")
        self._on_change = on_change
        if on_change is not None:
            on_change(initial)

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_use(self) -> int:
        return self._in_use

    def ingested(self) -> None:
        """The webhook just accepted a delivery: there is someone to yield to."""
        self._last_ingest = self._clock()

    def observe(self, lag: float) -> None:
        """Adjust the limit to one lag sample."""
        limit = self._limit
        if self._clock() - self._last_ingest > self._quiet_after:
            lag = 0.0  # nobody waits on this loop but the bridge itself
        if lag > self._target:
            limit = int(limit * self.DECREASE)
        elif lag < self._target / 2 and self._in_use >= limit:
            # Grow only under demand, or an idle spell would leave a limit so high
            # that the next burst is admitted all at once.
            limit = min(self._maximum, limit + 1)
        if limit != self._limit:
            self._limit = limit
            if self._on_change is not None:
                self._on_change(limit)
            self._wake()
        if self._waiting and self._clock() - self._last_grant >= self._starvation_guard:
            self._grant_next()

    @contextlib.asynccontextmanager
    async def slot(self, resuming: bool = False) -> AsyncIterator[None]:
        await self._acquire(self._resuming if resuming else self._starting)
        try:
            yield
        finally:
            self._in_use -= 1
            self._wake()

    @property
    def _waiting(self) -> bool:
        return bool(self._resuming or self._starting)

    async def _acquire(self, lane: deque[asyncio.Future[None]]) -> None:
        if self._in_use < self._limit and not self._waiting:
            self._take()
            return
        waiter = asyncio.get_running_loop().create_future()
        lane.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                lane.remove(waiter)
            else:  # granted just as we were cancelled: hand the slot on
                self._in_use -= 1
                self._wake()
            raise

    def _wake(self) -> None:
        while self._waiting and self._in_use < self._limit:
            self._grant_next()

    def _grant_next(self) -> None:
        lane = self._resuming or self._starting
        self._take()
        lane.popleft().set_result(None)

    def _take(self) -> None:
        self._in_use += 1
        self._last_grant = self._clock()
