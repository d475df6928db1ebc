"""Packing on RabbitMQ: envelopes published together travel as one message, and a pack is
settled with the broker only once every envelope in it is (twitter_bot/queue/packing.py)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aio_pika
import pytest

from tests.conftest import make_settings
from tests.queue.test_contract import Collector, Harness
from tests.queue.test_rabbit import queue_depths
from tests.support.rabbit import RABBIT_HOST, RABBIT_PORT, clear_policy, set_policy
from twitter_bot.app import topology_for
from twitter_bot.queue.base import HEADER_CHECKPOINT, Envelope, PublishError, QueueDelivery
from twitter_bot.queue.packing import PACK_HEADER, PackSettlement
from twitter_bot.queue.rabbit import RabbitQueue
from twitter_bot.settings import Settings

CONVERSATION = "732739706-1230981029831098231"


def env(message_id: str, conversation: str = CONVERSATION) -> Envelope:
    return Envelope("dm", message_id, conversation, {"text": message_id}, time.time())


class Queues(Harness):
    """Opens RabbitQueues over one settings (one prefix); stops them all at the end."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            lambda: RabbitQueue(settings.rabbit, topology_for(settings)),
            dead_letters=lambda queue: None,
        )
        self.settings = settings

    @property
    def shard_queue(self) -> str:
        topology = topology_for(self.settings)
        return topology.shard_queue(int(topology.routing_key_for(CONVERSATION).split(".")[1]))

    async def depth(self) -> int:
        return (await queue_depths(self.settings))[self.shard_queue]


@pytest.fixture
async def queues(rabbit_vhost: str) -> AsyncIterator[Queues]:
    opened = Queues(make_settings(rabbit_vhost, pack_publishes=True))
    yield opened
    await opened.close_all()


async def publish_together(queue: RabbitQueue, envelopes: list[Envelope]) -> None:
    """One publish call per envelope, all at once: as concurrent webhook requests do."""
    await asyncio.gather(*(queue.publish([e]) for e in envelopes))


async def receive(collector: Collector, count: int) -> list[QueueDelivery]:
    return [await collector.next() for _ in range(count)]


async def assert_nothing_left(queues: Queues) -> None:
    """Nothing queued, and nothing unacked either: a new consumer gets nothing."""
    collector = Collector()
    await queues.open(collector)
    assert await collector.nothing_for(0.5)
    assert await queues.depth() == 0


def ids(deliveries: list[QueueDelivery]) -> list[str]:
    return [d.envelope.message_id for d in deliveries]


async def test_envelopes_published_together_travel_as_one_message_and_arrive_in_order(
    queues: Queues,
) -> None:
    publisher = await queues.open()
    await publish_together(publisher, [env(f"m{i}") for i in range(20)])
    # Group commit: the first publish goes alone; the 19 that arrived while it was in
    # flight go out together as soon as it is confirmed.
    assert await queues.depth() == 2

    collector = Collector()
    await queues.open(collector)
    deliveries = await receive(collector, 20)
    assert ids(deliveries) == [f"m{i}" for i in range(20)]
    assert not any(d.redelivered for d in deliveries)
    assert await collector.nothing_for(0.3)


async def test_packing_is_on_by_default_and_off_sends_every_envelope_alone(
    rabbit_vhost: str,
) -> None:
    for overrides, depth in (({}, 2), ({"pack_publishes": False}, 20)):
        queues = Queues(make_settings(rabbit_vhost, **overrides))
        try:
            publisher = await queues.open()
            await publish_together(publisher, [env(f"m{i}") for i in range(20)])
            assert await queues.depth() == depth, overrides  # m0, then m1-m19 as one pack
        finally:
            await queues.close_all()


async def test_quorum_queues_never_pack(rabbit_vhost: str) -> None:
    queues = Queues(make_settings(rabbit_vhost, queue_type="quorum", pack_publishes=True))
    try:
        publisher = await queues.open()
        await publish_together(publisher, [env(f"m{i}") for i in range(10)])
        assert await queues.depth() == 10
    finally:
        await queues.close_all()


async def test_a_pack_the_broker_refuses_fails_every_caller_in_it(
    queues: Queues, rabbit_vhost: str
) -> None:
    publisher = await queues.open()
    policy = f"refuse-{uuid.uuid4().hex[:8]}"
    pattern = f"^{re.escape(queues.shard_queue)}$"
    set_policy(rabbit_vhost, policy, pattern, '{"max-length": 0, "overflow": "reject-publish"}')
    try:
        results = await asyncio.gather(
            *(publisher.publish([env(f"m{i}")]) for i in range(10)), return_exceptions=True
        )
    finally:
        clear_policy(rabbit_vhost, policy)
    assert all(isinstance(r, PublishError) for r in results), results
    # The packer is not stuck after a failure.
    await publish_together(publisher, [env("after-1"), env("after-2")])
    assert await queues.depth() == 2


