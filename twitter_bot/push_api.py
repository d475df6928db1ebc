"""The push endpoint (gateway-api.md, section 4): the bot platform speaks first.

``POST /v1/bots/{bot-id}/conversations/{conversation-id}/messages`` with a
bearer token queues the bot's messages as ONE envelope on the conversation's
shard, so they are sent in order, after whatever is already queued for that
conversation. It answers 202 only once the broker confirmed the envelope; any
doubt is a 503. The route exists only when a token is configured.
"""

from __future__ import annotations

import hmac
import json
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import structlog
from aiohttp import web

from twitter_bot.gateway.replies import InvalidRepliesError, parse_replies_strict
from twitter_bot.metrics import Metrics
from twitter_bot.models import conversation_id as canonical_conversation_id
from twitter_bot.queue.base import PUSH_KIND, Envelope, Publisher, PublishError
from twitter_bot.settings import BotSettings

log = structlog.get_logger(__name__)

PUSH_PATH = "/v1/bots/{bot_id}/conversations/{conversation_id}/messages"
"""The aiohttp route of the push endpoint; ``bot_id`` and ``conversation_id`` are path values."""

_MAX_USER_ID = 2**64 - 1
# Two positive decimal user ids (ASCII digits, no sign, no leading zero) joined by '-'.
_CONVERSATION_ID = re.compile(r"([1-9][0-9]{0,19})-([1-9][0-9]{0,19})")
_LOGGED_PATH_VALUE_MAX = 100


