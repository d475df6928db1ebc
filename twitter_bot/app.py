"""The application factory: routes, middlewares and resources, in start-up order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Literal

import structlog
from aiohttp import web

from twitter_bot.bridge.admission import LagAdaptiveLimit
from twitter_bot.bridge.service import BridgeService
from twitter_bot.health import HealthHandler, Lifecycle
from twitter_bot.loop_lag import LoopLagMonitor
from twitter_bot.management.daemon import WebhookUpkeep
from twitter_bot.metrics import Metrics
from twitter_bot.push_api import PushHandler
from twitter_bot.queue.base import MessageQueue
from twitter_bot.queue.rabbit import RabbitQueue, Topology
from twitter_bot.queue.sqlite import SqliteQueue
from twitter_bot.settings import Settings
from twitter_bot.webhook.dedupe import RecentEventIds
from twitter_bot.webhook.handler import WebhookHandler

log = structlog.get_logger(__name__)

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
QUEUE = web.AppKey("queue", MessageQueue)
BRIDGE = web.AppKey("bridge", BridgeService)


def topology_for(settings: Settings) -> Topology:
    rabbit = settings.rabbit
    return Topology(
        prefix=rabbit.queue_prefix,
        shards=rabbit.shards,
        queue_type=rabbit.queue_type,
        delivery_limit=rabbit.delivery_limit,
        # Only where checkpoints are (classic queues): the echo check starts from their
        # anchor, and a finished answer is recorded when its checkpoint is acked alone.
        with_streams=settings.messaging.resend_echo_wait > 0 and rabbit.queue_type == "classic",
    )


def build_queue(settings: Settings, metrics: Metrics) -> MessageQueue:
    """RabbitMQ when hosts are configured, else the embedded SQLite queue."""
    if settings.uses_rabbitmq:
        topology = topology_for(settings)

        def record_active(active: list[int]) -> None:
            for shard in range(topology.shards):
                metrics.shard_active.labels(str(shard)).set(1 if shard in active else 0)

        return RabbitQueue(
            settings.rabbit,
            topology,
            on_confirmed=metrics.publish_confirm_seconds.observe,
            on_packed=metrics.publish_pack_size.observe,
            on_active_shards=record_active,
        )
    log.info("queue.embedded_sqlite", path=settings.sqlite.path)
    return SqliteQueue(settings.sqlite.path)


def _queue_ctx(
    queue: MessageQueue, first_connect_timeout: float
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def open_queue(app: web.Application) -> AsyncIterator[None]:
        await queue.start()
        if not await queue.wait_ready(first_connect_timeout):
            # Serve anyway: CRCs still pass, deliveries get 503 until the broker is back.
            log.warning("broker.unavailable_at_start")
        yield
        await queue.stop()

    return open_queue


def _also_signal_ingest(
    on_accepted: Callable[[str, float], None] | None, yielding: LagAdaptiveLimit | None
) -> Callable[[str, float], None] | None:
    """The webhook's on_accepted hook, also telling the bridge's limit of the traffic."""
    if yielding is None:
        return on_accepted

    def accepted(bot_user_id: str, accepted_at: float) -> None:
        if on_accepted is not None:
            on_accepted(bot_user_id, accepted_at)
        yielding.ingested()

    return accepted


Role = Literal["webhook", "worker", "all"]
ROLES: tuple[Role, ...] = ("all", "webhook", "worker")


def create_app(
    settings: Settings, metrics: Metrics | None = None, role: Role = "all"
) -> web.Application:
    """Build the daemon's web application; resources open in its cleanup contexts.

    ``webhook`` answers X and fills the queue; ``worker`` consumes it and talks to
    the bots (serving only health and metrics); ``all`` does both.
    """
    metrics = metrics or Metrics()
    app = web.Application(client_max_size=settings.http.max_body_size)
    lifecycle = Lifecycle()
    queue = build_queue(settings, metrics)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[LIFECYCLE] = lifecycle
    app[QUEUE] = queue
    queue_ctx = _queue_ctx(queue, settings.rabbit.connect_timeout)
    yielding: LagAdaptiveLimit | None = None
    lag_monitor = LoopLagMonitor(metrics.loop_lag.observe)
    app.cleanup_ctx.append(lag_monitor.resource)
    if role == "webhook":
        app.cleanup_ctx.append(queue_ctx)
    else:
        lag_target = settings.messaging.loop_lag_target
        if role == "all" and lag_target > 0:
            # The webhook shares this loop: the bridge yields to it (bridge/admission.py).
            yielding = LagAdaptiveLimit(lag_target, on_change=metrics.bridge_concurrency_limit.set)
            lag_monitor.subscribe(yielding.observe)
        bridge = BridgeService(settings, queue, metrics, yielding)
        app[BRIDGE] = bridge
        # Order matters: teardown runs in reverse, so the bridge drains before the
        # queue closes, and the HTTP sessions close last.
        app.cleanup_ctx.append(bridge.resources)
        app.cleanup_ctx.append(queue_ctx)
        app.cleanup_ctx.append(bridge.drain)

    # CRC watchdog and gap recovery, when configured, on the roles serving the webhook.
    upkeep = WebhookUpkeep.for_role(settings, metrics, role)
    upkeep.install(app)
    if role != "worker":
        WebhookHandler(
            consumer_secret=settings.auth.consumer_secret.value,
            bot_ids_by_user_id={bot.user_id: bot.bot_id for bot in settings.bots},
            publisher=queue,
            recent_ids=RecentEventIds(
                settings.webhook.dedupe_ttl, settings.webhook.dedupe_max_entries
            ),
            metrics=metrics,
            on_accepted=_also_signal_ingest(upkeep.on_accepted, yielding),
        ).add_routes(app, settings.webhook.path)
        if settings.push_api.token:  # off without a token: the route does not exist
            PushHandler(
                token=settings.push_api.token.value,
                bots=settings.bots,
                publisher=queue,
                metrics=metrics,
            ).add_routes(app)
    HealthHandler(
        lifecycle,
        queue,
        metrics,
        role,
        active_shards=queue.active_shards if role != "webhook" else None,
        webhook=upkeep.health_details,
    ).add_routes(app)
    return app
