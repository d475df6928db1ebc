"""`twitter-bot dead-letters` against the embedded SQLite queue."""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import replace
from pathlib import Path

from tests.conftest import make_settings
from twitter_bot.deadletters import Command, Selection, execute
from twitter_bot.queue.base import (
    HEADER_ATTEMPT,
    HEADER_ERROR_KIND,
    HEADER_ERROR_STATUS,
    HEADER_REDRIVEN,
    Envelope,
    QueueDelivery,
)
from twitter_bot.queue.sqlite import SqliteQueue
from twitter_bot.settings import Settings, SqliteSettings


def sqlite_settings(path: Path) -> Settings:
    base = make_settings("/")
    return replace(base, rabbit=replace(base.rabbit, hosts=()), sqlite=SqliteSettings(str(path)))


def dead(message_id: str) -> Envelope:
    headers = {HEADER_ERROR_KIND: "gateway", HEADER_ERROR_STATUS: 422, HEADER_ATTEMPT: 1}
    return Envelope("dm", message_id, "1-2", {"text": message_id}, time.time(), headers)


async def run(settings: Settings, command: Command) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await execute(settings, command, out, err)
    return code, out.getvalue(), err.getvalue()


async def test_list_retry_and_purge(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    settings = sqlite_settings(path)
    queue = SqliteQueue(path)
    await queue.start()
    for message_id in ("d1", "d2", "d3"):
        await queue.dead_letter(dead(message_id))
    await queue.stop()

    code, out, _ = await run(settings, Command("list"))
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["d1", "d2", "d3"]
    assert "gateway" in out and "422" in out

    code, out, _ = await run(settings, Command("retry", Selection(ids=frozenset({"d2"}))))
    assert code == 0 and "re-drove d2" in out
    code, _, err = await run(settings, Command("retry", Selection(ids=frozenset({"nope"}))))
    assert code == 1 and "nope" in err
    code, out, _ = await run(settings, Command("purge", Selection(ids=frozenset({"d3"}))))
    assert code == 0 and "purged d3" in out

    received: asyncio.Queue[QueueDelivery] = asyncio.Queue()
    consumer = SqliteQueue(path, poll_interval=0.05)
    consumer.consume(10, received.put_nowait)
    await consumer.start()
    try:
        delivery = await asyncio.wait_for(received.get(), 5)
        assert delivery.envelope.message_id == "d2"
        assert delivery.envelope.headers == {HEADER_REDRIVEN: 1}  # failure headers gone
        await delivery.ack()
        assert [e.message_id for e in await consumer.dead_letters()] == ["d1"]
    finally:
        await consumer.stop()


async def test_the_command_leaves_a_running_daemons_leases_alone(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    received: asyncio.Queue[QueueDelivery] = asyncio.Queue()
    daemon = SqliteQueue(path, poll_interval=0.05)
    daemon.consume(10, received.put_nowait)
    await daemon.start()
    try:
        await daemon.publish([Envelope("dm", "live", "1-2", {}, time.time())])
        await asyncio.wait_for(received.get(), 5)  # leased, in flight
        code, out, _ = await run(sqlite_settings(path), Command("list"))
        assert code == 0 and "no dead letters" in out
        # Had the command taken the lease back, the daemon would get the message again.
        await asyncio.sleep(0.5)
        assert received.empty()
    finally:
        await daemon.stop()
