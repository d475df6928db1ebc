"""Ordering and timing: one conversation at a time, many conversations at once.

Each conversation has a FIFO of deliveries drained by one task, so its
messages are bridged strictly in order while other conversations proceed in
parallel. A transient failure is retried in place while the total wait stays
under the hold bound; a longer wait parks the conversation: its waiting
messages are queued again, in order, at the head of their shard (with the
retry time and attempt count), and every later message of the conversation
is parked behind them. Parked messages are always delivered before messages
never parked, so the order survives a crash or a failover without any state
kept in memory; the consumer holds them until their time (re-parking them
every ``park_refresh`` so the broker's delivery timeout never fires).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog

from twitter_bot.bridge.admission import Admission, Unlimited
from twitter_bot.bridge.echoes import RecentEchoes
from twitter_bot.bridge.finished import FinishedAnswers
from twitter_bot.bridge.ports import Delivery, Requeuer
from twitter_bot.bridge.processor import (
    Answered,
    Done,
    Failure,
    GiveUp,
    Processor,
    Result,
    TryLater,
)
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
    HEADER_PARKED,
    HEADER_REDRIVEN,
    Envelope,
    PublishError,
)

log = structlog.get_logger(__name__)

RECENTLY_COMPLETED = 10_000
# How long a copy redelivered after a crash waits for its newer checkpoint siblings.
CHECKPOINT_SIBLING_WAIT = 0.1
# How long a crashed process's checkpoint of an unfinished answer waits at most for a
# newer copy or its message to arrive (prefetch can hold them back).
CHECKPOINT_ORIGINAL_WAIT = 2.0
# How long a crashed process's checkpoint of a finished answer waits for its message.
# In chaos runs every message that came at all came within 0.1 s (57 of 58; one in
# 0.4 s); the checkpoints that waited longer were orphans, whose message had been
# acked, and each wait holds up its conversation.
CHECKPOINT_MESSAGE_WAIT = 0.3
# How long a message delivered again after a crash waits, at most, for the finished
# answers to be read after a connect before it is asked from scratch (bridge/finished.py):
# normally one round trip to the broker.
FINISHED_CATCH_UP_WAIT = 2.0
# How long a message done here and found again in an open pack tries to checkpoint
# again (see _found_done), and how often: after a broker cut the publisher reconnects
# on its own backoff (at most 5 s between tries), maybe after the consumer.
FOUND_DONE_CHECKPOINT_WAIT = 6.0
FOUND_DONE_CHECKPOINT_RETRY = 0.5
# How long a conversation about to be parked waits for its parked copies still on
# their way back (normally milliseconds), so the new copies go in behind them.
IN_TRANSIT_WAIT = 2.0
# How long a worker whose checkpoint failed waits to learn whether the link is down.
LINK_LOSS_GRACE = 1.0
# Parked messages held longer than this are parked again: RabbitMQ closes a channel
# holding a delivery unacknowledged past its consumer_timeout (30 min by default).
PARK_REFRESH = 600.0


class _DeliveryLost(Exception):
    """The delivery's broker channel is gone: another consumer may be working on it."""


