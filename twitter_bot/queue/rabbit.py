"""The RabbitMQ adapter: a supervised connection, the topology, confirmed publishing.

aio-pika's robust connection is deliberately not used: its publishes can hang on
a dead connection and it never re-publishes unconfirmed messages. Instead one
supervisor task owns the connection, walks the configured hosts with capped,
jittered backoff, and publishing fails fast while it is down, so the webhook
can answer 503 and X redelivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    DeliveryMode,
)

from twitter_bot.queue.base import (
    FINISHED_MARKER_KIND,
    HEADER_ATTEMPT,
    HEADER_BOT_ID,
    HEADER_CHECKPOINT,
    HEADER_DEAD_AT,
    HEADER_DEAD_REASON,
    HEADER_ERROR_BODY,
    HEADER_ERROR_CODE,
    HEADER_ERROR_KIND,
    HEADER_ERROR_STATUS,
    HEADER_NOT_BEFORE,
    HEADER_PARKED,
    HEADER_REDRIVEN,
    Envelope,
    PublishError,
    QueueDelivery,
    shard_of,
)
from twitter_bot.queue.packing import (
    MAX_PACK,
    PACK_HEADER,
    PackSettlement,
    ShardPacker,
    decode_pack,
    encode_pack,
)
from twitter_bot.settings import BrokerHost, RabbitSettings

log = structlog.get_logger(__name__)

ConnectedCallback = Callable[[AbstractConnection], Awaitable[None]]


PROBE_HEADER = "twitter-bot-probe"
# How long the echo stream keeps X's echoes, and how far back an instance reads it when
# it subscribes: a reply is in doubt only in the seconds after a crash or failover (a
# survivor has been reading all along; a restarted process needs its restart time).
# Chaos, SIGKILL x12 at 400 echoes/s: 60 s had the restarted process read ~24,000
# echoes as it took over, and duplicates rose to 13 (12 asked again); 15 s gave 0.
ECHO_STREAM_MAX_AGE = "10m"
ECHO_LOOKBACK = 15.0
ECHO_PREFETCH = 1000
# A stream counts acks only for flow control: one ack (multiple) per this many echo
# messages keeps the consumer's credit well inside ECHO_PREFETCH at a tenth of the frames.
ECHO_ACK_EVERY = 100
# Echoes held while the broker link is down, newest kept (about 0.5 KB each).
ECHO_HOLD = 10_000
ECHO_CLOSE_TIMEOUT = 1.0
# The finished-answers stream (bridge/finished.py): a few records, read whole at every
# connect; they matter while a crashed process's messages can still come back, which a
# gateway or X outage stretches to minutes.
FINISHED_STREAM_MAX_AGE = "10m"
FINISHED_PREFETCH = 100


@dataclass(frozen=True)
class Topology:
    """Names of the exchanges and queues, all derived from one prefix."""

    prefix: str
    shards: int
    # "quorum": replicated queues for a cluster. They take no priorities, so
    # checkpoints cannot overtake and are not used (see checkpoints_enabled).
    queue_type: str = "classic"
    delivery_limit: int = 20
    # The streams (X's echoes, the finished answers) exist only where they are used
    # (resend-echo-wait, classic queues); a broker that refuses them costs what they
    # add to resuming after a crash, nothing else (declare_streams).
    with_streams: bool = False

    @property
    def checkpoints_enabled(self) -> bool:
        return self.queue_type == "classic"

    @property
    def exchange(self) -> str:
        return self.prefix

    def shard_routing_key(self, shard: int) -> str:
        return f"incoming.{shard}"

    def shard_queue(self, shard: int) -> str:
        return f"{self.prefix}.incoming.{shard}"

    @property
    def dead_letter_routing_key(self) -> str:
        return "dead-letter"

    @property
    def echo_stream(self) -> str:
        return f"{self.prefix}.echoes"

    @property
    def echo_routing_key(self) -> str:
        return "echo"

    @property
    def finished_stream(self) -> str:
        return f"{self.prefix}.finished"

    @property
    def finished_routing_key(self) -> str:
        return "finished"

    @property
    def streams(self) -> tuple[tuple[str, str, str], ...]:
        """Each stream: its name, its routing key and how long it keeps entries."""
        return (
            (self.echo_stream, self.echo_routing_key, ECHO_STREAM_MAX_AGE),
            (self.finished_stream, self.finished_routing_key, FINISHED_STREAM_MAX_AGE),
        )

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.dead-letter"

    def routing_key_for(self, conversation_id: str) -> str:
        return self.shard_routing_key(shard_of(conversation_id, self.shards))


def shard_queue_arguments(topology: Topology) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        # One active consumer per shard keeps a conversation's messages in order
        # even when several instances consume the same broker.
        "x-single-active-consumer": True,
        # A message the bridge cannot even decode is rejected into the dead letters.
        "x-dead-letter-exchange": topology.exchange,
        "x-dead-letter-routing-key": topology.dead_letter_routing_key,
    }
    if topology.queue_type == "quorum":
        # A message that keeps crashing its consumer is dead-lettered, not looped.
        arguments |= {"x-queue-type": "quorum", "x-delivery-limit": topology.delivery_limit}
    else:
        # Checkpoints (priority 1) are delivered before the messages queued behind
        # them, so a conversation resumes in order after a crash.
        arguments["x-max-priority"] = 1
    return arguments


def _type_arguments(topology: Topology) -> dict[str, Any]:
    return {"x-queue-type": "quorum"} if topology.queue_type == "quorum" else {}


async def declare_topology(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """Declare (idempotently) the exchange, the shard queues and the dead-letter queue."""
    exchange = await channel.declare_exchange(
        topology.exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    for shard in range(topology.shards):
        queue = await channel.declare_queue(
            topology.shard_queue(shard),
            durable=True,
            arguments=shard_queue_arguments(topology),
        )
        await queue.bind(exchange, topology.shard_routing_key(shard))
    dead_letters = await channel.declare_queue(
        topology.dead_letter_queue, durable=True, arguments=_type_arguments(topology)
    )
    await dead_letters.bind(exchange, topology.dead_letter_routing_key)
    return exchange


async def declare_streams(conn: AbstractConnection, topology: Topology) -> bool:
    """Declare the echo and finished-answers streams on a channel of their own; False
    (logged) if the broker refuses them.

    Both are records every instance reads in full, also those from before it
    (re)started, and they age out alone: X's echoes of the bots' DMs
    (bridge/echoes.py) and the answers finished after a crash before their messages
    came back (bridge/finished.py). A broker without streams (RabbitMQ before 3.9, or
    the stream_queue feature flag off) refuses them, and that closes the channel, not
    the link: the daemon runs on without them rather than not at all.
    """
    channel = await conn.channel()
    try:
        for stream, routing_key, max_age in topology.streams:
            queue = await channel.declare_queue(
                stream, durable=True, arguments={"x-queue-type": "stream", "x-max-age": max_age}
            )
            await queue.bind(topology.exchange, routing_key)
    except aiormq.exceptions.ChannelClosed as exc:  # PRECONDITION_FAILED, NOT_ALLOWED...
        log.error(
            "broker.streams_refused",
            streams=[name for name, _, _ in topology.streams],
            error=str(exc)[:300],
            effect="after a crash, a reply in doubt and an answer finished while its "
            "message was held elsewhere may be sent again",
            setting="chatbots.twitter-bot.webhooks-messaging.resend-echo-wait "
            "(needs RabbitMQ 3.9+ with streams; 0 turns them off)",
        )
        return False
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
    return True


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with full jitter."""

    initial: float = 0.2
    maximum: float = 5.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.maximum, self.initial * 2**attempt))


