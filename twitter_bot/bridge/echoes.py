"""X's echoes of the DMs the bots sent, kept briefly per conversation.

X delivers every DM a bot account sends back to the webhook, which appends it to the
echo stream that every worker reads (queue/rabbit.py, EchoReader). After a crash the
bridge resumes an answer from its last checkpoint, and the reply after it may already
be out: the process died after X took it and before the checkpoint saying so. Resent
blindly, the user gets it twice. The echo is X's own record that it went out, so the
bridge looks for it first.

Which echo is which: a checkpoint carries an anchor, the wall-clock time it was taken
(after the reply before it was out, before the next one was sent). Replies in a
conversation go out one at a time, so the only bot DM of that conversation X can
have stamped after the anchor is the reply in doubt (or one sent by hand from the
bot's account). The text must match as well, so an early clock on our side can at
worst miss an echo (a duplicate, as without echoes), never take an earlier reply for
the one in doubt unless both texts are equal and the clocks are off by more than a
round trip to X.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

from twitter_bot.models import SentEcho

# Echoes kept per conversation, conversations kept, and for how long: a reply is in
# doubt only in the seconds after a crash or failover, so a short memory is enough
# (and memory follows the rate of replies, not the number of conversations ever seen).
ECHOES_PER_CONVERSATION = 16
CONVERSATIONS = 10_000
MAX_AGE = 120.0


class RecentEchoes:
    """The latest echoes of each conversation, and waits for one to arrive."""

    def __init__(
        self,
        per_conversation: int = ECHOES_PER_CONVERSATION,
        conversations: int = CONVERSATIONS,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_conversation = per_conversation
        self._conversations = conversations
        self._max_age = max_age
        self._clock = clock
        # Least recently added to first; with when each was last added to.
        self._echoes: OrderedDict[str, OrderedDict[str, SentEcho]] = OrderedDict()
        self._added_at: dict[str, float] = {}
        # Set (and replaced) when an echo of the conversation arrives, for waiters.
        self._arrived: dict[str, asyncio.Event] = {}

    def add(self, echo: SentEcho) -> None:
        conversation = echo.conversation_id
        now = self._clock()
        echoes = self._echoes.setdefault(conversation, OrderedDict())
        self._echoes.move_to_end(conversation)
        self._added_at[conversation] = now
        echoes[echo.event_id] = echo  # a repeated delivery of an echo replaces itself
        while len(echoes) > self._per_conversation:
            echoes.popitem(last=False)
        while self._echoes:
            oldest = next(iter(self._echoes))
            too_many = len(self._echoes) > self._conversations
            if not too_many and now - self._added_at[oldest] <= self._max_age:
                break
            del self._echoes[oldest], self._added_at[oldest]
        arrived = self._arrived.pop(conversation, None)
        if arrived is not None:
            arrived.set()

    def find(self, conversation: str, text: str, after_ms: int) -> SentEcho | None:
        """The earliest echo of ``text`` in the conversation stamped after ``after_ms``."""
        matches = [
            echo
            for echo in self._echoes.get(conversation, {}).values()
            if echo.created_timestamp_ms > after_ms and echo.text == text
        ]
        return min(matches, key=lambda e: e.created_timestamp_ms) if matches else None

    async def wait_for(
        self, conversation: str, text: str, after_ms: int, timeout: float
    ) -> SentEcho | None:
        """:meth:`find`, waiting up to ``timeout`` seconds for the echo to arrive."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (found := self.find(conversation, text, after_ms)) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            arrived = self._arrived.setdefault(conversation, asyncio.Event())
            try:
                async with asyncio.timeout(remaining):
                    await arrived.wait()
            except TimeoutError:
                return None
        return found
