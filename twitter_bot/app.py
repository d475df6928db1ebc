"""The application factory: routes, middlewares and resources, in start-up order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

from twitter_bot.health import HealthHandler, Lifecycle
from twitter_bot.metrics import Metrics
from twitter_bot.queue.rabbit import RabbitConnection, RabbitPublisher, Topology
from twitter_bot.settings import Settings
from twitter_bot.webhook.dedupe import RecentEventIds
from twitter_bot.webhook.handler import WebhookHandler

log = structlog.get_logger(__name__)

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
BROKER = web.AppKey("broker", RabbitConnection)
PUBLISHER = web.AppKey("publisher", RabbitPublisher)


def topology_for(settings: Settings) -> Topology:
    return Topology(prefix=settings.rabbit.queue_prefix, shards=settings.rabbit.shards)


def _broker_ctx(
    connection: RabbitConnection, first_connect_timeout: float
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def broker(app: web.Application) -> AsyncIterator[None]:
        connection.start()
        if not await connection.wait_connected(first_connect_timeout):
            # Serve anyway: CRCs still pass, deliveries get 503 until the broker is back.
            log.warning("broker.unavailable_at_start")
        yield
        await connection.stop()

    return broker


def create_app(settings: Settings, metrics: Metrics | None = None) -> web.Application:
    """Build the daemon's web application; resources open in its cleanup contexts."""
    metrics = metrics or Metrics()
    app = web.Application(client_max_size=settings.http.max_body_size)
    lifecycle = Lifecycle()
    rabbit = settings.rabbit
    connection = RabbitConnection(
        rabbit.hosts,
        username=rabbit.username,
        password=rabbit.password.value,
        virtual_host=rabbit.virtual_host,
        connect_timeout=rabbit.connect_timeout,
        heartbeat=rabbit.heartbeat,
    )
    publisher = RabbitPublisher(
        connection,
        topology_for(settings),
        confirm_timeout=rabbit.publish_timeout,
        on_confirmed=metrics.publish_confirm_seconds.observe,
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[LIFECYCLE] = lifecycle
    app[BROKER] = connection
    app[PUBLISHER] = publisher
    app.cleanup_ctx.append(_broker_ctx(connection, rabbit.connect_timeout))

    WebhookHandler(
        consumer_secret=settings.auth.consumer_secret.value,
        bot_ids_by_user_id={bot.user_id: bot.bot_id for bot in settings.bots},
        publisher=publisher,
        recent_ids=RecentEventIds(settings.webhook.dedupe_ttl, settings.webhook.dedupe_max_entries),
        metrics=metrics,
    ).add_routes(app, settings.webhook.path)
    HealthHandler(lifecycle, publisher, metrics).add_routes(app)
    return app
