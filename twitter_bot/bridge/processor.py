"""One attempt at one queued envelope: ask the bot (for a DM), then send its replies.

The processor decides nothing about timing: it returns an outcome (done, try
later, give up) and the envelope with its progress, and the scheduler acts on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from twitter_bot.bridge.options import OfferedOptions
from twitter_bot.bridge.outbound import ReplySendError, single_dm_text
from twitter_bot.bridge.ports import BotPlatform, ReplySender
from twitter_bot.gateway import (
    GatewayAttachment,
    GatewayPermanentError,
    GatewayTransientError,
    InvalidRepliesError,
    Reply,
    UserMessage,
    parse_replies,
    reply_to_json,
)
from twitter_bot.metrics import Metrics
from twitter_bot.models import IncomingMessage
from twitter_bot.queue.base import DM_KIND, PUSH_KIND, Envelope
from twitter_bot.settings import BotSettings, DmApi
from twitter_bot.x import XError, XRateLimited

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Done:
    """Every reply is out (or there was nothing to send)."""


@dataclass(frozen=True)
class Failure:
    """Why an attempt failed, as it goes into logs and dead-letter headers."""

    kind: str  # "gateway" | "x" | "invalid"
    reason: str
    status: int | None = None
    code: int | None = None
    body: str = ""


@dataclass(frozen=True)
class TryLater:
    """A transient failure: retry after at least ``hint`` seconds when the server said so."""

    failure: Failure
    hint: float | None = None
    # Epoch seconds until which the bot's account is rate limited, for every conversation.
    bot_paused_until: float | None = None


@dataclass(frozen=True)
class GiveUp:
    """A permanent failure: dead-letter now."""

    failure: Failure


@dataclass(frozen=True)
class Answered:
    """The bot answered: checkpoint the answer, then send it (the next process call)."""


Outcome = Done | Answered | TryLater | GiveUp


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    envelope: Envelope  # with progress, for the next attempt


@dataclass(frozen=True)
class ProcessorOptions:
    dm_api: DmApi
    mark_read: bool
    typing_indicator: bool
    message_timeout: float


def user_message(
    message: IncomingMessage, bot: BotSettings, quick_reply: str | None
) -> UserMessage:
    """The gateway's view of a user's DM (gateway-api.md §1)."""
    return UserMessage(
        message_id=message.event_id,
        bot_id=bot.bot_id,
        conversation_id=message.conversation_id,
        sender_id=message.sender.id,
        sender_screen_name=message.sender.screen_name,
        sender_name=message.sender.name,
        recipient_id=message.bot_user_id,
        timestamp=datetime.fromtimestamp(message.created_timestamp_ms / 1000, UTC),
        text=message.text,
        quick_reply_payload=quick_reply,
        attachments=tuple(
            GatewayAttachment(type=a.type, url=a.url, media_id=a.media_id)
            for a in message.attachments
        ),
    )


async def _finish_best_effort(task: asyncio.Task[None]) -> None:
    """Await a best-effort side task; if we are being cancelled, cancel it too."""
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise


def _x_failure(error: XError) -> Failure:
    status = getattr(error, "status", None)
    code = getattr(error, "code", None)
    body = getattr(error, "body_excerpt", "")
    return Failure("x", str(error)[:300], status=status, code=code, body=body)


class Processor:
    """Turns one envelope into DMs through the bot platform and the reply sender."""

    def __init__(
        self,
        *,
        bots: dict[str, BotSettings],
        platform: BotPlatform,
        sender: ReplySender,
        offered: OfferedOptions,
        options: ProcessorOptions,
        metrics: Metrics | None = None,
    ) -> None:
        self._bots = bots
        self._platform = platform
        self._sender = sender
        self._offered = offered
        self._options = options
        self._metrics = metrics

    def bot_for(self, envelope: Envelope) -> BotSettings | None:
        return self._bots.get(str(envelope.payload.get("bot_user_id", "")))

    def dm_text_of(self, reply: Any) -> str | None:
        """The text X gets for an answer's reply (as in ``progress``) when it is one DM."""
        try:
            parsed = parse_replies({"messages": [reply]}).replies
        except InvalidRepliesError:  # the answer was checked when the bot gave it
            return None
        return single_dm_text(parsed[0], self._options.dm_api) if len(parsed) == 1 else None

    async def process(
        self,
        envelope: Envelope,
        first_attempt: bool,
        on_progress: Callable[[Envelope], Awaitable[None]] | None = None,
    ) -> Result:
        """One attempt. ``on_progress`` gets the envelope after each reply is out."""
        bot = self.bot_for(envelope)
        if bot is None or envelope.kind not in (DM_KIND, PUSH_KIND):
            reason = "no configured bot for this account" if bot is None else "unknown kind"
            return Result(GiveUp(Failure("invalid", reason)), envelope)
        if envelope.progress is None:
            if envelope.kind == PUSH_KIND:
                envelope = replace(
                    envelope, progress={"answer": envelope.payload["messages"], "sent": 0}
                )
            else:
                asked = await self._ask_bot(envelope, bot, first_attempt)
                if not isinstance(asked, Envelope):
                    return Result(asked, envelope)
                if asked.progress and asked.progress["answer"]:
                    return Result(Answered(), asked)
                envelope = asked
        return await self._send(envelope, bot, on_progress)

    async def _ask_bot(
        self, envelope: Envelope, bot: BotSettings, first_attempt: bool
    ) -> Envelope | Outcome:
        message = IncomingMessage.from_dict(envelope.payload)
        # The read receipt and typing indicator go out while the bot thinks (they are
        # awaited before any reply is sent, so "typing" never follows the answer).
        acknowledging = (
            asyncio.create_task(self._acknowledge_to_user(message, bot), name="read-and-typing")
            if first_attempt
            else None
        )
        try:
            return await self._call_gateway(envelope, message, bot)
        finally:
            if acknowledging is not None:
                await _finish_best_effort(acknowledging)

    async def _call_gateway(
        self, envelope: Envelope, message: IncomingMessage, bot: BotSettings
    ) -> Envelope | Outcome:
        quick_reply = message.quick_reply_payload
        if quick_reply is None and self._options.dm_api == "v2":
            quick_reply = self._offered.resolve(message.conversation_id, message.text)
        started = time.perf_counter()
        outcome = "ok"
        try:
            async with asyncio.timeout(self._options.message_timeout):
                replies = await self._platform.deliver(user_message(message, bot, quick_reply))
        except GatewayPermanentError as exc:
            outcome = "permanent"
            return GiveUp(Failure("gateway", str(exc)[:300], exc.status, None, exc.body_excerpt))
        except GatewayTransientError as exc:
            outcome = "transient"
            failure = Failure("gateway", str(exc)[:300], exc.status, None, exc.body_excerpt)
            return TryLater(failure, hint=exc.retry_after)
        except TimeoutError:
            outcome = "timeout"
            return TryLater(Failure("gateway", "no answer within message-timeout"))
        finally:
            if self._metrics is not None:
                elapsed = time.perf_counter() - started
                self._metrics.gateway_seconds.labels(outcome).observe(elapsed)
        answer = [reply_to_json(r) for r in replies]
        return replace(envelope, progress={"answer": answer, "sent": 0})

    async def _acknowledge_to_user(self, message: IncomingMessage, bot: BotSettings) -> None:
        """Read receipt and typing indicator: best effort, never a reason to retry."""
        try:
            if self._options.mark_read:
                await self._sender.mark_read(bot, message.sender.id, message.event_id)
            if self._options.typing_indicator:
                await self._sender.typing(bot, message.sender.id)
        except XError as exc:
            log.warning("bridge.read_or_typing_failed", bot_id=bot.bot_id, error=str(exc)[:200])

    async def _send(
        self,
        envelope: Envelope,
        bot: BotSettings,
        on_progress: Callable[[Envelope], Awaitable[None]] | None,
    ) -> Result:
        progress: dict[str, Any] = dict(envelope.progress or {})
        replies: list[Reply] = parse_replies({"messages": progress["answer"]}).replies
        recipient = str(envelope.payload.get("recipient_id") or envelope.payload["sender"]["id"])

        async def record(sent: int) -> None:
            progress["sent"] = sent
            if on_progress is not None:
                await on_progress(replace(envelope, progress=dict(progress)))

        try:
            await self._sender.send_replies(
                bot,
                recipient,
                envelope.conversation_id,
                replies,
                start_at=int(progress["sent"]),
                on_sent=record,
            )
        except ReplySendError as exc:
            progress["sent"] = exc.sent
            return Result(self._x_outcome(exc.cause), replace(envelope, progress=progress))
        return Result(Done(), replace(envelope, progress=progress))

    @staticmethod
    def _x_outcome(error: XError) -> Outcome:
        failure = _x_failure(error)
        if not error.retryable:
            return GiveUp(failure)
        if isinstance(error, XRateLimited):
            return TryLater(
                failure,
                hint=error.retry_after,
                bot_paused_until=float(error.reset_at) if error.reset_at else None,
            )
        return TryLater(failure)
