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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    DeliveryMode,
)

from twitter_bot.queue.base import Envelope, PublishError, shard_of
from twitter_bot.settings import BrokerHost

log = structlog.get_logger(__name__)

ConnectedCallback = Callable[[AbstractConnection], Awaitable[None]]


@dataclass(frozen=True)
class Topology:
    """Names of the exchange and queues, all derived from one prefix."""

    prefix: str
    shards: int

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
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.dead-letter"

    def routing_key_for(self, conversation_id: str) -> str:
        return self.shard_routing_key(shard_of(conversation_id, self.shards))


async def declare_topology(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """Declare (idempotently) the durable exchange, shard queues and dead-letter queue."""
    exchange = await channel.declare_exchange(
        topology.exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    for shard in range(topology.shards):
        queue = await channel.declare_queue(
            topology.shard_queue(shard),
            durable=True,
            # One active consumer per shard keeps a conversation's messages in order
            # even when several instances consume the same broker.
            arguments={"x-single-active-consumer": True},
        )
        await queue.bind(exchange, topology.shard_routing_key(shard))
    dead_letters = await channel.declare_queue(topology.dead_letter_queue, durable=True)
    await dead_letters.bind(exchange, topology.dead_letter_routing_key)
    return exchange


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

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        conn, self._connection = self._connection, None
        self._connected.clear()
        if conn is not None and not conn.is_closed:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _supervise(self) -> None:
        attempt = 0
        while True:
            for host in self._hosts:
                conn = await self._try_connect(host)
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
        lost = asyncio.Event()
        conn.close_callbacks.add(lambda *_: lost.set())
        self._connection = conn
        self.current_host = host
        self._connected.set()
        log.info("broker.connected", host=host.host, port=host.port)
        try:
            await lost.wait()
        finally:
            self._connected.clear()
            self._connection = None
            self.current_host = None
            with contextlib.suppress(Exception):
                await conn.close()
        log.warning("broker.connection_lost", host=host.host, port=host.port)


class RabbitPublisher:
    """Publishes envelopes as persistent, mandatory messages and waits for the confirms."""

    def __init__(
        self,
        connection: RabbitConnection,
        topology: Topology,
        *,
        confirm_timeout: float,
        on_confirmed: Callable[[float], None] | None = None,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._confirm_timeout = confirm_timeout
        self._on_confirmed = on_confirmed
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        connection.on_connected(self._open_channel)

    async def _open_channel(self, conn: AbstractConnection) -> None:
        # on_return_raises turns an unroutable mandatory message into an error
        # instead of a silent drop (aio-pika's default).
        channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
        self._exchange = await declare_topology(channel, self._topology)
        self._channel = channel

    @property
    def ready(self) -> bool:
        channel = self._channel
        return (
            self._connection.connection is not None
            and channel is not None
            and not channel.is_closed
        )

    async def publish(self, envelopes: list[Envelope]) -> None:
        """Return once every envelope is confirmed; raise PublishError otherwise."""
        exchange = self._exchange
        if not self.ready or exchange is None:
            raise PublishError("broker not connected")
        started = time.perf_counter()
        try:
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(self._publish_one(exchange, env) for env in envelopes),
                    return_exceptions=True,
                ),
                self._confirm_timeout,
            )
        except TimeoutError as exc:
            raise PublishError("publish not confirmed in time") from exc
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            # Nacked, returned as unroutable, or the channel died: not durable.
            raise PublishError(f"publish failed: {type(failures[0]).__name__}") from failures[0]
        if self._on_confirmed is not None:
            self._on_confirmed(time.perf_counter() - started)

    async def _publish_one(self, exchange: AbstractExchange, envelope: Envelope) -> None:
        message = aio_pika.Message(
            body=envelope.encode(),
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=envelope.message_id,
            headers={"x-conversation-id": envelope.conversation_id, **envelope.headers},
        )
        await exchange.publish(
            message,
            routing_key=self._topology.routing_key_for(envelope.conversation_id),
            mandatory=True,
        )
