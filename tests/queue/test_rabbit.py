"""The RabbitMQ adapter's own guarantees: parking, checkpoints, header fidelity."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aio_pika
import pytest

from tests.conftest import make_settings
from tests.support.rabbit import RABBIT_HOST, RABBIT_PORT
from twitter_bot.app import topology_for
from twitter_bot.queue.base import HEADER_ATTEMPT, HEADER_NOT_BEFORE, Envelope
from twitter_bot.queue.rabbit import (
    DELAY_TIERS,
    RabbitConnection,
    RabbitPublisher,
    delay_tier,
    own_headers,
)
from twitter_bot.settings import Settings

CONVERSATION = "732739706-1230981029831098231"


@pytest.fixture
async def publisher(rabbit_vhost: str) -> AsyncIterator[tuple[RabbitPublisher, Settings]]:
    settings = make_settings(rabbit_vhost)
    connection = RabbitConnection(
        settings.rabbit.hosts,
        username="guest",
        password="guest",
        virtual_host=rabbit_vhost,
        connect_timeout=2,
        heartbeat=30,
    )
    publisher = RabbitPublisher(connection, topology_for(settings), confirm_timeout=2)
    connection.start()
    assert await connection.wait_connected(5)
    yield publisher, settings
    await connection.stop()


def envelope(**headers: object) -> Envelope:
    return Envelope("dm", "42", CONVERSATION, {"text": "hi"}, time.time(), headers=dict(headers))


async def queue_depths(settings: Settings) -> dict[str, int]:
    topology = topology_for(settings)
    names = [topology.delay_queue(t) for t in DELAY_TIERS]
    names += [topology.shard_queue(s) for s in range(topology.shards)]
    connection = await aio_pika.connect(
        host=RABBIT_HOST, port=RABBIT_PORT, virtualhost=settings.rabbit.virtual_host
    )
    async with connection:
        channel = await connection.channel()
        depths = {}
        for name in names:
            queue = await channel.declare_queue(name, passive=True)
            depths[name] = queue.declaration_result.message_count or 0
    return depths


def test_delay_tier_is_the_largest_not_longer_than_the_delay() -> None:
    assert [delay_tier(d) for d in (0, 0.4, 1, 4.9, 5, 29, 31, 7200)] == [
        1,
        1,
        1,
        1,
        5,
        5,
        30,
        3600,
    ]


async def test_a_parked_message_waits_in_exactly_one_tier_then_returns_to_its_shard(
    publisher: tuple[RabbitPublisher, Settings],
) -> None:
    pub, settings = publisher
    not_before_ms = 1_795_293_508_123
    await pub.park(envelope(**{HEADER_NOT_BEFORE: not_before_ms, HEADER_ATTEMPT: 3}), 1.2)
    topology = topology_for(settings)
    shard = topology.shard_queue(int(topology.routing_key_for(CONVERSATION).split(".")[1]))
    depths = await queue_depths(settings)
    assert {name: n for name, n in depths.items() if n} == {topology.delay_queue(1): 1}

    await asyncio.sleep(1.5)  # the 1 s tier's TTL
    depths = await queue_depths(settings)
    assert {name: n for name, n in depths.items() if n} == {shard: 1}

    connection = await aio_pika.connect(
        host=RABBIT_HOST, port=RABBIT_PORT, virtualhost=settings.rabbit.virtual_host
    )
    async with connection:
        channel = await connection.channel()
        message = await (await channel.get_queue(shard)).get(no_ack=True)
        assert message is not None
        headers = own_headers(message.headers)
    # Exact to the millisecond (a float header would be 32-bit and off by up to a minute).
    assert headers[HEADER_NOT_BEFORE] == not_before_ms
    assert headers[HEADER_ATTEMPT] == 3
    assert Envelope.decode(message.body).message_id == "42"


async def test_a_checkpoint_is_delivered_before_messages_queued_earlier(
    publisher: tuple[RabbitPublisher, Settings],
) -> None:
    pub, settings = publisher
    later = Envelope("dm", "43", CONVERSATION, {"text": "later"}, time.time())
    await pub.publish([later])
    await pub.checkpoint(envelope())
    topology = topology_for(settings)
    shard = topology.shard_queue(int(topology.routing_key_for(CONVERSATION).split(".")[1]))
    connection = await aio_pika.connect(
        host=RABBIT_HOST, port=RABBIT_PORT, virtualhost=settings.rabbit.virtual_host
    )
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(shard)
        first = await queue.get(no_ack=True)
        second = await queue.get(no_ack=True)
    assert [first.message_id, second.message_id] == ["42", "43"]
    assert first.priority == 1 and own_headers(first.headers)["x-checkpoint"] == 1