class PushRefused(Exception):
    """A push the endpoint does not accept: the HTTP status, a message, and the field at fault."""

    def __init__(self, status: int, outcome: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        # The metrics label: unauthorized, unknown_bot or invalid.
        self.outcome = outcome
        self.message = message
        self.field = field

    def response(self) -> web.Response:
        """The JSON error answer; a 401 carries ``WWW-Authenticate: Bearer``."""
        body: dict[str, str] = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return web.json_response(body, status=self.status, headers=headers)


def _invalid(message: str, field: str) -> PushRefused:
    return PushRefused(400, "invalid", message, field)


@dataclass(frozen=True)
class PushTarget:
    """Where a push goes: the bot account, the user it writes to, and their conversation."""

    bot: BotSettings
    recipient_id: str
    # Canonical: the numerically smaller user id first, as the webhook's DM envelopes.
    conversation_id: str


def bearer_token_matches(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>``, compared in constant time."""
    if not authorization or not token:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # backslashreplace: a header byte that is not UTF-8 can't raise, and can't match by accident.
    offered = credentials.strip().encode("utf-8", "backslashreplace")
    return hmac.compare_digest(offered, token.encode("utf-8"))


def _user_ids(conversation_id: str) -> tuple[str, str]:
    match = _CONVERSATION_ID.fullmatch(conversation_id)
    if match is None or any(int(user_id) > _MAX_USER_ID for user_id in match.groups()):
        raise _invalid(
            "conversation-id must be two positive decimal user ids joined by '-'",
            "conversation_id",
        )
    first, second = match.groups()
    if first == second:
        raise _invalid("conversation-id joins a user id with itself", "conversation_id")
    return first, second


def resolve_target(bots: Sequence[BotSettings], bot_id: str, conversation_id: str) -> PushTarget:
    """The configured bot account and the user a push to ``bot_id`` in ``conversation_id`` is for.

    Several accounts may share a bot-id; the conversation id decides which one.
    Raises PushRefused: 404 for a bot-id that is not configured, 400 for a
    conversation id that is malformed or not one of that bot's conversations.
    """
    candidates = [bot for bot in bots if bot.bot_id == bot_id]
    if not candidates:
        raise PushRefused(404, "unknown_bot", "no bot with this bot-id is configured", "bot_id")
    user_ids = _user_ids(conversation_id)
    matching = [bot for bot in candidates if bot.user_id in user_ids]
    if not matching:
        raise _invalid("conversation-id does not contain the bot's user id", "conversation_id")
    if len(matching) > 1:
        raise _invalid(
            "conversation-id joins two accounts of this bot: the recipient is ambiguous",
            "conversation_id",
        )
    bot = matching[0]
    recipient_id = user_ids[1] if user_ids[0] == bot.user_id else user_ids[0]
    return PushTarget(bot, recipient_id, canonical_conversation_id(bot.user_id, recipient_id))


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def parse_push_body(body: bytes) -> list[dict[str, Any]]:
    """The message objects of a push body, as received, once all of them pass section 2's limits.

    An empty list is refused: a push that sends nothing is a caller's mistake
    better reported than silently accepted. Raises PushRefused (400) naming the field.
    """
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8 and bad JSON; RecursionError absurd nesting.
        raise _invalid("body is not valid JSON", "body") from None
    try:
        replies = parse_replies_strict(data)
    except InvalidRepliesError as exc:
        raise _invalid(str(exc), exc.field) from None
    if not replies:
        raise _invalid("messages must hold at least one message", "messages")
    # parse_replies_strict has checked this shape: an object whose messages are objects.
    messages: list[dict[str, Any]] = data["messages"]
    return messages


def push_envelope(
    target: PushTarget, messages: list[dict[str, Any]], accepted_at: float
) -> Envelope:
    """The queue envelope of one push: all its messages together, on the conversation's shard."""
    return Envelope(
        kind=PUSH_KIND,
        message_id=f"push-{uuid.uuid4().hex}",
        conversation_id=target.conversation_id,
        payload={
            "bot_user_id": target.bot.user_id,
            "recipient_id": target.recipient_id,
            "messages": messages,
        },
        accepted_at=accepted_at,
    )


def _clip(value: str) -> str:
    return value[:_LOGGED_PATH_VALUE_MAX]


class PushHandler:
    """Serves the push endpoint: authenticate, resolve the bot, validate, publish, answer 202."""

    def __init__(
        self,
        *,
        token: str,
        bots: Sequence[BotSettings],
        publisher: Publisher,
        metrics: Metrics,
    ) -> None:
        if not token:
            raise ValueError("the push API needs a non-empty token")
        self._token = token
        self._bots = tuple(bots)
        self._publisher = publisher
        self._metrics = metrics

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(PUSH_PATH, self.push)

    async def push(self, request: web.Request) -> web.Response:
        bot_id = request.match_info["bot_id"]
        conversation_id = request.match_info["conversation_id"]
        try:
            self._authorize(request)
            target = resolve_target(self._bots, bot_id, conversation_id)
            # Over client_max_size, aiohttp answers 413 here.
            messages = parse_push_body(await request.read())
        except PushRefused as refused:
            self._metrics.push_requests.labels(refused.outcome).inc()
            log.warning(
                "push.refused",
                status=refused.status,
                reason=refused.message,
                field=refused.field,
                bot_id=_clip(bot_id),
                conversation_id=_clip(conversation_id),
            )
            return refused.response()
        return await self._enqueue(target, messages)

    def _authorize(self, request: web.Request) -> None:
        if not bearer_token_matches(request.headers.get("Authorization"), self._token):
            raise PushRefused(401, "unauthorized", "missing or invalid bearer token")

    async def _enqueue(self, target: PushTarget, messages: list[dict[str, Any]]) -> web.Response:
        envelope = push_envelope(target, messages, time.time())
        fields = {
            "bot_id": target.bot.bot_id,
            "conversation_id": target.conversation_id,
            "message_id": envelope.message_id,
            "count": len(messages),
        }
        try:
            await self._publisher.publish([envelope])
        except PublishError as exc:
            self._metrics.push_requests.labels("unavailable").inc()
            log.warning("push.publish_failed", error=str(exc), **fields)
            return web.json_response({"error": "queue unavailable, retry later"}, status=503)
        self._metrics.push_requests.labels("accepted").inc()
        self._metrics.push_messages_queued.inc(len(messages))
        log.info("push.accepted", **fields)
        return web.json_response({"accepted": len(messages)}, status=202)