class _CheckpointFailed(Exception):
    """A checkpoint was not confirmed: most often the broker link is going down."""


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
        checkpoint_hold_limit: int = 0,
        park_refresh: float = PARK_REFRESH,
        admission: Admission | None = None,
        echoes: RecentEchoes | None = None,
        echo_wait: float = 0.0,
        finished: FinishedAnswers | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``echoes``: X's echoes of the bots' DMs as they are read; a reply in doubt
        after a crash waits up to ``echo_wait`` for its echo (bridge/echoes.py).
        ``finished``: answers finished from a crashed process's checkpoint before their
        messages came back, recorded for every worker (bridge/finished.py)."""
        self._processor = processor
        self._finished = finished
        self._echoes = echoes
        self._echo_wait = echo_wait if echoes is not None else 0.0
        self._admission = admission or Unlimited()
        self._requeuer = requeuer
        self._policy = policy
        self._max_hold = max_hold
        self._checkpoints = checkpoints
        # How many crashed processes' finished checkpoints may wait for their messages
        # at once: keep it below the prefetch (see _until_message_arrives).
        self._checkpoint_hold_limit = checkpoint_hold_limit
        self._holding_for_message = 0
        self._waiting_for_echo = 0
        self._park_refresh = park_refresh
        self._metrics = metrics
        self._clock = clock
        self._queues: dict[str, deque[Delivery]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        # Per conversation: ids of parked copies published and not yet delivered back.
        self._in_transit: dict[str, list[str]] = {}
        # Set (and replaced) when the broker link drops, to wake waiting workers.
        self._link_lost = asyncio.Event()
        self._bot_paused_until: dict[str, float] = {}
        self._completed: OrderedDict[str, None] = OrderedDict()
        # Per message id: checkpoint copies this process published and has not seen back.
        self._checkpointed: dict[str, int] = {}
        # Per message id: how far this process got with an answer it has not finished
        # (the answer, replies X accepted). A message whose broker link dropped mid-answer
        # comes back with checkpoints that may lag a reply (its checkpoint failed with the
        # link): this record, not theirs, says what is out.
        self._progress_here: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # Per message id: the final progress of a message finished while its broker
        # message stayed open (a part of a pack) or from a checkpoint copy; see _found_done.
        self._final_progress: OrderedDict[str, dict[str, Any]] = OrderedDict()
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
        envelope = delivery.envelope
        conversation = envelope.conversation_id
        if envelope.headers.get(HEADER_PARKED):
            in_transit = self._in_transit.get(conversation)
            if in_transit and envelope.message_id in in_transit:
                in_transit.remove(envelope.message_id)
                if not in_transit:
                    del self._in_transit[conversation]
        if self._done_here(envelope):
            self._enqueue(_settle_lane(conversation), delivery)
        else:
            self._enqueue(conversation, delivery)

    def _done_here(self, envelope: Envelope) -> bool:
        """Whether this process finished the message (a redrive is work again)."""
        return envelope.message_id in self._completed and not envelope.headers.get(HEADER_REDRIVEN)

    def _enqueue(self, lane: str, delivery: Delivery) -> None:
        self._queues.setdefault(lane, deque()).append(delivery)
        if lane not in self._workers:
            task = asyncio.create_task(self._drain(lane), name=f"conv-{lane}")
            self._workers[lane] = task
            task.add_done_callback(self._worker_done)

    def _settle_lane_for(self, message_id: str, queue: deque[Delivery]) -> None:
        """Move the other deliveries of a finished message out of its conversation's queue:
        its checkpoint copies, and the message itself delivered again (in a pack, after a
        crash, behind the copy that finished it).

        They carry nothing to do, but queued behind the conversation's next messages they
        wait as long as those do, and a message parked takes along everything behind it.
        Parked, they outlive what said the answer was out, and whoever finds them later
        sends it again (chaos, all faults together: whole answers resent 60-90 s later,
        from a parked copy or asked again for a parked message). In a lane of their own
        they are settled now (the message as a duplicate, see _found_done).
        """
        done = [
            d for d in queue if d.envelope.message_id == message_id and self._done_here(d.envelope)
        ]
        self._remove(queue, done)
        for delivery in done:
            self._enqueue(_settle_lane(delivery.envelope.conversation_id), delivery)

    def link_lost(self) -> None:
        """The broker link dropped: every delivery held is void and will come again.

        Workers stop before their next side effect (a gateway call, a DM), so the
        instance the broker hands the messages to is the only one sending them.
        """
        self._in_transit.clear()  # the copies come back first, as parked deliveries
        self._link_lost.set()
        self._link_lost = asyncio.Event()

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
        leftovers = [d for queue in self._queues.values() for d in queue if d.valid]
        self._queues.clear()
        # Our checkpoints, as they come back, before anything is requeued (see
        # _settle_late); some may already be here, behind their finished messages.
        deadline = self._clock() + checkpoint_wait
        while True:
            late, self._late = self._late, []
            held = leftovers + late
            leftovers = [d for d in held if not d.envelope.headers.get(HEADER_CHECKPOINT)]
            await self._settle_late([d for d in held if d.envelope.headers.get(HEADER_CHECKPOINT)])
            if not self._checkpointed or self._clock() >= deadline:
                break
            await asyncio.sleep(0.02)
        await self._settle_late(leftovers)
        late, self._late = self._late, []
        await self._settle_late(late)

    async def _settle_late(self, deliveries: list[Delivery]) -> None:
        """Ack the checkpoints of finished messages, then requeue everything else.

        In that order: a checkpoint of a DM whose pack is still open goes with the
        pack, which keeps the newest one of each DM; once the pack is requeued, a
        copy acked later would go back too, maybe an older one ahead of the newest.
        """
        requeue = []
        for delivery in deliveries:
            envelope = delivery.envelope
            done = envelope.message_id in self._completed
            if envelope.headers.get(HEADER_CHECKPOINT) and done:
                self._seen_own_checkpoint(envelope.message_id)
                await self._settle(delivery)
            else:
                requeue.append(delivery)
        for delivery in requeue:
            await self._requeue(delivery)

    async def _drain(self, conversation: str) -> None:
        queue = self._queues[conversation]
        try:
            while queue and not self._closing.is_set():
                delivery = queue[0]
                with structlog.contextvars.bound_contextvars(
                    message_id=delivery.envelope.message_id, conversation_id=conversation
                ):
                    if not delivery.valid:
                        self._abandon()
                        queue.popleft()
                        continue
                    settled = await self._handle(delivery, queue)
                if not settled:
                    break  # closing: left in the queue for close() to requeue
                queue.popleft()
                if delivery.envelope.message_id in self._completed:
                    self._settle_lane_for(delivery.envelope.message_id, queue)
        finally:
            self._workers.pop(conversation, None)
            if not queue:
                self._queues.pop(conversation, None)

    async def _handle(self, delivery: Delivery, queue: deque[Delivery]) -> bool:
        """Process and settle the head delivery; False when closing interrupted it unsettled."""
        envelope = delivery.envelope
        if envelope.headers.get(HEADER_CHECKPOINT):
            settled = await self._before_checkpoint(delivery, queue)
            if settled is not None:
                return settled
        elif envelope.message_id in self._completed and not envelope.headers.get(HEADER_REDRIVEN):
            # A redelivery after a lost ack, or X's duplicate accepted by another
            # webhook instance (both copies land on this shard): done already.
            log.info("bridge.duplicate_dropped", redelivered=delivery.redelivered)
            self._metrics.bridge_duplicates_dropped.inc()
            await self._found_done(delivery, envelope)
            await self._settle(delivery)
            return True
        elif not envelope.headers.get(HEADER_PARKED) and self._parked(envelope, queue):
            # Older messages of this conversation are parked: go in behind them.
            await self._park(
                delivery, queue, envelope, reason="behind a parked message", followers=False
            )
            return True
        else:
            envelope = await self._resume_point(delivery, queue)
        if self._echo_wait > 0 and envelope.message_id not in self._progress_here:
            # Resumed from a checkpoint another process (or this one before a restart)
            # wrote: the reply after it may be out already.
            envelope = await self._confirmed_by_echo(envelope)
        return await self._attempt(delivery, envelope, queue)

    async def _before_checkpoint(self, delivery: Delivery, queue: deque[Delivery]) -> bool | None:
        """What comes before a checkpoint copy is worked on: None to go on with it, else
        whether it was settled (True) or left for close() to requeue (False)."""
        envelope = delivery.envelope
        if await self._checkpoint_is_stale(delivery, queue):
            await self._settle(delivery)
            return True
        if _finished(envelope):
            await self._until_message_arrives(delivery, queue)
        if self._closing.is_set():
            return False  # it waited until closing: close() requeues it
        return None

    async def _resume_point(self, delivery: Delivery, queue: deque[Delivery]) -> Envelope:
        """The envelope a message (not a checkpoint copy) is worked on from: after a crash,
        with the most progress any copy, this process or any worker's record has."""
        envelope = delivery.envelope
        if delivery.redelivered:
            envelope = await self._freshest(delivery, queue)
        # Not only when redelivered: a parked copy is a new broker message.
        return await self._recorded_finished(envelope)

    def _parked(self, envelope: Envelope, queue: deque[Delivery]) -> bool:
        """Whether the conversation has parked messages: on their way back, or queued here."""
        return envelope.conversation_id in self._in_transit or any(
            d.envelope.headers.get(HEADER_PARKED) for d in queue
        )

    async def _freshest(self, delivery: Delivery, queue: deque[Delivery]) -> Envelope:
        """The envelope to resume a message redelivered after a crash from.

        A checkpoint copy of the same message, queued behind it, may carry more
        progress (the answer, replies already sent): resume from that one, so
        nothing is asked or sent twice. Such copies are settled at once: their
        progress now travels with this delivery (and with its parked copy, if it
        has to wait), so they must not run on their own later.
        """
        envelope = delivery.envelope
        absorbed = await self._checkpoint_siblings(delivery, queue)
        for other in absorbed:
            if _rank(other.envelope.progress) > _rank(envelope.progress):
                envelope = replace(envelope, progress=other.envelope.progress)
            self._seen_own_checkpoint(envelope.message_id)  # if it was ours, it is back
            await self._settle(other)
        self._remove(queue, absorbed)
        here = self._progress_here.get(envelope.message_id)
        if here is not None and _rank(here) > _rank(envelope.progress):
            log.info("bridge.resumed_from_memory", replies_sent=here.get("sent", 0))
            envelope = replace(envelope, progress=here)
        return envelope

    async def _record_finished(self, envelope: Envelope) -> None:
        """Record an answer finished from a checkpoint copy about to be acked without its
        message (bridge/finished.py): out when the copy came, or sent out from it. Best
        effort: without the record, a crash before the message turns up here has its
        answer asked for and sent again."""
        if self._finished is None:
            return
        try:
            await self._finished.record(replace(envelope, headers={}))
        except PublishError as exc:
            log.warning("bridge.finished_answer_not_recorded", error=str(exc))
            return
        self._metrics.finished_answers.labels("recorded").inc()
        log.info("bridge.finished_answer_recorded", replies_sent=_sent(envelope))

    async def _recorded_finished(self, envelope: Envelope) -> Envelope:
        """A message delivered again, with the final progress another worker recorded for
        it, if any (bridge/finished.py): its answer is out, nothing is asked or sent."""
        if self._finished is None or _finished(envelope):
            return envelope
        progress = await self._finished.progress_of(envelope.message_id, FINISHED_CATCH_UP_WAIT)
        if progress is None or _rank(progress) <= _rank(envelope.progress):
            return envelope
        self._metrics.finished_answers.labels("found").inc()
        log.info("bridge.resumed_from_finished_answer", replies_sent=progress.get("sent", 0))
        return replace(envelope, progress=progress)

    async def _confirmed_by_echo(self, envelope: Envelope) -> Envelope:
        """The envelope with the replies X's echoes show are out counted as sent.

        Only from a checkpoint's anchor (bridge/echoes.py), and only for replies that go
        out as one text DM; the first waits up to ``echo_wait`` for its echo, the ones
        after it (out only if a checkpoint failed while the link held) do not wait.
        """
        if self._echoes is None:
            return envelope
        progress = envelope.progress or {}
        anchor = progress.get("anchor")
        answer = _answer(envelope)
        sent = _sent(envelope)
        if not isinstance(anchor, dict) or anchor.get("sent") != sent or sent >= len(answer):
            return envelope
        after = int(anchor.get("at_ms", 0))
        confirmed = 0
        while sent < len(answer):
            text = self._processor.dm_text_of(answer[sent])
            if text is None:
                break
            # Like the checkpoints waiting for their messages, a wait holds a prefetch
            # slot: past the limit, only what is already here counts.
            may_wait = confirmed == 0 and self._waiting_for_echo < self._checkpoint_hold_limit
            wait = self._echo_wait if may_wait else 0.0
            self._waiting_for_echo += 1
            try:
                echo = await self._echoes.wait_for(envelope.conversation_id, text, after, wait)
            finally:
                self._waiting_for_echo -= 1
            if echo is None:
                if confirmed == 0:
                    log.info("bridge.no_echo_for_reply_in_doubt", replies_sent=sent, waited=wait)
                break
            sent += 1
            confirmed += 1
            after = echo.created_timestamp_ms
        if not confirmed:
            return envelope
        self._metrics.echo_confirmed_resends.inc(confirmed)
        log.info("bridge.replies_confirmed_by_echo", replies=confirmed, replies_sent=sent)
        resumed = {key: value for key, value in progress.items() if key != "anchor"}
        return replace(envelope, progress={**resumed, "sent": sent})

    def _remember_progress(self, envelope: Envelope) -> None:
        if envelope.progress is None:
            return
        self._progress_here[envelope.message_id] = dict(envelope.progress)
        self._progress_here.move_to_end(envelope.message_id)
        while len(self._progress_here) > RECENTLY_COMPLETED:
            self._progress_here.popitem(last=False)

    async def _checkpoint_is_stale(self, delivery: Delivery, queue: deque[Delivery]) -> bool:
        """Whether a checkpoint copy carries nothing to do.

        Our own copies are stale: the live message is done, in progress or parked
        with fresher progress. A copy from a crashed process is stale when a newer
        copy of the same message (more replies sent) is queued right behind it:
        checkpoints have priority, so after a crash they arrive together first.
        """
        message_id = delivery.envelope.message_id
        if self._seen_own_checkpoint(message_id) or message_id in self._completed:
            return True
        sent = _sent(delivery.envelope)
        siblings = await self._checkpoint_siblings(delivery, queue)
        if sent >= len(_answer(delivery.envelope)):
            return any(_sent(other.envelope) >= sent for other in siblings)
        # Resuming an unfinished answer sends its next reply: first make sure no newer
        # copy says it is out. Newer copies are queued behind this one, and the message
        # itself behind every checkpoint, but prefetch may not have delivered them yet.
        deadline = asyncio.get_running_loop().time() + CHECKPOINT_ORIGINAL_WAIT
        while not any(_sent(other.envelope) >= sent for other in siblings):
            gave_up = asyncio.get_running_loop().time() >= deadline or self._closing.is_set()
            if _message_arrived(message_id, queue) or gave_up or not delivery.valid:
                return False
            await asyncio.sleep(0.02)
            siblings = self._siblings_now(delivery, queue)
        return True

    @classmethod
    async def _checkpoint_siblings(
        cls, delivery: Delivery, queue: deque[Delivery]
    ) -> list[Delivery]:
        """The other checkpoint copies of this delivery's message queued with it.

        Waits a moment first: after a crash, a message's copies arrive together.
        """
        await asyncio.sleep(CHECKPOINT_SIBLING_WAIT)
        return cls._siblings_now(delivery, queue)

    @staticmethod
    def _siblings_now(delivery: Delivery, queue: deque[Delivery]) -> list[Delivery]:
        message_id = delivery.envelope.message_id
        return [
            other
            for other in queue
            if other is not delivery
            and other.envelope.message_id == message_id
            and other.envelope.headers.get(HEADER_CHECKPOINT)
        ]

    def _seen_own_checkpoint(self, message_id: str) -> bool:
        count = self._checkpointed.get(message_id, 0)
        if count <= 0:
            return False
        if count == 1:
            del self._checkpointed[message_id]
        else:
            self._checkpointed[message_id] = count - 1
        return True

    async def _wait(self, seconds: float) -> None:
        """Sleep, waking early when the scheduler closes or the broker link drops."""
        link_lost = self._link_lost
        waiters = [
            asyncio.ensure_future(self._closing.wait()),
            asyncio.ensure_future(link_lost.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _attempt(
        self, delivery: Delivery, envelope: Envelope, queue: deque[Delivery]
    ) -> bool:
        attempt = int(envelope.headers.get(HEADER_ATTEMPT, 0))
        not_before = int(envelope.headers.get(HEADER_NOT_BEFORE, 0)) / 1000
        held_since = self._clock()
        # A parked message is held here until its time (it is parked again if that is
        # far off); a message never parked is only held up to the hold bound.
        hold = self._park_refresh if envelope.headers.get(HEADER_PARKED) else self._max_hold

        while True:
            if not delivery.valid:
                self._abandon()
                return True
            not_before = max(not_before, self._bot_pause(envelope))
            wait = not_before - self._clock()
            if wait > 0:
                if self._clock() - held_since + wait > hold:
                    parked = _with_attempt(envelope, attempt, not_before)
                    await self._park(delivery, queue, parked, reason="retry later")
                    return True
                await self._wait(wait)
                if self._closing.is_set():
                    return False
                continue
            # Once the bot has answered, the replies go ahead of messages not yet begun.
            async with self._admission.slot(resuming=envelope.progress is not None):
                if not delivery.valid:  # the link dropped while it waited for the slot
                    self._abandon()
                    return True
                step = await self._step(delivery, envelope, attempt)
            if step is None:
                return True
            envelope, attempt, not_before = step

    async def _process(self, delivery: Delivery, envelope: Envelope, attempt: int) -> Result | None:
        """Run the processor with checkpoints; None when the delivery's link was lost."""

        async def progress(updated: Envelope) -> None:
            self._remember_progress(updated)
            if not delivery.valid:
                raise _DeliveryLost
            if len(_answer(updated)) > 1:
                # Also after the last reply: that copy marks the answer complete for
                # whoever finds this message's earlier checkpoints after a crash.
                await self._checkpoint_unless_link_lost(delivery, updated)

        try:
            result = await self._processor.process(
                envelope, first_attempt=attempt == 0, on_progress=progress
            )
            # Worth its round trips only when a crash could split the answer: with one
            # reply, a restart asks the gateway again (same Idempotency-Key) instead,
            # and the ack right after the reply closes the window as fast as a
            # confirmed checkpoint would.
            answer = _answer(result.envelope)
            if isinstance(result.outcome, Answered):
                self._remember_progress(result.envelope)
            if isinstance(result.outcome, Answered) and delivery.valid and len(answer) > 1:
                await self._checkpoint_unless_link_lost(delivery, result.envelope)
        except _DeliveryLost:
            self._abandon()
            return None
        return result

    async def _checkpoint_unless_link_lost(self, delivery: Delivery, envelope: Envelope) -> None:
        """Checkpoint; if that fails because the broker link is dying, stop sending.

        A failed checkpoint most often means the link is going down, a moment
        before the consumer notices: sending on would outrun what is durable, and
        the instance taking over would send it all again. If the link turns out to
        be fine, carry on without this checkpoint (the original stays unacked).
        """
        try:
            await self._checkpoint(envelope)
        except _CheckpointFailed:
            await self._wait(LINK_LOSS_GRACE)
            if not delivery.valid:
                raise _DeliveryLost from None

    async def _step(
        self, delivery: Delivery, envelope: Envelope, attempt: int
    ) -> tuple[Envelope, int, float] | None:
        """One processor call and what follows from it: None once the delivery is settled,
        else the envelope, attempt count and retry time to go on with."""
        result = await self._process(delivery, envelope, attempt)
        if result is None:
            return None
        envelope, outcome = result.envelope, result.outcome
        if isinstance(outcome, Answered):
            return envelope, attempt, 0.0
        if isinstance(outcome, Done):
            if not delivery.ack_settles:
                await self._checkpoint_done(envelope)
            await self._finish(delivery, envelope, "delivered")
            return None
        if isinstance(outcome, GiveUp):
            await self._dead_letter(delivery, envelope, outcome.failure, attempt + 1)
            return None
        attempt += 1
        not_before = self._schedule_retry(envelope, outcome, attempt)
        if attempt >= self._policy.max_attempts:
            exhausted = replace(outcome.failure, kind="attempts-exhausted")
            await self._dead_letter(delivery, envelope, exhausted, attempt)
            return None
        return envelope, attempt, not_before

    def _abandon(self) -> None:
        log.warning("bridge.delivery_abandoned", reason="broker link lost; it is delivered again")
        self._metrics.deliveries_abandoned.inc()

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
        self,
        delivery: Delivery,
        queue: deque[Delivery],
        envelope: Envelope,
        reason: str,
        *,
        followers: bool = True,
    ) -> None:
        """Park the head delivery (as ``envelope``) and, with ``followers``, every
        delivery queued behind it.

        They are queued again, in order, at the head of the shard, and only then
        acked. Alone, the head goes in behind the conversation's parked copies
        still on their way back; with its followers, those copies must arrive
        first, or they would overtake the messages parked now.
        """
        conversation = envelope.conversation_id
        waited = 0.0
        while followers and conversation in self._in_transit and waited < IN_TRANSIT_WAIT:
            await asyncio.sleep(0.01)
            waited += 0.01
        behind = [d for d in list(queue)[1:] if d.valid] if followers else []
        parked = [envelope] + [d.envelope for d in behind]  # park() marks them x-parked
        # Expected back before they are published: a copy can arrive before the confirm.
        in_transit = self._in_transit.setdefault(conversation, [])
        in_transit.extend(e.message_id for e in parked)
        try:
            await self._requeuer.park(parked)
        except PublishError as exc:
            # Not all moved: hand them all back to the broker, which keeps their order
            # (a copy that did go through is deduplicated when it comes back).
            log.warning("bridge.park_failed", error=str(exc))
            for parked_envelope in parked:
                with contextlib.suppress(ValueError):
                    in_transit.remove(parked_envelope.message_id)
            if not in_transit:
                self._in_transit.pop(conversation, None)
            for other in [delivery, *behind]:
                await self._requeue(other)
            self._remove(queue, behind)
            return
        self._metrics.parked.inc(len(parked))
        for parked_envelope in parked:  # their copies carry their progress from here on
            self._progress_here.pop(parked_envelope.message_id, None)
        not_before = int(envelope.headers.get(HEADER_NOT_BEFORE, 0)) / 1000
        log.info(
            "bridge.message_parked",
            delay=round(max(not_before - self._clock(), 0.0), 3),
            reason=reason,
            behind_it=len(behind),
        )
        for other in [delivery, *behind]:
            await self._settle(other)
        self._remove(queue, behind)

    @staticmethod
    def _remove(queue: deque[Delivery], deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            with contextlib.suppress(ValueError):
                queue.remove(delivery)

    async def _checkpoint(self, envelope: Envelope) -> None:
        """Persist the bot's answer and how many replies are out, before sending more.

        After a crash the newest checkpoint resumes the answer: nothing is lost,
        and what was already sent is not sent again. Off with quorum queues, which
        cannot deliver a checkpoint ahead of the messages queued behind it.
        """
        if not self._checkpoints:
            return
        progress = envelope.progress
        if self._echo_wait > 0:
            # The anchor of an echo check after a crash (bridge/echoes.py): X's clock is
            # the wall clock, whatever clock this scheduler was given.
            anchor = {"sent": _sent(envelope), "at_ms": _epoch_ms(time.time())}
            progress = {**(progress or {}), "anchor": anchor}
        try:
            await self._requeuer.checkpoint(replace(envelope, headers={}, progress=progress))
        except PublishError as exc:
            log.warning("bridge.checkpoint_failed", error=str(exc))
            raise _CheckpointFailed from exc
        self._checkpointed[envelope.message_id] = self._checkpointed.get(envelope.message_id, 0) + 1
        while len(self._checkpointed) > RECENTLY_COMPLETED:
            del self._checkpointed[next(iter(self._checkpointed))]

    async def _until_message_arrives(self, delivery: Delivery, queue: deque[Delivery]) -> None:
        """Hold a crashed process's checkpoint of a finished answer until its message arrives.

        The message comes after every checkpoint (priority), maybe in a pack. Acked
        before that pack is here, the checkpoint could not be settled with it, and a
        crash before the pack is acked would leave the DM with no checkpoint: it would
        be asked and answered again. Once the message is here the checkpoint finishes
        and is acked with the pack. Bounded in time (the message may have been acked
        already) and in number: a held checkpoint takes a prefetch slot, and held ones
        filling the prefetch would keep out the very messages they wait for.
        """
        if self._holding_for_message >= self._checkpoint_hold_limit:
            return
        message_id = delivery.envelope.message_id
        deadline = asyncio.get_running_loop().time() + CHECKPOINT_MESSAGE_WAIT
        self._holding_for_message += 1
        try:
            while not self._closing.is_set() and delivery.valid:
                if asyncio.get_running_loop().time() >= deadline:
                    return
                if _message_arrived(message_id, queue):
                    return
                await asyncio.sleep(0.02)
        finally:
            self._holding_for_message -= 1

    async def _checkpoint_done(self, envelope: Envelope) -> None:
        """Checkpoint a finished answer whose ack does not settle its broker message yet.

        A part of a pack stays unacked until the pack's other parts are done, and a
        crash meanwhile delivers it again. The checkpoint (ahead of the pack, like
        every checkpoint) tells whoever gets them then that nothing is left to send.
        Best effort: without it, that crash resends this answer, as it would anyway.
        """
        if envelope.progress is None or len(_answer(envelope)) > 1:
            return  # an answer of several replies was checkpointed after its last one
        with contextlib.suppress(_CheckpointFailed):
            await self._checkpoint(envelope)

    async def _found_done(self, delivery: Delivery, envelope: Envelope) -> None:
        """Checkpoint again a message done here, found again in an open pack.

        Its checkpoints may all be acked by now: after a crash, a copy that finished it
        comes first (priority) and, when the pack is slow to come, is acked alone; after
        the broker link dropped, the checkpoints come back to the process that knows the
        message is done, ahead of the pack, and are acked as stale. The pack stays open
        until its other parts are done: a crash meanwhile would deliver it with nothing
        left to say this part is done, and its answer would be asked for and sent again.
        So every time, not only the first: the new checkpoint goes with the pack
        (RabbitDelivery.ack), like _checkpoint_done's. After a broker cut the consumer
        may be back before the publisher: the checkpoint is tried again for a while.
        Then best effort: the part is acked all the same. Requeued instead, its pack
        would go back once settled and could reach a worker that asks again.
        """
        progress = self._final_progress.get(envelope.message_id)
        if progress is None or delivery.ack_settles:
            return
        log.info("bridge.checkpointed_again_with_its_pack", replies_sent=progress.get("sent", 0))
        copy = replace(envelope, headers={}, progress=progress)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FOUND_DONE_CHECKPOINT_WAIT
        while True:
            try:
                await self._checkpoint(copy)
                return
            except _CheckpointFailed:
                if not delivery.valid or self._closing.is_set() or loop.time() >= deadline:
                    return
                await self._wait(FOUND_DONE_CHECKPOINT_RETRY)

    async def _finish(self, delivery: Delivery, envelope: Envelope, outcome: str) -> None:
        self._completed[envelope.message_id] = None
        self._progress_here.pop(envelope.message_id, None)
        while len(self._completed) > RECENTLY_COMPLETED:
            self._completed.popitem(last=False)
        from_copy = bool(delivery.envelope.headers.get(HEADER_CHECKPOINT))
        if envelope.progress is not None and (from_copy or not delivery.ack_settles):
            self._final_progress[envelope.message_id] = envelope.progress
            while len(self._final_progress) > RECENTLY_COMPLETED:
                self._final_progress.popitem(last=False)
        if from_copy and envelope.progress is not None:
            queue = self._queues.get(envelope.conversation_id, deque())
            if outcome == "delivered" and not _message_arrived(envelope.message_id, queue):
                # Acked alone, this copy was the only record: another one first.
                await self._record_finished(envelope)
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


def _settle_lane(conversation: str) -> str:
    """The queue key of a conversation's deliveries that only need settling."""
    return f"{conversation}\x00settle"


def _with_attempt(envelope: Envelope, attempt: int, not_before: float) -> Envelope:
    headers = {
        **envelope.headers,
        HEADER_ATTEMPT: attempt,
        HEADER_NOT_BEFORE: _epoch_ms(not_before),
    }
    return replace(envelope, headers=headers)


def _epoch_ms(seconds: float) -> int:
    return round(seconds * 1000)


def _message_arrived(message_id: str, queue: deque[Delivery]) -> bool:
    """Whether the message itself (not a checkpoint copy of it) is queued here."""
    return any(
        other.envelope.message_id == message_id
        and not other.envelope.headers.get(HEADER_CHECKPOINT)
        for other in queue
    )


def _sent(envelope: Envelope) -> int:
    return int((envelope.progress or {}).get("sent", 0))


def _finished(envelope: Envelope) -> bool:
    """Whether the envelope's progress says the whole answer is out."""
    return envelope.progress is not None and _sent(envelope) >= len(_answer(envelope))


def _answer(envelope: Envelope) -> list[Any]:
    return list((envelope.progress or {}).get("answer") or [])


def _rank(progress: dict[str, Any] | None) -> tuple[bool, int]:
    """How far a message got by its progress: answered at all, then replies sent."""
    return progress is not None, int((progress or {}).get("sent", 0))
