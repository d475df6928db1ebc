"""The MessageQueue contract, run against every implementation: RabbitMQ and SQLite."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aio_pika
import pytest

from tests.conftest import make_settings
from tests.support.rabbit import RABBIT_HOST, RABBIT_PORT
from twitter_bot.app import topology_for
from twitter_bot.queue.base import (
    HEADER_ATTEMPT,
    HEADER_NOT_BEFORE,
    HEADER_PARKED,
    Envelope,
    MessageQueue,
    PublishError,
    QueueDelivery,
)
from twitter_bot.queue.rabbit import RabbitQueue
from twitter_bot.queue.sqlite import SqliteQueue
from twitter_bot.settings import Settings

Factory = Callable[[], MessageQueue]


class Collector:
    """Receives deliveries in order; tests settle them."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[QueueDelivery] = asyncio.Queue()

    def __call__(self, delivery: QueueDelivery) -> None:
        self.received.put_nowait(delivery)

    async def next(self, timeout: float = 5.0) -> QueueDelivery:
        return await asyncio.wait_for(self.received.get(), timeout)

    async def nothing_for(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.received.get(), seconds)
        except TimeoutError:
            return True
        return False


class Harness:
    """Opens queues over one storage; closes them all at the end."""

    def __init__(self, factory: Factory, dead_letters: Callable[[MessageQueue], object]) -> None:
        self._factory = factory
        self.dead_letters = dead_letters
        self._open: list[MessageQueue] = []

    async def open(self, collector: Collector | None = None, prefetch: int = 10) -> MessageQueue:
        queue = self._factory()
        if collector is not None:
            queue.consume(prefetch, collector)
        await queue.start()
        assert await queue.wait_ready(5)
        self._open.append(queue)
        return queue

    async def close(self, queue: MessageQueue) -> None:
        await queue.stop()
        self._open.remove(queue)

    async def close_all(self) -> None:
        for queue in list(self._open):
            await self.close(queue)


async def _rabbit_dead_letters(settings: Settings) -> list[str]:
    connection = await aio_pika.connect(
        host=RABBIT_HOST, port=RABBIT_PORT, virtualhost=settings.rabbit.virtual_host
    )
    ids = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology_for(settings).dead_letter_queue)
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            ids.append(str(message.message_id))
    return ids


@pytest.fixture(params=["rabbitmq", "sqlite"])
async def harness(
    request: pytest.FixtureRequest, rabbit_vhost: str, tmp_path: Path
) -> AsyncIterator[Harness]:
    if request.param == "rabbitmq":
        settings = make_settings(rabbit_vhost)

        async def rabbit_dead(_: MessageQueue) -> list[str]:
            return await _rabbit_dead_letters(settings)

        harness = Harness(lambda: RabbitQueue(settings.rabbit, topology_for(settings)), rabbit_dead)
    else:
        path = tmp_path / f"queue-{uuid.uuid4().hex[:6]}.sqlite3"

        async def sqlite_dead(queue: MessageQueue) -> list[str]:
            assert isinstance(queue, SqliteQueue)
            return [e.message_id for e in await queue.dead_letters()]

        harness = Harness(lambda: SqliteQueue(path, poll_interval=0.05), sqlite_dead)
    yield harness
    await harness.close_all()


def env(message_id: str, conversation: str = "1-2", **headers: object) -> Envelope:
    return Envelope("dm", message_id, conversation, {"n": message_id}, time.time(), dict(headers))


async def test_published_messages_arrive_in_order_and_ack_removes_them(harness: Harness) -> None:
    collector = Collector()
    queue = await harness.open(collector)
    await queue.publish([env("a"), env("b"), env("c")])
    got = [await collector.next() for _ in range(3)]
    assert [d.envelope.message_id for d in got] == ["a", "b", "c"]
    assert not any(d.redelivered for d in got)
    for delivery in got:
        await delivery.ack()
    await harness.close(queue)
    again = Collector()
    await harness.open(again)
    assert await again.nothing_for(0.5)


async def test_requeued_message_is_delivered_again(harness: Harness) -> None:
    collector = Collector()
    queue = await harness.open(collector)
    await queue.publish([env("r")])
    first = await collector.next()
    await first.requeue()
    second = await collector.next()
    assert second.envelope.message_id == "r"
    assert second.redelivered
    await second.ack()