async def test_a_pack_is_acked_only_once_every_part_is(queues: Queues) -> None:
    publisher = await queues.open()
    await publish_together(publisher, [env(f"m{i}") for i in range(4)])  # m0, then m1-m3

    first = Collector()
    consumer = await queues.open(first)
    deliveries = await receive(first, 4)
    for delivery in deliveries[:3]:  # m0 alone, m1 and m2 of the pack
        await delivery.ack()
    await queues.close(consumer)  # m3 unsettled: its whole pack goes back

    second = Collector()
    consumer = await queues.open(second)
    again = await receive(second, 3)
    assert ids(again) == ["m1", "m2", "m3"]
    assert all(d.redelivered for d in again)
    for delivery in again:
        await delivery.ack()
    await queues.close(consumer)

    await assert_nothing_left(queues)


async def test_a_pack_with_a_part_requeued_goes_back_whole_ahead_of_later_messages(
    queues: Queues,
) -> None:
    publisher = await queues.open()
    await publish_together(publisher, [env(f"m{i}") for i in range(4)])

    collector = Collector()
    await queues.open(collector, prefetch=1)
    (m0,) = await receive(collector, 1)
    await m0.ack()
    m1, m2, m3 = await receive(collector, 3)  # the pack: one message, so prefetch 1 allows it
    await publisher.publish([env("later")])  # waits in the queue behind the held pack

    await m1.ack()
    await m2.requeue()
    assert await collector.nothing_for(0.3)  # m3 still in progress: nothing settled yet
    await m3.ack()

    # In its place, so each conversation stays in order; the done parts come too.
    again = await receive(collector, 3)
    assert ids(again) == ["m1", "m2", "m3"]
    assert all(d.redelivered for d in again)
    for delivery in again:
        await delivery.ack()
    later = await collector.next()
    assert later.envelope.message_id == "later"
    await later.ack()
    assert await collector.nothing_for(0.3)


async def test_a_pack_whose_parts_are_all_requeued_comes_back_whole(queues: Queues) -> None:
    publisher = await queues.open()
    await publish_together(publisher, [env(f"m{i}") for i in range(4)])
    collector = Collector()
    await queues.open(collector)
    m0, *pack = await receive(collector, 4)
    await m0.ack()
    for part in pack:
        await part.requeue()
    again = await receive(collector, 3)
    assert ids(again) == ["m1", "m2", "m3"]
    assert all(d.redelivered for d in again)
    for delivery in again:
        await delivery.ack()
    assert await collector.nothing_for(0.3)


def checkpoint_of(delivery: QueueDelivery) -> Envelope:
    """A done part's checkpoint, as the bridge publishes it (twitter_bot/bridge/scheduler.py)."""
    return replace(delivery.envelope, progress={"answer": [{"type": "text"}], "sent": 1})


async def test_only_the_last_open_part_of_a_pack_settles_it(queues: Queues) -> None:
    publisher = await queues.open()
    await publish_together(publisher, [env(f"m{i}") for i in range(4)])
    collector = Collector()
    await queues.open(collector)
    m0, m1, m2, m3 = await receive(collector, 4)
    assert m0.ack_settles  # alone in its message
    assert not any(part.ack_settles for part in (m1, m2, m3))
    await m1.ack()
    await m3.ack()
    assert m2.ack_settles
    await m2.requeue()  # the whole pack goes back, so nothing it held was settled
    again = await receive(collector, 3)
    assert not any(part.ack_settles for part in again)


async def test_a_done_parts_checkpoint_stays_queued_as_long_as_its_pack_does(
    queues: Queues,
) -> None:
    publisher = await queues.open()
    await publish_together(publisher, [env(f"m{i}") for i in range(4)])
    first = Collector()
    consumer = await queues.open(first)
    m0, m1, m2, m3 = await receive(first, 4)
    await m0.ack()
    await m1.ack()
    await publisher.checkpoint(checkpoint_of(m1))
    checkpoint = await first.next()
    assert checkpoint.envelope.headers[HEADER_CHECKPOINT] == 1
    await checkpoint.ack()  # the bridge is done with it, but m1's pack is still open
    await m2.ack()
    await queues.close(consumer)  # m3 unsettled: the pack goes back, the checkpoint with it

    second = Collector()
    consumer = await queues.open(second)
    again = await receive(second, 4)
    # The checkpoint first (priority): whoever gets m1 again learns that it is done.
    assert [(d.envelope.message_id, d.envelope.progress) for d in again] == [
        ("m1", {"answer": [{"type": "text"}], "sent": 1}),
        ("m1", None),
        ("m2", None),
        ("m3", None),
    ]
    for delivery in again:  # the checkpoint first: it is acked once its pack is
        await delivery.ack()
    await queues.close(consumer)

    await assert_nothing_left(queues)