class RabbitConnection:
    """Keeps one connection to the first reachable broker host, reconnecting forever.

    ``start`` launches the supervisor task; ``stop`` cancels and awaits it and
    closes the connection. ``on_connected`` callbacks run after each (re)connect
    so consumers can re-subscribe.
    """

    def __init__(
        self,
        hosts: tuple[BrokerHost, ...],
        *,
        username: str,
        password: str,
        virtual_host: str,
        connect_timeout: float,
        heartbeat: int,
        backoff: Backoff = Backoff(),
    ) -> None:
        self._hosts = hosts
        self._username = username
        self._password = password
        self._virtual_host = virtual_host
        self._connect_timeout = connect_timeout
        self._heartbeat = heartbeat
        self._backoff = backoff
        self._connection: AbstractConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._callbacks: list[ConnectedCallback] = []
        self._connected = asyncio.Event()
        self._lost: asyncio.Event | None = None
        self._stopping = False
        self.current_host: BrokerHost | None = None

    def on_connected(self, callback: ConnectedCallback) -> None:
        self._callbacks.append(callback)

    @property
    def connection(self) -> AbstractConnection | None:
        conn = self._connection
        if conn is None or conn.is_closed:
            return None
        return conn

    async def wait_connected(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self.connection is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="rabbit-supervisor")

    def reconnect(self, reason: str) -> None:
        """Drop the current connection and connect again (e.g. a channel we need died)."""
        if self._lost is not None and not self._lost.is_set():
            log.warning("broker.reconnecting", reason=reason)
            self._lost.set()

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        conn, self._connection = self._connection, None
        self._connected.clear()
        if conn is not None and not conn.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), self._connect_timeout)

    async def _supervise(self) -> None:
        # ``_stopping`` as well as the cancel: a cancel that lands as a connect attempt
        # fails can be lost inside aio-pika/aiormq (the attempt runs in a task of its own
        # and its error is raised instead), and this loop would retry forever while stop()
        # waits for it (seen once: a test's teardown hung for 60 s).
        attempt = 0
        while not self._stopping:
            for host in self._hosts:
                conn = await self._try_connect(host)
                if self._stopping:
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            await conn.close()
                    return
                if conn is None:
                    continue
                attempt = 0
                await self._serve(conn, host)
            await asyncio.sleep(self._backoff.delay(attempt))
            attempt += 1

    async def _try_connect(self, host: BrokerHost) -> AbstractConnection | None:
        try:
            return await aio_pika.connect(
                host=host.host,
                port=host.port,
                login=self._username,
                password=self._password,
                virtualhost=self._virtual_host,
                timeout=self._connect_timeout,
                client_properties={"connection_name": "twitter-bot"},
                heartbeat=self._heartbeat,
            )
        except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as exc:
            log.warning("broker.connect_failed", host=host.host, port=host.port, error=str(exc))
            return None

    async def _serve(self, conn: AbstractConnection, host: BrokerHost) -> None:
        """Run the connected callbacks, then wait until the connection closes."""
        try:
            for callback in self._callbacks:
                await callback(conn)
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
            log.warning("broker.setup_failed", host=host.host, error=str(exc))
            with contextlib.suppress(Exception):
                await conn.close()
            return
        # conn.closed() resolves only on an explicit close(); the close callbacks
        # also fire when the socket drops or heartbeats time out.
        lost = self._lost = asyncio.Event()
        conn.close_callbacks.add(lambda *_: lost.set())
        self._connection = conn
        self.current_host = host
        self._connected.set()
        log.info("broker.connected", host=host.host, port=host.port)
        try:
            await lost.wait()
        finally:
            self._lost = None
            self._connected.clear()
            self._connection = None
            self.current_host = None
            with contextlib.suppress(Exception):
                await conn.close()
        log.warning("broker.connection_lost", host=host.host, port=host.port)


