"""The broker port: what the webhook and the bridge need from a durable queue."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from twitter_bot import jsoncodec


class PublishError(Exception):
    """The broker did not durably accept a message; the caller must not report success."""


@dataclass(frozen=True)
class Envelope:
    """One unit of work on the queue: a user's DM, or messages pushed by the bot platform.

    ``conversation_id`` decides the shard, so one conversation is always consumed
    in order by one consumer; ``message_id`` is the deduplication and idempotency key.
    """

    kind: str
    message_id: str
    conversation_id: str
    payload: dict[str, Any]
    # Wall-clock seconds when the webhook accepted it, for end-to-end latency.
    accepted_at: float
    headers: dict[str, Any] = field(default_factory=dict)
    # Set by the bridge once the bot answered: {"answer": [reply objects], "sent": n}.
    # Travels with a retried message so the gateway is not asked twice and
    # replies already sent are not sent again.
    progress: dict[str, Any] | None = None

    def encode(self) -> bytes:
        data: dict[str, Any] = {
            "kind": self.kind,
            "message_id": self.message_id,
            "conversation_id": self.conversation_id,
            "accepted_at": self.accepted_at,
            "payload": self.payload,
        }
        if self.progress is not None:
            data["progress"] = self.progress
        return jsoncodec.dumps(data)

    @classmethod
    def decode(cls, body: bytes, headers: Mapping[str, Any] | None = None) -> Envelope:
        """Parse an encoded envelope; raises ValueError (or KeyError/TypeError) when malformed."""
        return cls.from_dict(jsoncodec.loads(body), headers)

    @classmethod
    def from_dict(cls, data: Any, headers: Mapping[str, Any] | None = None) -> Envelope:
        """An envelope from its decoded JSON object (one entry of a pack, say)."""
        if not isinstance(data, dict):
            raise TypeError(f"an envelope is a JSON object, not {type(data).__name__}")
        progress = data.get("progress")
        return cls(
            kind=str(data["kind"]),
            message_id=str(data["message_id"]),
            conversation_id=str(data["conversation_id"]),
            payload=dict(data["payload"]),
            accepted_at=float(data["accepted_at"]),
            headers=dict(headers or {}),
            progress=dict(progress) if progress is not None else None,
        )


def shard_of(conversation_id: str, shards: int) -> int:
    """A stable shard number for a conversation: the same on every instance and restart."""
    return zlib.crc32(conversation_id.encode()) % shards


class Publisher(Protocol):
    """Durably enqueue envelopes: returns only once the broker confirmed every one."""

    @property
    def ready(self) -> bool: ...

    async def publish(self, envelopes: list[Envelope]) -> None: ...

    @property
    def echoes_ready(self) -> bool:
        """Whether X's echoes are to be recorded: supported, and (RabbitMQ) the broker did
        not refuse the echo stream at the last connect."""
        ...

    async def publish_echoes(self, envelopes: list[Envelope]) -> None:
        """Durably record X's echoes of the bots' DMs (only where echoes_ready)."""
        ...


# Envelope kinds.
DM_KIND = "dm"  # payload: IncomingMessage.to_dict()
# payload: {"bot_user_id", "recipient_id", "messages": [gateway reply objects, section 2]}
PUSH_KIND = "push"
# payload: SentEcho.to_dict(), X's echo of a DM a bot sent (not work: evidence, see
# bridge/echoes.py)
ECHO_KIND = "echo"
# payload: {}, the finished-answers reader's own mark of how far the stream went when it
# subscribed (queue/rabbit.py, FinishedReader); every other entry there is a message
# with its final progress (bridge/finished.py)
FINISHED_MARKER_KIND = "finished-marker"

# Headers the bridge sets on messages it retries later or gives up on.
HEADER_ATTEMPT = "x-attempt"  # int: attempts made so far
# Epoch milliseconds (an int: AMQP carries Python floats as 32-bit floats, which
# would put epoch seconds off by up to a minute): do not process before.
HEADER_NOT_BEFORE = "x-not-before-ms"
HEADER_DEAD_REASON = "x-dead-letter-reason"  # short human text
HEADER_ERROR_KIND = "x-error-kind"  # "gateway" | "x" | "attempts-exhausted" | "invalid"
HEADER_ERROR_STATUS = "x-error-status"  # int HTTP status, when there was one
HEADER_ERROR_CODE = "x-error-code"  # int X error code, when there was one
HEADER_ERROR_BODY = "x-error-body"  # str, at most 500 characters
HEADER_DEAD_AT = "x-dead-lettered-at"  # ISO-8601 UTC
HEADER_BOT_ID = "x-bot-id"
HEADER_CONVERSATION_ID = "x-conversation-id"
# Marks the copy of a message published with the bot's answer before its replies go out.
HEADER_CHECKPOINT = "x-checkpoint"
# Set by `dead-letters retry`: an operator asked for this message to be bridged again.
HEADER_REDRIVEN = "x-redriven"
# Marks a message the bridge parked: put back at the head of its shard, ahead of every
# message never parked, and held by the consumer until its x-not-before-ms.
HEADER_PARKED = "x-parked"


class QueueDelivery(Protocol):
    """One consumed message; settled exactly once by ack or requeue."""

    @property
    def envelope(self) -> Envelope: ...

    @property
    def redelivered(self) -> bool: ...

    @property
    def valid(self) -> bool:
        """False once it can no longer be settled (its broker channel was lost).

        The broker then delivers the message again, possibly to another instance,
        so whoever holds an invalid delivery must stop working on it.
        """
        ...

    @property
    def ack_settles(self) -> bool:
        """Whether ack() makes this delivery's broker message done right now.

        False for one part of a pack whose other parts are still in progress: the
        pack is settled as a whole, so until then a crash delivers this part again.
        """
        ...

    async def ack(self) -> None: ...

    async def requeue(self) -> None: ...


class MessageQueue(Protocol):
    """The durable queue port: RabbitMQ in production, SQLite for one machine.

    Every write returns only once it is durable (broker confirm / fsync), or
    raises PublishError. ``consume`` is registered before ``start``.
    """

    @property
    def ready(self) -> bool: ...

    @property
    def checkpoints_enabled(self) -> bool: ...

    def consume(
        self,
        prefetch: int,
        deliver: Callable[[QueueDelivery], None],
        lost: Callable[[], None] | None = None,
    ) -> None:
        """Register the consumer: ``deliver`` gets each message, ``lost`` is called when
        every delivery handed over so far became invalid (the broker link dropped)."""
        ...

    async def start(self) -> None: ...

    async def wait_ready(self, timeout: float) -> bool: ...

    async def stop_consuming(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, envelopes: list[Envelope]) -> None: ...

    @property
    def echoes_supported(self) -> bool:
        """Whether X's echoes are recorded and read back by every instance (configured on,
        and a queue that can)."""
        ...

    @property
    def echoes_ready(self) -> bool: ...

    async def publish_echoes(self, envelopes: list[Envelope]) -> None: ...

    def consume_echoes(self, deliver: Callable[[Envelope], None]) -> None:
        """Register a reader of the echoes (before ``start``): recent ones, then new ones."""
        ...

    @property
    def finished_supported(self) -> bool:
        """Whether answers finished after a crash can be recorded for every instance."""
        ...

    async def record_finished(self, envelope: Envelope) -> None:
        """Durably record a message with its final progress (bridge/finished.py)."""
        ...

    def consume_finished(
        self, deliver: Callable[[Envelope], None], caught_up: Callable[[bool], None]
    ) -> None:
        """Register a reader of the finished answers (before ``start``): all of them from
        the start, then new ones; ``caught_up`` says whether it has read up to the end
        as it was when it (re)subscribed."""
        ...

    async def park(self, envelopes: list[Envelope]) -> None:
        """Queue envelopes, in this order, at the head of their shards, marked parked.

        Parked messages are delivered again at once, ahead of every message never
        parked, also after a crash or a failover: that is what keeps a conversation
        in order while its head waits for a retry. The consumer holds them until
        their not-before time.
        """
        ...

    async def checkpoint(self, envelope: Envelope) -> None: ...

    async def dead_letter(self, envelope: Envelope) -> None: ...

    def active_shards(self) -> list[int] | None:
        """Shards this process is the active consumer of; None when the idea does not apply."""
        ...
