"""The webhook endpoint X calls: CRC challenges and signed DM deliveries.

A delivery is answered 200 only after every DM in it is confirmed by the
broker; any doubt is a 503 so that X redelivers. Bad input is a 4xx, never a 500.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog
from aiohttp import web

from twitter_bot import jsoncodec
from twitter_bot.metrics import Metrics
from twitter_bot.models import IncomingMessage, SentEcho
from twitter_bot.queue.base import ECHO_KIND, Envelope, Publisher, PublishError
from twitter_bot.webhook.dedupe import RecentEventIds
from twitter_bot.webhook.payloads import InvalidDelivery, parse_delivery
from twitter_bot.webhook.signature import SIGNATURE_HEADER, crc_response_token, signature_is_valid

log = structlog.get_logger(__name__)

DM_ENVELOPE_KIND = "dm"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def envelope_for(message: IncomingMessage, accepted_at: float) -> Envelope:
    """The queue envelope of a user's DM."""
    return Envelope(
        kind=DM_ENVELOPE_KIND,
        message_id=message.event_id,
        conversation_id=message.conversation_id,
        payload=message.to_dict(),
        accepted_at=accepted_at,
    )


def echo_envelope(echo: SentEcho, accepted_at: float) -> Envelope:
    """The queue envelope of X's echo of a bot's own DM (for the echo stream)."""
    return Envelope(
        kind=ECHO_KIND,
        message_id=echo.event_id,
        conversation_id=echo.conversation_id,
        payload=echo.to_dict(),
        accepted_at=accepted_at,
    )


@dataclass
class _Sorted:
    to_publish: list[IncomingMessage]
    waiting_on: list[asyncio.Future[bool]]
    duplicates: int


class WebhookHandler:
    """Serves ``GET`` (CRC) and ``POST`` (deliveries) on the webhook path."""

    def __init__(
        self,
        *,
        consumer_secret: str,
        bot_ids_by_user_id: Mapping[str, str],
        publisher: Publisher,
        recent_ids: RecentEventIds,
        metrics: Metrics,
        on_accepted: Callable[[str, float], None] | None = None,
    ) -> None:
        """``on_accepted(bot_user_id, accepted_at)`` is told of every DM once it is queued.

        X's echoes of the bots' own DMs are queued where ``publisher.echoes_ready`` (the
        echo check on, and a broker that took the stream), else dropped.
        """
        self._consumer_secret = consumer_secret
        self._bot_ids = bot_ids_by_user_id
        self._publisher = publisher
        self._recent_ids = recent_ids
        self._metrics = metrics
        self._on_accepted = on_accepted
        self._accepted = metrics.deliveries.labels("accepted")

    def add_routes(self, app: web.Application, path: str) -> None:
        app.router.add_get(path, self.crc)
        app.router.add_post(path, self.deliver)

    async def crc(self, request: web.Request) -> web.Response:
        token = request.query.get("crc_token")
        if not token:
            return _error(400, "missing crc_token")
        self._metrics.crc_requests.inc()
        self._metrics.crc_last_answered.set_to_current_time()
        log.info("webhook.crc_answered")
        return web.json_response(
            {"response_token": crc_response_token(self._consumer_secret, token)}
        )

    async def deliver(self, request: web.Request) -> web.Response:
        body = await request.read()  # over client_max_size: aiohttp answers 413
        if not signature_is_valid(
            self._consumer_secret, body, request.headers.get(SIGNATURE_HEADER)
        ):
            self._metrics.signature_failures.inc()
            self._metrics.deliveries.labels("bad_signature").inc()
            log.warning("webhook.bad_signature", has_header=SIGNATURE_HEADER in request.headers)
            return _error(401, "invalid signature")
        try:
            parsed = parse_delivery(
                jsoncodec.loads(body),
                self._bot_ids,
                # Not while the broker refuses the echo stream (logged at connect).
                keep_echoes=self._publisher.echoes_ready,
            )
        except (ValueError, RecursionError, InvalidDelivery) as exc:
            # RecursionError: JSON nested deeper than the parser's stack allows.
            self._metrics.deliveries.labels("invalid").inc()
            log.warning("webhook.invalid_delivery", reason=str(exc)[:200])
            return _error(400, "not a valid delivery")
        for dropped in parsed.dropped:
            self._metrics.events_dropped.labels(dropped.reason).inc()
            log.debug("webhook.event_dropped", reason=dropped.reason, event_id=dropped.event_id)
        return await self._accept(parsed.messages, parsed.echoes)

    def _sort(self, messages: list[IncomingMessage]) -> _Sorted:
        sorted_ = _Sorted([], [], 0)
        seen_here: set[str] = set()
        for message in messages:
            if message.event_id in seen_here:
                sorted_.duplicates += 1
                continue
            seen_here.add(message.event_id)
            claim = self._recent_ids.claim(message.event_id)
            if claim.owned:
                sorted_.to_publish.append(message)
            elif claim.pending is not None:
                sorted_.waiting_on.append(claim.pending)
            else:
                sorted_.duplicates += 1
        return sorted_

    async def _accept(
        self, messages: list[IncomingMessage], echoes: list[SentEcho]
    ) -> web.Response:
        # Echoes skip deduplication: a repeated one is harmless (the bridge keys them by id).
        batch = self._sort(messages)
        published = await self._publish(batch.to_publish, echoes)
        # Copies of events another request is publishing right now: their outcome is ours.
        copies = await asyncio.gather(*batch.waiting_on)
        duplicates = batch.duplicates + sum(copies)
        if duplicates:
            self._metrics.duplicates_dropped.inc(duplicates)
            log.info("webhook.duplicates_dropped", count=duplicates)
        if not (published and all(copies)):
            self._metrics.deliveries.labels("unavailable").inc()
            return _error(503, "queue unavailable, retry later")
        self._accepted.inc()
        self._metrics.messages_queued.inc(len(batch.to_publish))
        if echoes:
            self._metrics.echoes_queued.inc(len(echoes))
        answer = {"queued": len(batch.to_publish), "duplicates": duplicates}
        return web.Response(body=jsoncodec.dumps(answer), content_type="application/json")

    async def _publish(self, messages: list[IncomingMessage], echoes: list[SentEcho]) -> bool:
        if not messages and not echoes:
            return True
        accepted_at = time.time()
        envelopes = [envelope_for(m, accepted_at) for m in messages]
        echo_envelopes = [echo_envelope(e, accepted_at) for e in echoes]
        confirmed = False
        try:
            # Echoes first: if the DMs then fail, X delivers them all again, and an echo
            # queued twice is harmless where a DM queued twice is not.
            if echo_envelopes:
                await self._publisher.publish_echoes(echo_envelopes)
            if envelopes:
                await self._publisher.publish(envelopes)
            confirmed = True
        except PublishError as exc:
            log.warning(
                "webhook.publish_failed",
                error=str(exc),
                event_ids=[e.message_id for e in envelopes + echo_envelopes],
            )
        finally:
            # Also on cancellation: a claim left unsettled would block its id forever.
            for message in messages:
                self._recent_ids.settle(message.event_id, confirmed)
        if confirmed:
            for message in messages:
                if self._on_accepted is not None:
                    self._on_accepted(message.bot_user_id, accepted_at)
                log.info(
                    "webhook.dm_queued",
                    event_id=message.event_id,
                    bot_user_id=message.bot_user_id,
                    bot_id=self._bot_ids.get(message.bot_user_id),
                    conversation_id=message.conversation_id,
                )
        return confirmed
