"""Shared fixtures: a real RabbitMQ vhost per run, settings with unique queue names per test."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import aio_pika
import pytest

from tests.support.rabbit import (
    RABBIT_HOST,
    RABBIT_PORT,
    create_vhost,
    delete_test_streams,
    delete_vhost,
    streams_may_exist,
)
from twitter_bot.queue.base import Envelope
from twitter_bot.settings import (
    ApiSettings,
    AuthSettings,
    BotSettings,
    BrokerHost,
    GatewaySettings,
    RabbitSettings,
    Secret,
    Settings,
)

CONSUMER_SECRET = "test-consumer-secret-9f8e7d"
BOT_A_USER_ID = "1230981029831098231"
BOT_B_USER_ID = "4337869213"
USER_ID = "3001969357"


@pytest.fixture(scope="session")
def rabbit_vhost() -> Iterator[str]:
    name = create_vhost()
    yield name
    delete_vhost(name)


@pytest.fixture(autouse=True)
def delete_streams_after_the_test() -> Iterator[None]:
    """Every test's streams go when it ends (see delete_test_streams)."""
    yield
    delete_test_streams()


def make_settings(vhost: str, *, port: int = RABBIT_PORT, **rabbit_overrides: object) -> Settings:
    rabbit = RabbitSettings(
        hosts=(BrokerHost(RABBIT_HOST, port),),
        username="guest",
        password=Secret("guest"),
        virtual_host=vhost,
        queue_prefix=f"t-{uuid.uuid4().hex[:10]}",
        connect_timeout=2.0,
    )
    rabbit = replace(rabbit, **rabbit_overrides)  # type: ignore[arg-type]
    streams_may_exist(vhost, rabbit.queue_prefix)
    return Settings(
        auth=AuthSettings(
            consumer_key="test-consumer-key",
            consumer_secret=Secret(CONSUMER_SECRET),
            bearer_token=Secret("test-bearer-token-1a2b3c"),
            default_access_token=Secret("1111-test-default-access-token"),
            default_access_secret=Secret("test-default-access-secret-4d5e"),
        ),
        api=ApiSettings(webhook_url="https://bot.example.com/webhooks"),
        bots=(
            BotSettings(
                user_id=BOT_A_USER_ID,
                bot_id="bot-a",
                access_token=Secret(f"{BOT_A_USER_ID}-bot-a-access-token"),
                access_secret=Secret("bot-a-access-secret-7g8h"),
            ),
            BotSettings(
                user_id=BOT_B_USER_ID,
                bot_id="bot-b",
                access_token=Secret(f"{BOT_B_USER_ID}-bot-b-access-token"),
                access_secret=Secret("bot-b-access-secret-9i0j"),
            ),
        ),
        gateway=GatewaySettings(url="http://127.0.0.1:9/gateway"),
        rabbit=rabbit,
    )


@pytest.fixture
def settings(rabbit_vhost: str) -> Settings:
    return make_settings(rabbit_vhost)


async def connect_to(settings: Settings) -> aio_pika.abc.AbstractConnection:
    """A plain connection to the settings' virtual host on the test broker."""
    return await aio_pika.connect(
        host=RABBIT_HOST, port=RABBIT_PORT, virtualhost=settings.rabbit.virtual_host
    )


async def drain_queued(settings: Settings) -> list[Envelope]:
    """Consume back (and remove) every envelope queued under the settings' prefix, by shard."""
    from twitter_bot.app import topology_for
    from twitter_bot.queue.rabbit import decode_message

    topology = topology_for(settings)
    connection = await connect_to(settings)
    found: list[Envelope] = []
    async with connection:
        channel = await connection.channel()
        for shard in range(topology.shards):
            queue = await channel.get_queue(topology.shard_queue(shard))
            while (message := await queue.get(fail=False, no_ack=True)) is not None:
                found.extend(decode_message(message.body, message.headers or {}))
    return found


async def queue_exists(settings: Settings, name: str) -> bool:
    connection = await connect_to(settings)
    async with connection:
        channel = await connection.channel()
        try:
            await channel.get_queue(name, ensure=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False
    return True


async def read_echo_stream(settings: Settings, expect: int, timeout: float = 5.0) -> list[Envelope]:
    """The envelopes on the echo stream under the settings' prefix, from its start (a
    stream is read, not drained), once ``expect`` of them are there or at the timeout."""
    messages = await read_echo_stream_messages(settings, expect, timeout)
    return [envelope for message in messages for envelope in message]


async def read_echo_stream_messages(
    settings: Settings, expect: int, timeout: float = 5.0
) -> list[list[Envelope]]:
    """Like read_echo_stream, by broker message: the envelopes each one carries."""
    from twitter_bot.app import topology_for
    from twitter_bot.queue.rabbit import decode_message

    topology = topology_for(settings)
    connection = await connect_to(settings)
    found: list[list[Envelope]] = []
    arrived = asyncio.Event()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        found.append(decode_message(message.body, message.headers or {}))  # maybe a pack
        await message.ack()
        if sum(len(envelopes) for envelopes in found) >= expect:
            arrived.set()

    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=100)
        stream = await channel.get_queue(topology.echo_stream)
        await stream.consume(on_message, arguments={"x-stream-offset": "first"})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), timeout)
    return found


@pytest.fixture
async def rabbit_channel(rabbit_vhost: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(
        host=RABBIT_HOST, port=RABBIT_PORT, virtualhost=rabbit_vhost
    )
    async with connection:
        yield await connection.channel()
