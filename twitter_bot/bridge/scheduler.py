"""Ordering and timing: one conversation at a time, many conversations at once.

Each conversation has a FIFO of deliveries drained by one task, so its
messages are bridged strictly in order while other conversations proceed in
parallel. A transient failure is retried in place while the total wait stays
under the hold bound; a longer wait parks the message in the delay queue (and
a barrier makes the conversation's later messages queue up behind it), so no
delivery is held unacked for long and a rate-limited bot stalls nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from twitter_bot.bridge.ports import Delivery, Requeuer
from twitter_bot.bridge.processor import Answered, Done, Failure, GiveUp, Processor, TryLater
from twitter_bot.bridge.retry import RetryPolicy
from twitter_bot.metrics import Metrics
from twitter_bot.queue.base import (
    HEADER_ATTEMPT,
    HEADER_BOT_ID,
    HEADER_CHECKPOINT,
    HEADER_CONVERSATION_ID,
    HEADER_DEAD_AT,
    HEADER_DEAD_REASON,
    HEADER_ERROR_BODY,
    HEADER_ERROR_CODE,
    HEADER_ERROR_KIND,
    HEADER_ERROR_STATUS,
    HEADER_NOT_BEFORE,
    HEADER_REDRIVEN,
    Envelope,
    PublishError,
)

log = structlog.get_logger(__name__)

RECENTLY_COMPLETED = 10_000
# How long a checkpoint from a crashed process waits for its newer siblings.
CHECKPOINT_SIBLING_WAIT = 0.1


@dataclass
class _Barrier:
    """A conversation whose head message is parked: later messages wait behind it, in order."""

    head: str
    not_before: float
    followers: deque[str] = field(default_factory=deque)

    def advance(self) -> bool:
        """Drop the head; True while messages remain behind it."""
        if not self.followers:
            return False
        self.head = self.followers.popleft()
        return True


class ConversationScheduler:
    """Runs the processor over deliveries, per conversation in order, and settles each one."""

    def __init__(
        self,
        processor: Processor,
        requeuer: Requeuer,
        policy: RetryPolicy,
        *,
        max_hold: float,
        metrics: Metrics,
        checkpoints: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._processor = processor
        self._requeuer = requeuer
        self._policy = policy
        self._max_hold = max_hold
        self._checkpoints = checkpoints
        self._metrics = metrics
        self._clock = clock
        self._queues: dict[str, deque[Delivery]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._barriers: dict[str, _Barrier] = {}
        self._bot_paused_until: dict[str, float] = {}
        self._completed: OrderedDict[str, None] = OrderedDict()
        # Per message id: checkpoint copies this process published and has not seen back.
        self._checkpointed: dict[str, int] = {}
        self._closing = asyncio.Event()
        self._late: list[Delivery] = []

    @property
    def in_flight(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def submit(self, delivery: Delivery) -> None:
        """Queue a delivery behind its conversation's earlier ones (never blocks)."""
        if self._closing.is_set():
            # Settled by close(): our own checkpoints acked, anything else requeued.
            self._late.append(delivery)
            return
        conversation = delivery.envelope.conversation_id
        self._queues.setdefault(conversation, deque()).append(delivery)
        if conversation not in self._workers:
            task = asyncio.create_task(self._drain(conversation), name=f"conv-{conversation}")
            self._workers[conversation] = task
            task.add_done_callback(self._worker_done)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("bridge.worker_crashed", error=repr(task.exception()))

    async def close(self, timeout: float, checkpoint_wait: float = 2.0) -> None:
        """Stop taking work, let in-flight messages finish within ``timeout``, requeue the rest.

        Call it while still subscribed: after the in-flight work, it waits up to
        ``checkpoint_wait`` for this process's checkpoint copies to come back and
        acks them, so a restart does not resend answers that are complete.
        Messages waiting for a retry stop waiting at once and are requeued.
        """
        self._closing.set()
        workers = list(self._workers.values())
        if workers:
            _, pending = await asyncio.wait(workers, timeout=timeout)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        leftovers = [d for queue in self._queues.values() for d in queue]
        self._queues.clear()
        await self._settle_late(leftovers)
        deadline = self._clock() + checkpoint_wait
        while self._checkpointed and self._clock() < deadline:
            await asyncio.sleep(0.02)
            late, self._late = self._late, []
            await self._settle_late(late)
        await self._settle_late(self._late)
        self._late = []

    async def _settle_late(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            envelope = delivery.envelope
            done = envelope.message_id in self._completed
            if envelope.headers.get(HEADER_CHECKPOINT) and done:
                self._seen_own_checkpoint(envelope.message_id)
                await self._settle(delivery)
            else:
                await self._requeue(delivery)

    async def _drain(self, conversation: str) -> None:
        queue = self._queues[conversation]
        try:
            while queue and not self._closing.is_set():
                delivery = queue[0]
                with structlog.contextvars.bound_contextvars(
                    message_id=delivery.envelope.message_id, conversation_id=conversation
                ):
                    settled = await self._handle(delivery)
                if not settled:
                    break  # closing: left in the queue for close() to requeue
                queue.popleft()
        finally:
            self._workers.pop(conversation, None)
            if not queue:
                self._queues.pop(conversation, None)

    async def _handle(self, delivery: Delivery) -> bool:
        """Process and settle one delivery; False when closing interrupted it unsettled."""
        envelope = delivery.envelope
        if envelope.headers.get(HEADER_CHECKPOINT):
            if await self._checkpoint_is_stale(delivery):
                await self._settle(delivery)
                return True
        elif envelope.message_id in self._completed and not envelope.headers.get(HEADER_REDRIVEN):
            # A redelivery after a lost ack, or X's duplicate accepted by another
            # webhook instance (both copies land on this shard): done already.
            log.info("bridge.duplicate_dropped", redelivered=delivery.redelivered)
            self._metrics.bridge_duplicates_dropped.inc()
            await self._settle(delivery)
            return True
        barrier = self._barriers.get(envelope.conversation_id)
        if barrier is not None and barrier.head != envelope.message_id:
            if envelope.message_id not in barrier.followers:
                barrier.followers.append(envelope.message_id)
            await self._park(
                delivery, envelope, barrier.not_before, reason="behind a parked message"
            )
            return True
        return await self._attempt(delivery, envelope)

    async def _checkpoint_is_stale(self, delivery: Delivery) -> bool:
        """Whether a checkpoint copy carries nothing to do.

        Our own copies are stale: the live message is done, in progress or parked
        with fresher progress. A copy from a crashed process is stale when a newer
        copy of the same message (more replies sent) is queued right behind it:
        checkpoints have priority, so after a crash they arrive together first.
        """
        message_id = delivery.envelope.message_id
        if self._seen_own_checkpoint(message_id) or message_id in self._completed:
            return True
        await asyncio.sleep(CHECKPOINT_SIBLING_WAIT)  # let the crash's other copies arrive
        sent = _sent(delivery.envelope)
        queue = self._queues.get(delivery.envelope.conversation_id, deque())
        return any(
            other is not delivery
            and other.envelope.message_id == message_id
            and other.envelope.headers.get(HEADER_CHECKPOINT)
            and _sent(other.envelope) >= sent
            for other in queue
        )

    def _seen_own_checkpoint(self, message_id: str) -> bool:
        count = self._checkpointed.get(message_id, 0)
        if count <= 0:
            return False
        if count == 1:
            del self._checkpointed[message_id]
        else:
            self._checkpointed[message_id] = count - 1
        return True

    async def _wait_unless_closing(self, seconds: float) -> bool:
        """Sleep; True if the scheduler started closing meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)
        return self._closing.is_set()

    async def _attempt(self, delivery: Delivery, envelope: Envelope) -> bool:
        attempt = int(envelope.headers.get(HEADER_ATTEMPT, 0))
        not_before = int(envelope.headers.get(HEADER_NOT_BEFORE, 0)) / 1000
        held_since = self._clock()
        while True:
            not_before = max(not_before, self._bot_pause(envelope))
            wait = not_before - self._clock()
            if wait > 0:
                if self._clock() - held_since + wait > self._max_hold:
                    parked = _with_attempt(envelope, attempt, not_before)
                    await self._park(delivery, parked, not_before, reason="retry later")
                    return True
                if await self._wait_unless_closing(wait):
                    return False
            result = await self._processor.process(
                envelope, first_attempt=attempt == 0, on_progress=self._checkpoint
            )
            envelope, outcome = result.envelope, result.outcome
            if isinstance(outcome, Answered):
                await self._checkpoint(envelope)
                continue
            if isinstance(outcome, Done):
                await self._finish(delivery, envelope, "delivered")
                return True
            if isinstance(outcome, GiveUp):
                await self._dead_letter(delivery, envelope, outcome.failure, attempt + 1)
                return True
            attempt += 1
            not_before = self._schedule_retry(envelope, outcome, attempt)
            if attempt >= self._policy.max_attempts:
                exhausted = replace(outcome.failure, kind="attempts-exhausted")
                await self._dead_letter(delivery, envelope, exhausted, attempt)
                return True

    def _schedule_retry(self, envelope: Envelope, outcome: TryLater, attempt: int) -> float:
        now = self._clock()
        if outcome.bot_paused_until is not None:
            bot = self._processor.bot_for(envelope)
            if bot is not None:
                self._bot_paused_until[bot.user_id] = outcome.bot_paused_until
                self._metrics.rate_limit_pauses.labels(bot.bot_id).inc()
                log.warning(
                    "bridge.bot_rate_limited", bot_id=bot.bot_id, until=outcome.bot_paused_until
                )
        delay = self._policy.delay(attempt, outcome.hint)
        self._metrics.retries.labels(outcome.failure.kind).inc()
        log.warning(
            "bridge.retry_scheduled",
            attempt=attempt,
            delay=round(delay, 3),
            error_kind=outcome.failure.kind,
            status=outcome.failure.status,
            code=outcome.failure.code,
            reason=outcome.failure.reason,
        )
        return now + delay

    def _bot_pause(self, envelope: Envelope) -> float:
        bot_user_id = str(envelope.payload.get("bot_user_id", ""))
        until = self._bot_paused_until.get(bot_user_id, 0.0)
        if until and until <= self._clock():
            del self._bot_paused_until[bot_user_id]
            return 0.0
        return until

    async def _park(
        self, delivery: Delivery, envelope: Envelope, not_before: float, reason: str
    ) -> None:
        conversation = envelope.conversation_id
        if conversation not in self._barriers:
            self._barriers[conversation] = _Barrier(envelope.message_id, not_before)
        parked = replace(
            envelope, headers={**envelope.headers, HEADER_NOT_BEFORE: _epoch_ms(not_before)}
        )
        delay = max(not_before - self._clock(), 0.0)
        try:
            await self._requeuer.park(parked, delay)
        except PublishError as exc:
            log.warning("bridge.park_failed", error=str(exc))
            await self._requeue(delivery)
            return
        self._metrics.parked.inc()
        log.info("bridge.message_parked", delay=round(delay, 3), reason=reason)
        await self._settle(delivery)

    async def _checkpoint(self, envelope: Envelope) -> None:
        """Persist the bot's answer and how many replies are out, before sending more.

        After a crash the newest checkpoint resumes the answer: nothing is lost,
        and what was already sent is not sent again. Off with quorum queues, which
        cannot deliver a checkpoint ahead of the messages queued behind it.
        """
        if not self._checkpoints:
            return
        try:
            await self._requeuer.checkpoint(replace(envelope, headers={}))
        except PublishError as exc:
            # Still safe: the original stays unacked, and a crash redelivers it.
            log.warning("bridge.checkpoint_failed", error=str(exc))
            return
        self._checkpointed[envelope.message_id] = self._checkpointed.get(envelope.message_id, 0) + 1
        while len(self._checkpointed) > RECENTLY_COMPLETED:
            del self._checkpointed[next(iter(self._checkpointed))]

    async def _finish(self, delivery: Delivery, envelope: Envelope, outcome: str) -> None:
        self._completed[envelope.message_id] = None
        while len(self._completed) > RECENTLY_COMPLETED:
            self._completed.popitem(last=False)
        self._lift_barrier(envelope)
        await self._settle(delivery)
        sent = (envelope.progress or {}).get("sent", 0)
        self._metrics.messages_bridged.labels(outcome).inc()
        if outcome == "delivered":
            self._metrics.end_to_end_seconds.observe(max(self._clock() - envelope.accepted_at, 0))
        bot = self._processor.bot_for(envelope)
        log.info(
            "bridge.message_done",
            outcome=outcome,
            replies_sent=sent,
            kind=envelope.kind,
            bot_id=bot.bot_id if bot is not None else None,
        )

    async def _dead_letter(
        self, delivery: Delivery, envelope: Envelope, failure: Failure, attempts: int
    ) -> None:
        bot = self._processor.bot_for(envelope)
        headers: dict[str, Any] = {
            **envelope.headers,
            HEADER_DEAD_REASON: failure.reason[:300],
            HEADER_ERROR_KIND: failure.kind,
            HEADER_ATTEMPT: attempts,
            HEADER_DEAD_AT: datetime.now(UTC).isoformat(),
            HEADER_CONVERSATION_ID: envelope.conversation_id,
            HEADER_BOT_ID: bot.bot_id if bot is not None else "",
        }
        headers.pop(HEADER_NOT_BEFORE, None)
        if failure.status is not None:
            headers[HEADER_ERROR_STATUS] = failure.status
        if failure.code is not None:
            headers[HEADER_ERROR_CODE] = failure.code
        if failure.body:
            headers[HEADER_ERROR_BODY] = failure.body[:500]
        try:
            await self._requeuer.dead_letter(replace(envelope, headers=headers))
        except PublishError as exc:
            log.warning("bridge.dead_letter_failed", error=str(exc))
            await self._requeue(delivery)
            return
        self._metrics.dead_letters.labels(failure.kind).inc()
        log.error(
            "bridge.message_dead_lettered",
            error_kind=failure.kind,
            status=failure.status,
            code=failure.code,
            reason=failure.reason,
            attempts=attempts,
            bot_id=headers[HEADER_BOT_ID],
        )
        await self._finish(delivery, envelope, "dead_lettered")

    def _lift_barrier(self, envelope: Envelope) -> None:
        barrier = self._barriers.get(envelope.conversation_id)
        if barrier is not None and barrier.head == envelope.message_id and not barrier.advance():
            del self._barriers[envelope.conversation_id]

    async def _settle(self, delivery: Delivery) -> None:
        try:
            await delivery.ack()
        except Exception as exc:  # the channel died: the broker redelivers; _completed dedupes
            log.warning("bridge.ack_failed", error=repr(exc))

    async def _requeue(self, delivery: Delivery) -> None:
        try:
            await delivery.requeue()
        except Exception as exc:
            log.warning("bridge.requeue_failed", error=repr(exc))


def _with_attempt(envelope: Envelope, attempt: int, not_before: float) -> Envelope:
    headers = {
        **envelope.headers,
        HEADER_ATTEMPT: attempt,
        HEADER_NOT_BEFORE: _epoch_ms(not_before),
    }
    return replace(envelope, headers=headers)


def _epoch_ms(seconds: float) -> int:
    return round(seconds * 1000)


def _sent(envelope: Envelope) -> int:
    return int((envelope.progress or {}).get("sent", 0))
