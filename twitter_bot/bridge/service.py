"""Wiring the bridge: HTTP sessions, the X and gateway clients, the scheduler and the consumer.

Resources open in aiohttp cleanup contexts: ``resources`` before the broker
connects (so the first delivery finds a processor), ``drain`` after it, so that
on shutdown in-flight messages finish before the broker connection closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial

import aiohttp
import structlog
from aiohttp import web

from twitter_bot.bridge.admission import Admission
from twitter_bot.bridge.echoes import RecentEchoes
from twitter_bot.bridge.finished import FinishedAnswers
from twitter_bot.bridge.options import OfferedOptions
from twitter_bot.bridge.outbound import MediaLimits, XReplySender
from twitter_bot.bridge.processor import Processor, ProcessorOptions
from twitter_bot.bridge.retry import RetryPolicy
from twitter_bot.bridge.scheduler import ConversationScheduler
from twitter_bot.gateway import GatewayClient
from twitter_bot.metrics import Metrics
from twitter_bot.models import SentEcho
from twitter_bot.queue.base import Envelope, MessageQueue, QueueDelivery
from twitter_bot.settings import Settings
from twitter_bot.x import XClient

log = structlog.get_logger(__name__)


class BridgeService:
    """Consumes the queue and bridges every message to its bot and back."""

    def __init__(
        self,
        settings: Settings,
        queue: MessageQueue,
        metrics: Metrics,
        admission: Admission | None = None,
    ) -> None:
        """``admission`` bounds the messages worked on at once (default: no bound)."""
        self._settings = settings
        self._queue = queue
        self._metrics = metrics
        self._admission = admission
        self._scheduler: ConversationScheduler | None = None
        # X's echoes of the bots' DMs, read by every instance (bridge/echoes.py); the
        # queue supports them only where resend-echo-wait is on.
        self._echoes: RecentEchoes | None = None
        if queue.echoes_supported:
            self._echoes = RecentEchoes()
            # Before consume (see RabbitQueue).
            queue.consume_echoes(partial(self._remember_echo, self._echoes))
        # Answers finished after a crash before their messages came back (bridge/finished.py).
        self._finished: FinishedAnswers | None = None
        if queue.finished_supported:
            self._finished = FinishedAnswers(queue.record_finished)
            queue.consume_finished(self._finished.add, self._finished.caught_up)
        queue.consume(settings.messaging.prefetch, self._submit, self._link_lost)

    @property
    def scheduler(self) -> ConversationScheduler | None:
        return self._scheduler

    def _submit(self, delivery: QueueDelivery) -> None:
        if self._scheduler is None:
            raise RuntimeError("bridge received a delivery before it was started")
        self._scheduler.submit(delivery)

    def _remember_echo(self, echoes: RecentEchoes, envelope: Envelope) -> None:
        self._metrics.echoes_read.inc()
        try:
            echoes.add(SentEcho.from_dict(envelope.payload))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("bridge.bad_echo", error=repr(exc)[:200])

    def _link_lost(self) -> None:
        if self._scheduler is not None:
            self._scheduler.link_lost()

    async def resources(self, app: web.Application) -> AsyncIterator[None]:
        """Open the HTTP sessions and build the processing chain; close them at the end."""
        s = self._settings
        m = s.messaging
        async with (
            aiohttp.ClientSession() as x_session,
            aiohttp.ClientSession() as gateway_session,
            aiohttp.ClientSession() as downloads,
        ):
            x = XClient(
                x_session,
                consumer_key=s.auth.consumer_key,
                consumer_secret=s.auth.consumer_secret.value,
                api_base_url=s.api.twitter_base_url,
                upload_url=s.api.upload_url,
            )
            offered = OfferedOptions()
            processor = Processor(
                bots={bot.user_id: bot for bot in s.bots},
                platform=GatewayClient(
                    gateway_session,
                    base_url=s.gateway.url,
                    token=s.gateway.token.value if s.gateway.token else None,
                    timeout=m.message_timeout,
                ),
                sender=XReplySender(
                    x,
                    downloads,
                    dm_api=s.api.dm_api,
                    limits=MediaLimits.from_settings(m),
                    options=offered,
                    metrics=self._metrics,
                ),
                offered=offered,
                options=ProcessorOptions(
                    dm_api=s.api.dm_api,
                    mark_read=m.mark_read,
                    typing_indicator=m.typing_indicator,
                    message_timeout=m.message_timeout,
                ),
                metrics=self._metrics,
            )
            self._scheduler = ConversationScheduler(
                processor,
                self._queue,
                RetryPolicy(m.max_attempts, m.retry_initial_delay, m.retry_max_delay),
                max_hold=m.max_rate_limit_hold,
                metrics=self._metrics,
                checkpoints=self._queue.checkpoints_enabled,
                checkpoint_hold_limit=m.prefetch // 2,
                echoes=self._echoes,
                echo_wait=m.resend_echo_wait,
                finished=self._finished,
                admission=self._admission,
            )
            yield

    async def drain(self, app: web.Application) -> AsyncIterator[None]:
        """On shutdown: finish or requeue in-flight work within the bound, then stop consuming."""
        yield
        bound = self._settings.http.shutdown_timeout
        try:
            # A stalled broker must not hang shutdown: what is not settled by the
            # deadline stays unacked and the broker redelivers it.
            async with asyncio.timeout(bound + 4):
                if self._scheduler is not None:
                    # Still subscribed while draining: our checkpoint copies must come
                    # back to be acked; new deliveries are requeued untouched.
                    log.info("bridge.draining", in_flight=self._scheduler.in_flight)
                    await self._scheduler.close(bound)
                await self._queue.stop_consuming()
        except TimeoutError:
            log.warning("bridge.drain_timed_out", seconds=bound + 4)