async def test_a_checkpoint_acked_after_its_pack_was_requeued_goes_back_too(
    queues: Queues,
) -> None:
    publisher = await queues.open()
    await publish_together(publisher, [env(f"m{i}") for i in range(3)])
    collector = Collector()
    await queues.open(collector)
    m0, m1, m2 = await receive(collector, 3)
    await m0.ack()
    await m1.ack()
    await publisher.checkpoint(checkpoint_of(m1))
    checkpoint = await collector.next()
    await m2.requeue()  # the pack goes back before the bridge is done with the checkpoint
    await checkpoint.ack()
    again = await receive(collector, 3)
    assert sorted((d.envelope.message_id, bool(d.envelope.progress)) for d in again) == [
        ("m1", False),
        ("m1", True),
        ("m2", False),
    ]


async def test_settling_a_part_twice_is_refused(queues: Queues) -> None:
    publisher = await queues.open()
    await publish_together(publisher, [env(f"m{i}") for i in range(3)])
    collector = Collector()
    await queues.open(collector)
    m0, m1, m2 = await receive(collector, 3)
    await m0.ack()
    await m1.ack()
    with pytest.raises(RuntimeError, match="settled twice"):
        await m1.ack()
    await m2.ack()
    assert await collector.nothing_for(0.3)


async def test_malformed_messages_and_packs_are_dead_lettered_and_consuming_goes_on(
    queues: Queues,
) -> None:
    topology = topology_for(queues.settings)
    routing_key = topology.routing_key_for(CONVERSATION)
    malformed = [
        (b"not json", {}),
        (b"[1, 2]", {}),  # JSON, but not an envelope object
        (b"{}", {PACK_HEADER: 2}),  # a pack that is not an array
        (b"[]", {PACK_HEADER: 1}),  # an empty pack
        (b'[{"kind": "dm"}]', {PACK_HEADER: 1}),  # a pack entry without its fields
    ]
    collector = Collector()
    consumer = await queues.open(collector)  # declares the topology
    connection = await aio_pika.connect(
        host=RABBIT_HOST, port=RABBIT_PORT, virtualhost=queues.settings.rabbit.virtual_host
    )
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(topology.exchange)
        for body, headers in malformed:
            await exchange.publish(aio_pika.Message(body, headers=headers), routing_key)
    await consumer.publish([env("fine")])
    delivery = await collector.next()
    assert delivery.envelope.message_id == "fine"
    await delivery.ack()
    assert await collector.nothing_for(0.3)
    dead = await dead_letter_bodies(queues.settings)
    assert dead == [body for body, _ in malformed]


async def dead_letter_bodies(settings: Settings) -> list[bytes]:
    topology = topology_for(settings)
    connection = await aio_pika.connect(
        host=RABBIT_HOST, port=RABBIT_PORT, virtualhost=settings.rabbit.virtual_host
    )
    bodies = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.dead_letter_queue)
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            bodies.append(message.body)
    return bodies


async def test_a_pack_keeps_only_the_newest_checkpoint_of_each_dm() -> None:
    """PackSettlement.settle_with: of the messages with one key, the highest rank is kept
    until the pack settles; the others are acked at once, also after the pack settled."""
    events: list[str] = []

    def recorder(name: str) -> tuple[Any, Any]:
        async def ack() -> None:
            events.append(f"ack {name}")

        async def requeue() -> None:
            events.append(f"requeue {name}")

        return ack, requeue

    pack_ack, pack_requeue = recorder("pack")
    pack = PackSettlement(2, ack=pack_ack, requeue=pack_requeue)
    await pack.settle_with(*recorder("m1 c1"), key="m1", rank=1)
    await pack.settle_with(*recorder("m1 c3"), key="m1", rank=3)  # newer: c1 goes
    await pack.settle_with(*recorder("m1 c2"), key="m1", rank=2)  # older than the kept c3
    await pack.settle_with(*recorder("m2 c1"), key="m2", rank=1)
    assert events == ["ack m1 c1", "ack m1 c2"]
    await pack.settle(0, done=True)
    await pack.settle(1, done=False)
    assert events[2:] == ["requeue pack", "requeue m1 c3", "requeue m2 c1"]
    await pack.settle_with(*recorder("m1 c0"), key="m1", rank=0)  # older than c3, requeued
    await pack.settle_with(*recorder("m3 c1"), key="m3", rank=1)
    assert events[5:] == ["ack m1 c0", "requeue m3 c1"]