async def test_unacked_messages_survive_a_restart(harness: Harness) -> None:
    collector = Collector()
    queue = await harness.open(collector)
    await queue.publish([env("s1"), env("s2")])
    await collector.next()
    await collector.next()
    await harness.close(queue)  # the process dies holding both
    after = Collector()
    await harness.open(after)
    got = [await after.next() for _ in range(2)]
    assert [d.envelope.message_id for d in got] == ["s1", "s2"]
    assert all(d.redelivered for d in got)
    for delivery in got:
        await delivery.ack()


async def test_parked_messages_come_back_at_once_in_order_ahead_of_earlier_ones(
    harness: Harness,
) -> None:
    publisher = await harness.open()
    await publisher.publish([env("later-1"), env("later-2")])
    not_before_ms = round((time.time() + 3600) * 1000)
    await publisher.park(
        [
            env("p1", **{HEADER_ATTEMPT: 2, HEADER_NOT_BEFORE: not_before_ms}),
            env("p2"),
            env("p3"),
        ]
    )
    collector = Collector()
    await harness.open(collector)
    got = [await collector.next() for _ in range(5)]
    # Not delayed by the queue: the consumer holds a parked message until its time.
    assert [d.envelope.message_id for d in got] == ["p1", "p2", "p3", "later-1", "later-2"]
    assert [d.envelope.headers.get(HEADER_PARKED) for d in got] == [1, 1, 1, None, None]
    assert got[0].envelope.headers[HEADER_ATTEMPT] == 2
    assert got[0].envelope.headers[HEADER_NOT_BEFORE] == not_before_ms  # exact to the ms
    assert all(d.valid for d in got)
    for delivery in got:
        await delivery.ack()


async def test_parked_messages_held_by_a_dead_process_come_back_before_fresh_ones(
    harness: Harness,
) -> None:
    # The order guarantee across a crash: whatever the dead process held, parked
    # messages are delivered before any message that was never parked.
    collector = Collector()
    queue = await harness.open(collector)
    await queue.publish([env("fresh-1")])
    assert (await collector.next()).envelope.message_id == "fresh-1"
    await queue.park([env("parked-1")])
    assert (await collector.next()).envelope.message_id == "parked-1"
    await queue.publish([env("fresh-2")])
    assert (await collector.next()).envelope.message_id == "fresh-2"
    await harness.close(queue)  # dies holding all three
    after = Collector()
    await harness.open(after)
    got = [await after.next() for _ in range(3)]
    assert [d.envelope.message_id for d in got] == ["parked-1", "fresh-1", "fresh-2"]
    for delivery in got:
        await delivery.ack()


async def test_a_checkpoint_overtakes_messages_queued_before_it(harness: Harness) -> None:
    publisher = await harness.open()
    await publisher.publish([env("later-1"), env("later-2")])
    await publisher.checkpoint(env("answered"))
    collector = Collector()
    await harness.open(collector)
    got = [await collector.next() for _ in range(3)]
    assert [d.envelope.message_id for d in got] == ["answered", "later-1", "later-2"]
    assert got[0].envelope.headers.get("x-checkpoint") == 1
    for delivery in got:
        await delivery.ack()


async def test_dead_letters_are_kept_and_not_delivered(harness: Harness) -> None:
    collector = Collector()
    queue = await harness.open(collector)
    await queue.dead_letter(env("dead"))
    assert await collector.nothing_for(0.5)
    assert await harness.dead_letters(queue) == ["dead"]  # type: ignore[misc]


async def test_prefetch_bounds_unacked_deliveries_of_a_shard(harness: Harness) -> None:
    # RabbitMQ applies prefetch per consumer, i.e. per shard (quorum queues have no
    # channel-wide prefetch): one conversation, so one shard, here. Published one at a
    # time: with rabbit.pack-publishes, envelopes published together share a message.
    collector = Collector()
    queue = await harness.open(collector, prefetch=2)
    for i in range(4):
        await queue.publish([env(f"m{i}")])
    first = [await collector.next(), await collector.next()]
    assert await collector.nothing_for(0.5)
    await first[0].ack()
    third = await collector.next()
    assert third.envelope.message_id not in {d.envelope.message_id for d in first}


async def test_writes_fail_loudly_when_the_queue_is_closed(harness: Harness) -> None:
    queue = await harness.open()
    await harness.close(queue)
    assert not queue.ready
    with pytest.raises(PublishError):
        await queue.publish([env("x")])