class RabbitPublisher:
    """Publishes persistent, mandatory messages on a confirm channel and waits for the confirms.

    With ``pack``, envelopes published at the same moment to one shard go out as one
    message (queue/packing.py); classic queues only, the only kind it was measured on
    (a quorum queue's delivery limit would also count a whole pack's redeliveries).
    """

    def __init__(
        self,
        connection: RabbitConnection,
        topology: Topology,
        *,
        confirm_timeout: float,
        on_confirmed: Callable[[float], None] | None = None,
        pack: bool = False,
        on_packed: Callable[[int], None] | None = None,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._confirm_timeout = confirm_timeout
        self._on_confirmed = on_confirmed
        self._pack = pack and topology.checkpoints_enabled
        self._on_packed = on_packed
        self._packers: dict[int, ShardPacker] = {}
        # Echoes are always packed: at X's pace (one per reply) a broker message, confirm
        # and stream entry each cost more than the echo is worth (bench/echo_cost.py).
        self._echo_packer = ShardPacker(self._send_echo_pack)
        self._held_echoes: deque[Envelope] = deque(maxlen=ECHO_HOLD)
        # Whether the broker refused the streams at the last connect (declare_streams).
        self.streams_refused = False
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        connection.on_connected(self._open_channel)

    @property
    def topology(self) -> Topology:
        return self._topology

    async def _open_channel(self, conn: AbstractConnection) -> None:
        # on_return_raises turns an unroutable mandatory message into an error
        # instead of a silent drop (aio-pika's default).
        channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
        self._exchange = await declare_topology(channel, self._topology)
        if self._topology.with_streams:
            self.streams_refused = not await declare_streams(conn, self._topology)
            if not self.streams_refused:
                await self._append_held_echoes(self._exchange)
        self._channel = channel

    @property
    def ready(self) -> bool:
        channel = self._channel
        return (
            self._connection.connection is not None
            and channel is not None
            and not channel.is_closed
        )

    def _require_exchange(self) -> AbstractExchange:
        if not self.ready or self._exchange is None:
            raise PublishError("broker not connected")
        return self._exchange

    async def publish(self, envelopes: list[Envelope]) -> None:
        """Queue envelopes on their conversations' shards; raise PublishError unless all confirm."""
        main = self._require_exchange()
        started = time.perf_counter()
        # Only envelopes without headers of their own pack: a pack entry carries none.
        if self._pack and not any(env.headers for env in envelopes):
            await self._publish_packed(envelopes)
        else:
            await self._confirm_all(
                [
                    (main, self._topology.routing_key_for(env.conversation_id), _message(env))
                    for env in envelopes
                ]
            )
        if self._on_confirmed is not None:
            self._on_confirmed(time.perf_counter() - started)

    async def _publish_packed(self, envelopes: list[Envelope]) -> None:
        by_shard: dict[int, list[Envelope]] = {}
        for envelope in envelopes:
            shard = shard_of(envelope.conversation_id, self._topology.shards)
            by_shard.setdefault(shard, []).append(envelope)
        packers = []
        for shard, group in by_shard.items():
            packer = self._packers.get(shard)
            if packer is None:
                packer = self._packers[shard] = ShardPacker(partial(self._send_pack, shard))
            packers.append(packer.publish(group))
        try:
            async with asyncio.timeout(self._confirm_timeout):
                if len(packers) == 1:
                    await packers[0]
                else:
                    await asyncio.gather(*packers)
        except TimeoutError as exc:
            raise PublishError("publish not confirmed in time") from exc

    async def publish_echoes(self, envelopes: list[Envelope]) -> None:
        """Append X's echoes to the echo stream; PublishError if the broker refuses it.

        While the link is down they are held here (the newest ECHO_HOLD) and appended at
        the next connect, before the consumers subscribe: they are evidence, not work,
        and X may never deliver them again, yet they matter most right after an outage,
        when the replies in doubt are resumed from checkpoints.
        """
        if self.streams_refused:
            raise PublishError("the broker refused the echo stream")
        try:
            self._require_exchange()
            async with asyncio.timeout(self._confirm_timeout):
                await self._echo_packer.publish(envelopes)
        except (PublishError, TimeoutError) as exc:
            self._held_echoes.extend(envelopes)
            log.info("broker.echoes_held", count=len(envelopes), error=str(exc))

    async def record_finished(self, envelope: Envelope) -> None:
        """Append an envelope to the finished-answers stream; PublishError unless confirmed."""
        if self.streams_refused:
            raise PublishError("the broker refused the finished-answers stream")
        try:
            async with asyncio.timeout(self._confirm_timeout):
                await self._send_packed(self._topology.finished_routing_key, [envelope])
        except TimeoutError as exc:
            raise PublishError("record not confirmed in time") from exc

    async def _append_held_echoes(self, exchange: AbstractExchange) -> None:
        """At a connect (on its new channel's ``exchange``): append the echoes held while
        the link was down, in packs."""
        held, self._held_echoes = list(self._held_echoes), deque(maxlen=ECHO_HOLD)
        for start in range(0, len(held), MAX_PACK):
            message = _message_of(held[start : start + MAX_PACK])
            try:
                async with asyncio.timeout(self._confirm_timeout):
                    await exchange.publish(
                        message, routing_key=self._topology.echo_routing_key, mandatory=True
                    )
            except Exception as exc:  # the link dropped again: hold the rest
                self._held_echoes.extendleft(reversed(held[start:]))
                log.warning("broker.held_echoes_not_appended", error=repr(exc)[:200])
                return
        if held:
            log.info("broker.held_echoes_appended", count=len(held))

    async def _send_pack(self, shard: int, envelopes: list[Envelope]) -> None:
        await self._send_packed(self._topology.shard_routing_key(shard), envelopes)
        if self._on_packed is not None:
            self._on_packed(len(envelopes))

    async def _send_echo_pack(self, envelopes: list[Envelope]) -> None:
        await self._send_packed(self._topology.echo_routing_key, envelopes)

    async def _send_packed(self, routing_key: str, envelopes: list[Envelope]) -> None:
        exchange = self._require_exchange()
        message = _message_of(envelopes)
        try:
            await exchange.publish(message, routing_key=routing_key, mandatory=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Nacked, returned as unroutable, or the channel died: not durable.
            raise PublishError(f"publish failed: {type(exc).__name__}") from exc

    async def park(self, envelopes: list[Envelope]) -> None:
        """Queue envelopes at the head of their shards (priority 1), strictly in this order.

        One at a time, each confirmed before the next is sent, so the broker
        enqueues them in order. Quorum queues (RabbitMQ 3.10-3.11) have no
        priorities: there they go to the tail (README, "Quorum queues").
        """
        exchange = self._require_exchange()
        priority = 1 if self._topology.checkpoints_enabled else 0
        for envelope in envelopes:
            message = _message(envelope, extra_headers={HEADER_PARKED: 1}, priority=priority)
            routing_key = self._topology.routing_key_for(envelope.conversation_id)
            await self._confirm_all([(exchange, routing_key, message)])

    async def checkpoint(self, envelope: Envelope) -> None:
        """Queue a copy carrying the bot's answer ahead of its conversation's later messages."""
        main = self._require_exchange()
        routing_key = self._topology.routing_key_for(envelope.conversation_id)
        message = _message(envelope, extra_headers={HEADER_CHECKPOINT: 1}, priority=1)
        await self._confirm_all([(main, routing_key, message)])

    async def probe(self, shard: int) -> None:
        """A transient marker on a shard, so its active consumer knows it is active."""
        message = aio_pika.Message(
            body=b"{}",
            delivery_mode=DeliveryMode.NOT_PERSISTENT,
            headers={PROBE_HEADER: 1},
            priority=1 if self._topology.checkpoints_enabled else 0,
            # No TTL: an expired probe would dead-letter (the shard queue's DLX) into
            # the dead letters while a consumer waits with its prefetch full of
            # parked messages. Probes come only from consuming instances and are
            # acked on arrival, so they cannot pile up beyond such a wait.
        )
        main = self._require_exchange()
        await self._confirm_all([(main, self._topology.shard_routing_key(shard), message)])

    async def dead_letter(self, envelope: Envelope) -> None:
        """Move an envelope (with its reason headers) to the dead-letter queue."""
        main = self._require_exchange()
        await self._confirm_all(
            [(main, self._topology.dead_letter_routing_key, _message(envelope))]
        )

    async def _confirm_all(
        self, publishes: list[tuple[AbstractExchange, str, aio_pika.Message]]
    ) -> None:
        try:
            async with asyncio.timeout(self._confirm_timeout):
                if len(publishes) == 1:  # the common case, without gather's extra task
                    exchange, key, message = publishes[0]
                    results: list[Any] = [None]
                    try:
                        await exchange.publish(message, routing_key=key, mandatory=True)
                    except TimeoutError:
                        raise
                    except Exception as exc:  # as gather(return_exceptions=True) would
                        results = [exc]
                else:
                    results = await asyncio.gather(
                        *(
                            exchange.publish(message, routing_key=key, mandatory=True)
                            for exchange, key, message in publishes
                        ),
                        return_exceptions=True,
                    )
        except TimeoutError as exc:
            raise PublishError("publish not confirmed in time") from exc
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            # Nacked, returned as unroutable, or the channel died: not durable.
            raise PublishError(f"publish failed: {type(failures[0]).__name__}") from failures[0]


def _message(
    envelope: Envelope, extra_headers: dict[str, Any] | None = None, priority: int = 0
) -> aio_pika.Message:
    return aio_pika.Message(
        body=envelope.encode(),
        content_type="application/json",
        delivery_mode=DeliveryMode.PERSISTENT,
        priority=priority,
        message_id=envelope.message_id,
        headers={
            "x-conversation-id": envelope.conversation_id,
            **envelope.headers,
            **(extra_headers or {}),
        },
    )


def _message_of(envelopes: list[Envelope]) -> aio_pika.Message:
    """One envelope as it travels alone; several as one pack."""
    return _message(envelopes[0]) if len(envelopes) == 1 else _pack_message(envelopes)


def _pack_message(envelopes: list[Envelope]) -> aio_pika.Message:
    return aio_pika.Message(
        body=encode_pack(envelopes),
        content_type="application/json",
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=f"pack-{envelopes[0].message_id}+{len(envelopes) - 1}",
        headers={PACK_HEADER: len(envelopes)},
    )


# Headers of ours that travel with an envelope; broker-added ones (x-death) are dropped.
_OWN_HEADERS = frozenset(
    {
        HEADER_ATTEMPT,
        HEADER_NOT_BEFORE,
        HEADER_DEAD_REASON,
        HEADER_ERROR_KIND,
        HEADER_ERROR_STATUS,
        HEADER_ERROR_CODE,
        HEADER_ERROR_BODY,
        HEADER_DEAD_AT,
        HEADER_BOT_ID,
        HEADER_CHECKPOINT,
        HEADER_REDRIVEN,
        HEADER_PARKED,
    }
)


def own_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: value.decode() if isinstance(value, bytes) else value
        for key, value in headers.items()
        if key in _OWN_HEADERS
    }


def decode_message(body: bytes, headers: Mapping[str, Any]) -> list[Envelope]:
    """The envelopes a shard queue message carries: one, or a pack's (queue/packing.py).

    Raises ValueError (or KeyError/TypeError) when the body is malformed.
    """
    if headers.get(PACK_HEADER):
        return decode_pack(body)
    return [Envelope.decode(body, own_headers(headers))]


class RabbitDelivery:
    """One consumed envelope: a whole message, or one part of a pack, acked or requeued on
    the channel it came from (a pack only once all its parts are settled)."""

    def __init__(
        self,
        message: AbstractIncomingMessage,
        envelope: Envelope,
        channel: AbstractChannel,
        pack: tuple[PackSettlement, int] | None = None,
        holding_pack: Callable[[], PackSettlement | None] | None = None,
    ) -> None:
        """``pack``: this is that part of a pack. ``holding_pack()``: for a checkpoint,
        the pack on this channel that holds its message, if any."""
        self._message = message
        self._envelope = envelope
        self._channel = channel
        self._pack = pack
        self._holding_pack = holding_pack

    @property
    def valid(self) -> bool:
        # Acks only count on the channel that received the message: once it is
        # closed, the broker has requeued the message for another consumer.
        return not self._channel.is_closed

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    @property
    def redelivered(self) -> bool:
        return bool(self._message.redelivered)

    @property
    def ack_settles(self) -> bool:
        if self._pack is None:
            return True
        settlement, part = self._pack
        return settlement.acked_by(part)

    async def ack(self) -> None:
        holding = self._holding_pack() if self._holding_pack is not None else None
        if self._pack is not None:
            settlement, part = self._pack
            await settlement.settle(part, done=True)
        elif holding is not None:
            # A checkpoint of a message in a pack: it is settled as the pack is.
            await holding.settle_with(
                self._message.ack,
                partial(self._message.nack, requeue=True),
                key=self._envelope.message_id,
                # A DM's checkpoints are published, so delivered, oldest first.
                rank=self._message.delivery_tag or 0,
            )
        else:
            await self._message.ack()

    async def requeue(self) -> None:
        if self._pack is not None:
            settlement, part = self._pack
            await settlement.settle(part, done=False)
        else:
            await self._message.nack(requeue=True)


def _holding_pack(
    open_packs: dict[str, PackSettlement], message_id: str
) -> Callable[[], PackSettlement | None]:
    """The pack a checkpoint of ``message_id`` goes with: the one open when the checkpoint
    arrived (even if settled since), else one that opened later and is still open."""
    at_arrival = open_packs.get(message_id)

    def holding() -> PackSettlement | None:
        if at_arrival is not None:
            return at_arrival
        settlement = open_packs.get(message_id)
        return settlement if settlement is not None and settlement.open else None

    return holding


class RabbitConsumer:
    """Consumes every shard queue with manual acks and hands deliveries over without blocking.

    Subscribes again after every reconnect; deliveries of a lost channel are
    redelivered by the broker.
    """

    def __init__(
        self,
        connection: RabbitConnection,
        topology: Topology,
        *,
        prefetch: int,
        deliver: Callable[[RabbitDelivery], None],
        lost: Callable[[], None] | None = None,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._prefetch = prefetch
        self._deliver = deliver
        self._lost = lost
        self._channel: AbstractChannel | None = None
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._last_delivery: dict[int, float] = {}
        # Message id -> the open pack holding it, on the current channel.
        self._open_packs: dict[str, PackSettlement] = {}
        self._stopped = False
        connection.on_connected(self._subscribe)

    async def _subscribe(self, conn: AbstractConnection) -> None:
        if self._stopped:
            return
        channel = await conn.channel()
        await channel.set_qos(prefetch_count=self._prefetch)
        self._open_packs = {}  # the old channel's packs went back to the broker
        consumers = []
        for shard in range(self._topology.shards):
            queue = await channel.get_queue(self._topology.shard_queue(shard), ensure=True)
            callback = partial(self._on_message, shard, channel)
            consumers.append((queue, await queue.consume(callback)))
        channel.close_callbacks.add(self._on_channel_closed)
        self._channel, self._consumers = channel, consumers

    def _on_channel_closed(self, *_: Any) -> None:
        # Every unacked delivery of this channel goes back to the broker, which
        # may hand it to another instance: the bridge must drop what it holds.
        if self._stopped:
            return
        log.warning("broker.consumer_channel_lost")
        if self._lost is not None:
            self._lost()
        # A channel can die alone (the broker's consumer_timeout, a channel error):
        # consuming only resumes with a new subscription, so start over.
        self._connection.reconnect("consumer channel closed")

    def active_shards(self, within: float) -> list[int]:
        """Shards this consumer received anything on (a message or a probe) lately.

        With single active consumer only the active instance receives a shard's
        messages; workers probe every shard so an idle active shard shows too.
        """
        now = time.monotonic()
        return sorted(s for s, at in self._last_delivery.items() if now - at <= within)

    async def _on_message(
        self, shard: int, channel: AbstractChannel, message: AbstractIncomingMessage
    ) -> None:
        self._last_delivery[shard] = time.monotonic()
        if message.headers.get(PROBE_HEADER):
            await message.ack()
            return
        try:
            envelopes = decode_message(message.body, message.headers)
        except (ValueError, KeyError, TypeError) as exc:
            log.error(
                "bridge.undecodable_message", error=str(exc)[:200], message_id=message.message_id
            )
            await message.reject(requeue=False)
            return
        if not message.headers.get(PACK_HEADER):
            holding = None
            if message.headers.get(HEADER_CHECKPOINT):
                holding = _holding_pack(self._open_packs, envelopes[0].message_id)
            self._deliver(RabbitDelivery(message, envelopes[0], channel, holding_pack=holding))
            return
        settlement = PackSettlement(
            len(envelopes), ack=message.ack, requeue=partial(message.nack, requeue=True)
        )
        open_packs = self._open_packs
        ids = [envelope.message_id for envelope in envelopes]
        for message_id in ids:
            open_packs[message_id] = settlement

        async def forget() -> None:
            for message_id in ids:
                if open_packs.get(message_id) is settlement:
                    del open_packs[message_id]

        await settlement.settle_with(forget, forget)
        for part, envelope in enumerate(envelopes):
            self._deliver(RabbitDelivery(message, envelope, channel, (settlement, part)))

    async def stop(self) -> None:
        """Stop receiving new deliveries; in-flight ones can still be acked."""
        self._stopped = True
        consumers, self._consumers = self._consumers, []
        for queue, tag in consumers:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()


class StreamReader:
    """Reads one stream on a channel of its own, from ``_offset()`` at every (re)connect,
    and hands each envelope over (repeats included)."""

    def __init__(
        self,
        connection: RabbitConnection,
        topology: Topology,
        stream: str,
        deliver: Callable[[Envelope], None],
        prefetch: int,
    ) -> None:
        self._topology = topology
        self._stream = stream
        self._deliver = deliver
        self._prefetch = prefetch
        self._ack_every = max(1, min(ECHO_ACK_EVERY, prefetch // 2))
        self._unacked = 0
        self._channel: AbstractChannel | None = None
        self._stopped = False
        connection.on_connected(self._subscribe)

    def _offset(self) -> Any:
        raise NotImplementedError

    def _subscribing(self) -> None:
        """Called before the consumer is in place (it may get entries at once)."""

    async def _subscribed(self, channel: AbstractChannel) -> None:
        """Called once the consumer is in place."""

    def _unreadable(self) -> None:
        """Called when the stream cannot be read at this connect."""

    def _take(self, envelope: Envelope) -> None:
        self._deliver(envelope)

    async def _subscribe(self, conn: AbstractConnection) -> None:
        if self._stopped:
            return
        channel = await conn.channel()
        self._unacked = 0  # a new channel's delivery tags start again
        await channel.set_qos(prefetch_count=self._prefetch)  # a stream consumer needs one
        try:
            stream = await channel.get_queue(self._stream, ensure=True)
            self._subscribing()
            await stream.consume(self._on_message, arguments={"x-stream-offset": self._offset()})
        except aiormq.exceptions.ChannelClosed as exc:
            # No stream (declare_streams logged why): the rest of the link is fine.
            log.warning("broker.stream_not_read", stream=self._stream, error=str(exc)[:200])
            self._unreadable()
            return
        channel.close_callbacks.add(self._on_channel_closed)
        self._channel = channel
        await self._subscribed(channel)

    def _on_channel_closed(self, *_: Any) -> None:
        if not self._stopped:
            # Not worth a reconnect of everything: the next one subscribes again.
            log.warning("broker.stream_channel_lost", stream=self._stream)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            envelopes = decode_message(message.body, message.headers)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "broker.undecodable_stream_entry", stream=self._stream, error=str(exc)[:200]
            )
        else:
            for envelope in envelopes:
                self._take(envelope)
        self._unacked += 1
        if self._unacked >= self._ack_every:
            self._unacked = 0
            with contextlib.suppress(Exception):  # only flow control: see ECHO_ACK_EVERY
                await message.ack(multiple=True)

    async def stop(self) -> None:
        self._stopped = True
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            # Nothing to settle here, so a stalled broker gets a second, not the shutdown
            # bound: the connection's close ends the channel anyway.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(ECHO_CLOSE_TIMEOUT):
                    await channel.close()


class EchoReader(StreamReader):
    """Reads the echo stream from ``ECHO_LOOKBACK`` seconds back at every (re)connect."""

    def __init__(
        self,
        connection: RabbitConnection,
        topology: Topology,
        deliver: Callable[[Envelope], None],
        lookback: float = ECHO_LOOKBACK,
    ) -> None:
        super().__init__(connection, topology, topology.echo_stream, deliver, ECHO_PREFETCH)
        self._lookback = lookback

    def _offset(self) -> Any:
        return datetime.now(UTC) - timedelta(seconds=self._lookback)


class FinishedReader(StreamReader):
    """Reads the whole finished-answers stream at every (re)connect, and says when it has
    read all that was in it: it appends a marker of its own once subscribed, and is
    caught up when the marker comes back (a stream has no other way to tell its end).

    ``caught_up(False)`` at each subscribe, ``caught_up(True)`` once caught up, or when
    the stream cannot be read at all (there is nothing to wait for then).
    """

    def __init__(
        self,
        connection: RabbitConnection,
        topology: Topology,
        deliver: Callable[[Envelope], None],
        caught_up: Callable[[bool], None],
    ) -> None:
        super().__init__(connection, topology, topology.finished_stream, deliver, FINISHED_PREFETCH)
        self._caught_up = caught_up
        self._marker = ""

    def _offset(self) -> Any:
        return "first"

    def _subscribing(self) -> None:
        # Before the consumer: the last subscribe's marker, read again, must not count.
        self._caught_up(False)
        self._marker = uuid.uuid4().hex

    async def _subscribed(self, channel: AbstractChannel) -> None:
        marker = Envelope(FINISHED_MARKER_KIND, self._marker, "", {}, time.time())
        exchange = await channel.get_exchange(self._topology.exchange, ensure=False)
        try:
            await exchange.publish(
                _message_of([marker]), routing_key=self._topology.finished_routing_key
            )
        except Exception as exc:  # the link is going: the next connect tries again
            log.warning("broker.finished_marker_not_sent", error=repr(exc)[:200])

    def _unreadable(self) -> None:
        self._caught_up(True)

    def _take(self, envelope: Envelope) -> None:
        if envelope.kind != FINISHED_MARKER_KIND:
            self._deliver(envelope)
        elif envelope.message_id == self._marker:
            self._caught_up(True)


class RabbitQueue:
    """The MessageQueue port over RabbitMQ: connection, publisher, consumer, shard probes."""

    def __init__(
        self,
        rabbit: RabbitSettings,
        topology: Topology,
        *,
        on_confirmed: Callable[[float], None] | None = None,
        on_active_shards: Callable[[list[int]], None] | None = None,
        on_packed: Callable[[int], None] | None = None,
    ) -> None:
        self._rabbit = rabbit
        self._on_active_shards = on_active_shards
        self._topology = topology
        self._connection = RabbitConnection(
            rabbit.hosts,
            username=rabbit.username,
            password=rabbit.password.value,
            virtual_host=rabbit.virtual_host,
            connect_timeout=rabbit.connect_timeout,
            heartbeat=rabbit.heartbeat,
        )
        self._publisher = RabbitPublisher(
            self._connection,
            topology,
            confirm_timeout=rabbit.publish_timeout,
            on_confirmed=on_confirmed,
            pack=rabbit.pack_publishes,
            on_packed=on_packed,
        )
        self._consumer: RabbitConsumer | None = None
        self._readers: list[StreamReader] = []
        self._prober: asyncio.Task[None] | None = None

    @property
    def topology(self) -> Topology:
        return self._topology

    @property
    def ready(self) -> bool:
        return self._publisher.ready

    @property
    def checkpoints_enabled(self) -> bool:
        return self._topology.checkpoints_enabled

    def consume(
        self,
        prefetch: int,
        deliver: Callable[[QueueDelivery], None],
        lost: Callable[[], None] | None = None,
    ) -> None:
        self._consumer = RabbitConsumer(
            self._connection,
            self._topology,
            prefetch=prefetch,
            deliver=deliver,
            lost=lost,
        )

    @property
    def echoes_supported(self) -> bool:
        return self._topology.with_streams

    @property
    def echoes_ready(self) -> bool:
        return self._topology.with_streams and not self._publisher.streams_refused

    @property
    def finished_supported(self) -> bool:
        return self._topology.with_streams

    def consume_echoes(self, deliver: Callable[[Envelope], None]) -> None:
        if self._consumer is not None:
            # Subscribed after the shard consumer, its set-up would delay the moment the
            # connection counts as up while deliveries already arrive and need to publish.
            raise RuntimeError("consume_echoes must come before consume")
        self._readers.append(EchoReader(self._connection, self._topology, deliver))

    def consume_finished(
        self, deliver: Callable[[Envelope], None], caught_up: Callable[[bool], None]
    ) -> None:
        if self._consumer is not None:
            raise RuntimeError("consume_finished must come before consume")  # as echoes
        self._readers.append(FinishedReader(self._connection, self._topology, deliver, caught_up))

    async def record_finished(self, envelope: Envelope) -> None:
        await self._publisher.record_finished(envelope)

    async def publish_echoes(self, envelopes: list[Envelope]) -> None:
        await self._publisher.publish_echoes(envelopes)

    async def start(self) -> None:
        self._connection.start()
        if self._consumer is not None:
            self._prober = asyncio.create_task(self._probe_shards(), name="shard-prober")

    async def wait_ready(self, timeout: float) -> bool:
        return await self._connection.wait_connected(timeout) and self.ready

    async def stop_consuming(self) -> None:
        prober, self._prober = self._prober, None
        if prober is not None:
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prober
        for reader in self._readers:
            await reader.stop()  # first: bounded, unlike the consumer's calls
        if self._consumer is not None:
            await self._consumer.stop()
            await self._consumer.close()

    async def stop(self) -> None:
        await self.stop_consuming()
        await self._connection.stop()

    async def publish(self, envelopes: list[Envelope]) -> None:
        await self._publisher.publish(envelopes)

    async def park(self, envelopes: list[Envelope]) -> None:
        await self._publisher.park(envelopes)

    async def checkpoint(self, envelope: Envelope) -> None:
        await self._publisher.checkpoint(envelope)

    async def dead_letter(self, envelope: Envelope) -> None:
        await self._publisher.dead_letter(envelope)

    def active_shards(self) -> list[int] | None:
        if self._consumer is None:
            return None
        return self._consumer.active_shards(within=2.5 * self._rabbit.shard_probe_interval)

    async def _probe_shards(self) -> None:
        while True:
            for shard in range(self._topology.shards):
                try:
                    await self._publisher.probe(shard)
                except PublishError as exc:
                    log.debug("queue.probe_failed", shard=shard, error=str(exc))
                    break
            if self._on_active_shards is not None:
                self._on_active_shards(self.active_shards() or [])
            await asyncio.sleep(self._rabbit.shard_probe_interval)
