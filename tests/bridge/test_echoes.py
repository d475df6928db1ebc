"""RecentEchoes: which echo counts for a reply in doubt, and waiting for one."""

from __future__ import annotations

import asyncio

from twitter_bot.bridge.echoes import RecentEchoes
from twitter_bot.models import SentEcho

BOT, USER, OTHER = "100", "200", "300"
CONVERSATION = "100-200"


def echo(event_id: str, at_ms: int, text: str = "ok", recipient: str = USER) -> SentEcho:
    return SentEcho(event_id, BOT, recipient, at_ms, text)


def test_only_an_echo_of_the_same_text_stamped_after_the_anchor_counts() -> None:
    echoes = RecentEchoes()
    echoes.add(echo("1", 1000))  # at the anchor itself: before it, for all we know
    echoes.add(echo("2", 1001, text="other"))
    echoes.add(echo("3", 1002, recipient=OTHER))  # another conversation
    assert echoes.find(CONVERSATION, "ok", after_ms=1000) is None
    echoes.add(echo("5", 1005))
    echoes.add(echo("4", 1003))  # arrived later, stamped earlier: the earliest counts
    found = echoes.find(CONVERSATION, "ok", after_ms=1000)
    assert found is not None and found.event_id == "4"


def test_memory_is_bounded_per_conversation_and_in_conversations() -> None:
    echoes = RecentEchoes(per_conversation=2, conversations=1)
    for n in range(3):
        echoes.add(echo(str(n), 1000 + n, text=f"t{n}"))
    assert echoes.find(CONVERSATION, "t0", 0) is None
    assert echoes.find(CONVERSATION, "t2", 0) is not None
    echoes.add(echo("9", 2000, recipient=OTHER))
    assert echoes.find(CONVERSATION, "t2", 0) is None  # the older conversation is gone


async def test_a_wait_ends_when_the_echo_arrives_and_gives_up_at_its_timeout() -> None:
    echoes = RecentEchoes()
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, echoes.add, echo("1", 900))  # before the anchor: not it
    loop.call_later(0.1, echoes.add, echo("2", 1100))
    started = loop.time()
    found = await echoes.wait_for(CONVERSATION, "ok", after_ms=1000, timeout=5.0)
    assert found is not None and found.event_id == "2"
    assert loop.time() - started < 1.0
    assert await echoes.wait_for(CONVERSATION, "late", after_ms=1000, timeout=0.1) is None


def test_conversations_quiet_for_longer_than_the_memory_are_forgotten() -> None:
    now = [0.0]
    echoes = RecentEchoes(max_age=120.0, clock=lambda: now[0])
    echoes.add(echo("1", 1000))
    now[0] = 100.0
    echoes.add(echo("2", 1000, recipient=OTHER))
    now[0] = 121.0
    echoes.add(echo("3", 1000, recipient=OTHER))  # the first conversation is 121 s quiet
    assert echoes.find(CONVERSATION, "ok", 0) is None
    assert echoes.find("100-300", "ok", 0) is not None
