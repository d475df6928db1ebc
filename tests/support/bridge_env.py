"""The whole pipeline in one test process: real RabbitMQ, the daemon app, FakeX, FakeGateway.

FakeX verifies every OAuth signature the daemon makes; FakeGateway checks every
request against gateway-api.md section 1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aio_pika
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import BOT_A_USER_ID, BOT_B_USER_ID, CONSUMER_SECRET, make_settings
from tests.fakes.fake_gateway import FakeGateway
from tests.fakes.fake_x import FakeX
from tests.support.deliveries import aaa_delivery, dm_event, signed
from tests.support.rabbit import RABBIT_HOST, RABBIT_PORT
from twitter_bot.app import create_app, topology_for
from twitter_bot.settings import GatewaySettings, MessagingSettings, Secret, Settings

GATEWAY_TOKEN = "gw-token-Pq8Rs2Tu"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def fast_messaging(**overrides: Any) -> MessagingSettings:
    """Retry timings short enough for tests."""
    base = MessagingSettings(
        message_timeout=5.0,
        retry_initial_delay=0.05,
        retry_max_delay=0.2,
        max_rate_limit_hold=10.0,
        max_attempts=5,
    )
    return replace(base, **overrides)


@dataclass
class BridgeEnv:
    settings: Settings
    x: FakeX
    gateway: FakeGateway
    client: TestClient
    media_url: Callable[[str], str]

    async def send_dm(
        self,
        event_id: str,
        user_id: str,
        bot_user_id: str = BOT_A_USER_ID,
        text: str = "hi",
        **kw: Any,
    ) -> None:
        delivery = aaa_delivery(bot_user_id, dm_event(event_id, user_id, bot_user_id, text, **kw))
        raw, headers = signed(delivery, CONSUMER_SECRET)
        response = await self.client.post("/webhooks", data=raw, headers=headers)
        assert response.status == 200, await response.text()

    async def metrics(self) -> str:
        return await (await self.client.get("/metrics")).text()

    async def until_metric(self, line: str, timeout: float = 10.0, what: str = "") -> None:
        """Wait until /metrics shows ``line`` (a sample and its value); fail if not in time."""
        deadline = time.monotonic() + timeout
        while line not in await self.metrics():
            assert time.monotonic() < deadline, f"{what or line} not in {timeout:g} s"
            await asyncio.sleep(0.05)

    async def dead_letters(
        self, expect: int, timeout: float = 10.0
    ) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Wait until ``expect`` messages are in the dead-letter queue; return them (consumed)."""
        topology = topology_for(self.settings)
        connection = await aio_pika.connect(
            host=RABBIT_HOST, port=RABBIT_PORT, virtualhost=self.settings.rabbit.virtual_host
        )
        found: list[aio_pika.abc.AbstractIncomingMessage] = []
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(topology.dead_letter_queue)
            deadline = time.monotonic() + timeout
            while len(found) < expect and time.monotonic() < deadline:
                message = await queue.get(fail=False, no_ack=True)
                if message is None:
                    await asyncio.sleep(0.05)
                else:
                    found.append(message)
        return found


async def start_bridge_env(
    aiohttp_server: Any,
    aiohttp_client: Any,
    vhost: str,
    *,
    dm_api: str = "v1.1",
    messaging: MessagingSettings | None = None,
    push_token: str | None = None,
    before_start: Callable[[Settings], Awaitable[None]] | None = None,
    gateway: FakeGateway | None = None,
    rabbit: dict[str, Any] | None = None,
) -> BridgeEnv:
    """The daemon in-process (role all) against fakes; ``before_start(settings)`` runs
    before it connects, e.g. to leave messages in its queues. Pass ``gateway`` when its
    answers must be set before the daemon can consume anything; ``rabbit`` overrides
    RabbitSettings fields."""
    base = make_settings(vhost, **(rabbit or {}))
    x = FakeX(consumer_key=base.auth.consumer_key, consumer_secret=CONSUMER_SECRET)
    for bot in base.bots:
        x.add_user(bot.user_id, token=bot.access_token.value, secret=bot.access_secret.value)
    x_server: TestServer = await aiohttp_server(x.make_app())
    api_base, upload = FakeX.urls(x_server.make_url("/"))
    gateway = gateway or FakeGateway(token=GATEWAY_TOKEN)
    gateway_server: TestServer = await aiohttp_server(gateway.app)
    media_server: TestServer = await aiohttp_server(_media_app())
    settings = replace(
        base,
        api=replace(base.api, twitter_base_url=api_base, upload_url=upload, dm_api=dm_api),
        gateway=GatewaySettings(
            url=str(gateway_server.make_url("/")).rstrip("/"),
            token=Secret(GATEWAY_TOKEN),
        ),
        messaging=messaging or fast_messaging(),
        push_api=replace(base.push_api, token=Secret(push_token) if push_token else None),
    )
    if before_start is not None:
        await before_start(settings)
    client: TestClient = await aiohttp_client(create_app(settings))
    return BridgeEnv(
        settings, x, gateway, client, lambda path: str(media_server.make_url(f"/{path}"))
    )


def _media_app() -> web.Application:
    async def png(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/map.png", png)
    app.router.add_get("/missing.png", missing)
    return app


__all__ = [
    "BOT_A_USER_ID",
    "BOT_B_USER_ID",
    "PNG",
    "BridgeEnv",
    "fast_messaging",
    "start_bridge_env",
]
