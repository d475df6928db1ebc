"""The RabbitMQ adapter's own guarantees: parking, checkpoints, header fidelity, link loss."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import aio_pika
import aiormq
import pytest
from structlog.testing import capture_logs

from tests.conftest import make_settings, read_echo_stream, read_echo_stream_messages
from tests.support.rabbit import RABBIT_HOST, RABBIT_PORT
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually
from twitter_bot.app import build_queue, topology_for
from twitter_bot.metrics import Metrics
from twitter_bot.queue import rabbit as rabbit_module
from twitter_bot.queue.base import (
    HEADER_ATTEMPT,
    HEADER_NOT_BEFORE,
    HEADER_PARKED,
    Envelope,
    PublishError,
    QueueDelivery,
)
from twitter_bot.queue.rabbit import (
    Backoff,
    RabbitConnection,
    RabbitPublisher,
    RabbitQueue,
    own_headers,
)
from twitter_bot.settings import BrokerHost, Settings

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
    names = [topology.shard_queue(s) for s in range(topology.shards)]
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


async def test_a_parked_message_goes_to_the_head_of_its_shard_with_exact_headers(
    publisher: tuple[RabbitPublisher, Settings],
) -> None:
    pub, settings = publisher
    not_before_ms = 1_795_293_508_123
    later = Envelope("dm", "43", CONVERSATION, {"text": "later"}, time.time())
    await pub.publish([later])
    await pub.park([envelope(**{HEADER_NOT_BEFORE: not_before_ms, HEADER_ATTEMPT: 3})])
    topology = topology_for(settings)
    shard = topology.shard_queue(int(topology.routing_key_for(CONVERSATION).split(".")[1]))
    depths = await queue_depths(settings)
    assert {name: n for name, n in depths.items() if n} == {shard: 2}

    connection = await aio_pika.connect(
        host=RABBIT_HOST, port=RABBIT_PORT, virtualhost=settings.rabbit.virtual_host
    )
    async with connection:
        channel = await connection.channel()
        message = await (await channel.get_queue(shard)).get(no_ack=True)
        assert message is not None
        headers = own_headers(message.headers)
    assert message.priority == 1
    # Exact to the millisecond (a float header would be 32-bit and off by up to a minute).
    assert headers[HEADER_NOT_BEFORE] == not_before_ms
    assert headers[HEADER_ATTEMPT] == 3
    assert headers[HEADER_PARKED] == 1
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


async def test_deliveries_of_a_dropped_link_turn_invalid_and_come_again(rabbit_vhost: str) -> None:
    # The bridge relies on this to stop working on messages the broker has handed
    # to another instance: the held delivery reports invalid, `lost` is called, and
    # the message is delivered again (redelivered) on the new link.
    proxy = TcpProxy(RABBIT_HOST, RABBIT_PORT)
    await proxy.start()
    settings = make_settings(rabbit_vhost, port=proxy.port)
    received: asyncio.Queue[QueueDelivery] = asyncio.Queue()
    lost = asyncio.Event()
    queue = RabbitQueue(settings.rabbit, topology_for(settings))
    queue.consume(10, received.put_nowait, lost.set)
    await queue.start()
    try:
        assert await queue.wait_ready(5)
        await queue.publish([envelope()])
        held = await asyncio.wait_for(received.get(), 5)
        assert held.valid and not held.redelivered

        await proxy.cut()
        await asyncio.wait_for(lost.wait(), 5)
        assert not held.valid

        await proxy.restore()
        again = await asyncio.wait_for(received.get(), 15)
        assert again.envelope.message_id == held.envelope.message_id
        assert again.redelivered and again.valid
        await again.ack()
    finally:
        await queue.stop()
        await proxy.stop()


async def test_a_shard_probe_never_expires_into_the_dead_letters(
    publisher: tuple[RabbitPublisher, Settings],
) -> None:
    # A consumer whose prefetch is full of parked messages receives nothing for a while;
    # a probe with a TTL would then expire through the shard's dead-letter exchange and
    # show up as a dead letter (it did, in the chaos run's gateway outage).
    pub, settings = publisher
    await pub.probe(0)
    topology = topology_for(settings)
    connection = await aio_pika.connect(
        host=RABBIT_HOST, port=RABBIT_PORT, virtualhost=settings.rabbit.virtual_host
    )
    async with connection:
        channel = await connection.channel()
        probe = await (await channel.get_queue(topology.shard_queue(0))).get(no_ack=True)
        assert probe is not None
        assert probe.expiration is None
        dead = await channel.declare_queue(topology.dead_letter_queue, passive=True)
        assert dead.declaration_result.message_count == 0


async def test_echoes_published_together_share_messages_and_all_reach_the_reader(
    rabbit_vhost: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """X's echoes arriving at once go out as packs (one broker message and confirm for
    many); the reader unpacks them, and acks often enough to read past its prefetch."""
    monkeypatch.setattr(rabbit_module, "ECHO_PREFETCH", 20)
    monkeypatch.setattr(rabbit_module, "ECHO_ACK_EVERY", 5)
    settings = make_settings(rabbit_vhost)
    settings = replace(settings, messaging=replace(settings.messaging, resend_echo_wait=2.0))
    read: list[str] = []
    everything_read = asyncio.Event()

    def on_echo(echo: Envelope) -> None:
        read.append(echo.message_id)
        if len(read) == 150:
            everything_read.set()

    queue = build_queue(settings, Metrics())
    queue.consume_echoes(on_echo)
    await queue.start()
    try:
        assert await queue.wait_ready(5)
        echoes = [
            Envelope("echo", str(n), CONVERSATION, {"text": f"reply {n}"}, time.time())
            for n in range(150)
        ]
        await asyncio.gather(*(queue.publish_echoes([echo]) for echo in echoes[:100]))
        for echo in echoes[100:]:  # one message each: more than the reader's prefetch
            await queue.publish_echoes([echo])
        await asyncio.wait_for(everything_read.wait(), 10)
    finally:
        await queue.stop()
    assert sorted(read, key=int) == [str(n) for n in range(150)]
    messages = await read_echo_stream_messages(settings, expect=150)
    assert sorted((e.message_id for m in messages for e in m), key=int) == sorted(read, key=int)
    assert 50 < len(messages) < 150  # the first 100 shared messages, the last 50 did not


class FinishedReadings:
    """What a finished-answers reader hands over, in the order it does."""

    def __init__(self) -> None:
        self.events: list[str] = []  # message ids, and "caught up" / "behind"
        self.caught_up = asyncio.Event()

    def record(self, envelope: Envelope) -> None:
        self.events.append(envelope.message_id)

    def state(self, done: bool) -> None:
        self.events.append("caught up" if done else "behind")
        if done:
            self.caught_up.set()


def finished(message_id: str) -> Envelope:
    answer = [{"type": "text", "text": "echo: hi"}]
    return replace(envelope(), message_id=message_id, progress={"answer": answer, "sent": 1})


async def test_finished_answers_are_read_whole_and_the_reader_says_when_it_has_caught_up(
    rabbit_vhost: str,
) -> None:
    """A worker that (re)connects reads every finished answer recorded before it, and
    says it has caught up only after the last of them (a message looked up before then
    would miss one); records made later reach it too, and after a reconnect it reads
    them all again (it may have missed some meanwhile). Its end marker is not a record."""
    settings = make_settings(rabbit_vhost)
    writer = build_queue(settings, Metrics())
    await writer.start()
    proxy = TcpProxy(RABBIT_HOST, RABBIT_PORT)
    await proxy.start()
    readings = FinishedReadings()
    prefix = settings.rabbit.queue_prefix
    reader = build_queue(
        make_settings(rabbit_vhost, port=proxy.port, queue_prefix=prefix), Metrics()
    )
    reader.consume_finished(readings.record, readings.state)
    try:
        assert await writer.wait_ready(5) and writer.finished_supported
        for n in range(3):
            await writer.record_finished(finished(str(n)))
        await reader.start()
        await asyncio.wait_for(readings.caught_up.wait(), 5)
        assert readings.events == ["behind", "0", "1", "2", "caught up"]
        await writer.record_finished(finished("3"))
        await eventually(lambda: readings.events[-1] == "3")

        readings.events.clear()
        readings.caught_up.clear()
        await proxy.cut()
        while reader.ready:
            await asyncio.sleep(0.01)
        await proxy.restore()
        await asyncio.wait_for(readings.caught_up.wait(), 15)
        assert readings.events == ["behind", "0", "1", "2", "3", "caught up"]
    finally:
        await reader.stop()
        await writer.stop()
        await proxy.stop()


async def test_a_broker_refusing_the_echo_stream_still_carries_the_dms(rabbit_vhost: str) -> None:
    """Without streams (RabbitMQ before 3.9, or the feature flag off) the broker refuses
    the echo stream; here a classic queue of that name makes it refuse for real. The
    link still comes up and carries the DMs; the refusal is logged naming the setting,
    and neither echoes (echoes_ready is False for the webhook) nor finished answers are
    recorded."""
    settings = make_settings(rabbit_vhost)
    settings = replace(settings, messaging=replace(settings.messaging, resend_echo_wait=2.0))
    connection = await aio_pika.connect(
        host=RABBIT_HOST, port=RABBIT_PORT, virtualhost=rabbit_vhost
    )
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(topology_for(settings).echo_stream, durable=True)

    received: asyncio.Queue[QueueDelivery] = asyncio.Queue()
    readings = FinishedReadings()
    queue = build_queue(settings, Metrics())
    queue.consume_echoes(lambda echo: None)
    queue.consume_finished(readings.record, readings.state)
    queue.consume(8, received.put_nowait)
    with capture_logs() as logs:
        await queue.start()
        try:
            assert await queue.wait_ready(5)
            assert queue.echoes_supported and not queue.echoes_ready
            with pytest.raises(PublishError):
                await queue.publish_echoes([envelope()])
            with pytest.raises(PublishError):
                await queue.record_finished(finished("42"))
            # Nothing to read, so nothing to wait for before a message is looked up.
            await asyncio.wait_for(readings.caught_up.wait(), 5)
            await queue.publish([envelope()])
            delivery = await asyncio.wait_for(received.get(), 5)
            assert delivery.envelope.message_id == "42"
            await delivery.ack()
        finally:
            await queue.stop()
    [refused] = [log for log in logs if log["event"] == "broker.streams_refused"]
    assert refused["log_level"] == "error"
    assert "resend-echo-wait" in refused["setting"]
    assert not [log for log in logs if log["event"] == "broker.setup_failed"]


async def test_stop_ends_the_reconnect_loop_even_when_a_connect_attempt_loses_the_cancel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aio-pika/aiormq can turn a cancel that lands as a connect attempt fails into the
    connect error. stop() must still end the supervisor, not wait on it forever."""
    attempts = 0

    async def connect_that_loses_the_cancel(**_: object) -> None:
        nonlocal attempts
        attempts += 1
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.2)
        raise aiormq.exceptions.AMQPConnectionError("connection refused")

    monkeypatch.setattr(rabbit_module.aio_pika, "connect", connect_that_loses_the_cancel)
    connection = RabbitConnection(
        (BrokerHost("127.0.0.1", 1),),
        username="guest",
        password="guest",
        virtual_host="/",
        connect_timeout=0.2,
        heartbeat=30,
        backoff=Backoff(initial=0.01, maximum=0.01),
    )
    connection.start()
    await asyncio.sleep(0.05)  # inside the first attempt
    await asyncio.wait_for(connection.stop(), 2)
    assert attempts == 1


async def test_echoes_taken_while_the_link_is_down_reach_the_stream_at_the_next_connect(
    rabbit_vhost: str,
) -> None:
    """X may never deliver an echo again, and echoes matter most right after an outage
    (the replies in doubt are resumed then): one that comes while the link is down is
    held and appended when the link is back, and the readers get it."""
    proxy = TcpProxy(RABBIT_HOST, RABBIT_PORT)
    await proxy.start()
    settings = make_settings(rabbit_vhost, port=proxy.port)
    read: asyncio.Queue[str] = asyncio.Queue()
    queue = build_queue(settings, Metrics())
    queue.consume_echoes(lambda echo: read.put_nowait(echo.message_id))
    await queue.start()
    try:
        assert await queue.wait_ready(5)
        await proxy.cut()
        while queue.ready:
            await asyncio.sleep(0.01)
        echo = Envelope("echo", "77", CONVERSATION, {"text": "reply"}, time.time())
        await queue.publish_echoes([echo])  # held, not an error: X would not send it again
        await proxy.restore()
        assert await asyncio.wait_for(read.get(), 15) == "77"
    finally:
        await queue.stop()
        await proxy.stop()
    assert [e.message_id for e in await read_echo_stream(settings, expect=1)] == ["77"]
