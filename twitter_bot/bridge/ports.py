"""The small interfaces the bridge depends on; adapters: queue/, gateway/, bridge/outbound."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from twitter_bot.gateway import Reply, UserMessage
from twitter_bot.queue.base import Envelope, QueueDelivery
from twitter_bot.settings import BotSettings


class BotPlatform(Protocol):
    """Delivers a user's message to the bot and returns its replies (gateway-api.md §1-3)."""

    async def deliver(self, message: UserMessage) -> list[Reply]: ...


class ReplySender(Protocol):
    """Sends a bot's replies to one user as DMs, in order, as that bot."""

    async def send_replies(
        self,
        bot: BotSettings,
        recipient_id: str,
        conversation_id: str,
        replies: Sequence[Reply],
        *,
        start_at: int = 0,
        on_sent: Callable[[int], Awaitable[None]] | None = None,
    ) -> int: ...

    async def mark_read(
        self, bot: BotSettings, recipient_id: str, last_read_event_id: str
    ) -> None: ...

    async def typing(self, bot: BotSettings, recipient_id: str) -> None: ...


# One message handed to the bridge by the queue, settled exactly once: the queue
# port's own delivery type (RabbitMQ and SQLite both provide it).
Delivery = QueueDelivery


class Requeuer(Protocol):
    """Durably moves envelopes elsewhere before their deliveries are acked."""

    async def park(self, envelopes: list[Envelope]) -> None: ...

    async def checkpoint(self, envelope: Envelope) -> None: ...

    async def dead_letter(self, envelope: Envelope) -> None: ...
