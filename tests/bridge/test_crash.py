"""SIGKILL at the worst moments: the real daemon process, restarted, loses nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.bridge.test_packing import publish_one_then_a_pack, users_on_one_shard
from tests.fakes.fake_gateway import RecordedRequest, echo
from tests.fakes.fake_x import EndpointKind
from tests.support.process_env import BOT_ID, ProcessEnv, start_process_env
from twitter_bot.settings import load_settings


@pytest.fixture
async def crash_env(
    aiohttp_server: Any, tmp_path: Path, rabbit_vhost: str
) -> AsyncIterator[ProcessEnv]:
    yield await start_process_env(aiohttp_server, tmp_path, rabbit_vhost)


def hangs_first_call(reply: str) -> tuple[asyncio.Event, Any]:
    """A gateway handler whose first call hangs (the daemon is killed meanwhile)."""
    in_flight = asyncio.Event()
    calls = 0

    async def answer(request: RecordedRequest) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            in_flight.set()
            await asyncio.sleep(30)
        return [{"type": "text", "text": reply.format(text=request.body["text"])}]

    return in_flight, answer


async def test_killed_during_the_gateway_call_the_reply_is_delivered_once(
    crash_env: ProcessEnv,
) -> None:
    in_flight, answer = hangs_first_call("echo: {text}")
    crash_env.gateway.on_message(BOT_ID, answer)
    daemon = await crash_env.start()
    try:
        await crash_env.send_dm(daemon.url, "5001", "are you there?")
        await asyncio.wait_for(in_flight.wait(), 10)
        await daemon.kill()  # SIGKILL
        assert daemon.process.returncode == -9
        daemon = await crash_env.start()
        await crash_env.x.wait_for_dms(1, timeout=20)
        await asyncio.sleep(1.0)
    finally:
        await daemon.kill()
    assert [dm.text for dm in crash_env.x.sent_dms()] == ["echo: are you there?"]
    requests = crash_env.gateway.requests_for(BOT_ID)
    assert len(requests) == 2
    assert {r.idempotency_key for r in requests} == {"5001"}


async def test_killed_while_sending_the_remaining_replies_still_go_out_in_order(
    crash_env: ProcessEnv,
) -> None:
    crash_env.gateway.on_message(
        BOT_ID,
        lambda r: (
            [{"type": "text", "text": t} for t in ("one", "two", "three")]
            if r.body["text"] == "first"
            else [{"type": "text", "text": "after"}]
        ),
    )
    crash_env.x.set_delay(0.7, kind=EndpointKind.DM_V11)
    daemon = await crash_env.start()
    try:
        await crash_env.send_dm(daemon.url, "6001", "first")
        await crash_env.send_dm(daemon.url, "6002", "second")  # queued behind the first
        await crash_env.x.wait_for_dms(1, timeout=10)
        # "one" is out and its answer reached the daemon; "two" takes 0.7 s at X.
        await asyncio.sleep(0.3)
        await daemon.kill()  # SIGKILL while "two" is on its way, "three" not started
        crash_env.x.set_delay(0.0, kind=EndpointKind.DM_V11)
        daemon = await crash_env.start()
        await crash_env.x.wait_for_dms(4, timeout=20)
        await asyncio.sleep(1.0)
    finally:
        await daemon.kill()
    texts = [dm.text for dm in crash_env.x.sent_dms()]
    # Nothing lost, nothing sent twice, the order kept; the bot was asked once for
    # the first message (its answer and progress were checkpointed).
    assert texts == ["one", "two", "three", "after"]
    assert [r.body["text"] for r in crash_env.gateway.requests_for(BOT_ID)] == ["first", "second"]


async def test_sigterm_finishes_the_message_in_flight_before_exiting(crash_env: ProcessEnv) -> None:
    import signal

    in_flight = asyncio.Event()

    async def slow(request: RecordedRequest) -> list[dict[str, Any]]:
        in_flight.set()
        await asyncio.sleep(1.5)
        return [{"type": "text", "text": "finished"}]

    crash_env.gateway.on_message(BOT_ID, slow)
    daemon = await crash_env.start()
    try:
        await crash_env.send_dm(daemon.url, "8001", "slow one")
        await asyncio.wait_for(in_flight.wait(), 10)
        daemon.process.send_signal(signal.SIGTERM)
        assert await daemon.wait_exit(timeout=15) == 0
    finally:
        await daemon.kill()
    # Answered and sent before the process exited, and acked: a restart sends nothing more.
    assert [dm.text for dm in crash_env.x.sent_dms()] == ["finished"]
    daemon = await crash_env.start()
    try:
        await asyncio.sleep(1.0)
    finally:
        await daemon.kill()
    assert len(crash_env.x.sent_dms()) == 1
    assert len(crash_env.gateway.requests_for(BOT_ID)) == 1


async def test_embedded_sqlite_queue_survives_a_kill_with_a_message_in_flight(
    crash_env: ProcessEnv, tmp_path: Path
) -> None:
    queue_file = tmp_path / "queue.sqlite3"
    config, port = crash_env.variant(
        "sqlite",
        extra=f'\nchatbots.messaging.sqlite.path: "{queue_file}"\n',
        rabbit=False,
    )
    in_flight, answer = hangs_first_call("from sqlite")
    crash_env.gateway.on_message(BOT_ID, answer)
    daemon = await crash_env.start("all", config, port)
    try:
        assert any('"queue.embedded_sqlite"' in line for line in daemon.logs)
        await crash_env.send_dm(daemon.url, "9101", "kept on disk?")
        await asyncio.wait_for(in_flight.wait(), 10)
        await daemon.kill()  # SIGKILL with the message leased, not acked
        daemon = await crash_env.start("all", config, port)
        await crash_env.x.wait_for_dms(1, timeout=20)
        await asyncio.sleep(1.0)
    finally:
        await daemon.kill()
    assert queue_file.exists()
    assert [dm.text for dm in crash_env.x.sent_dms()] == ["from sqlite"]
    assert [r.idempotency_key for r in crash_env.gateway.requests_for(BOT_ID)] == ["9101", "9101"]


def _parked(logs: list[str], message_id: str) -> bool:
    """Whether the daemon logged ``message_id`` as parked for a retry."""
    events = [json.loads(line) for line in logs if line.startswith("{")]
    return any(
        e.get("event") == "bridge.message_parked" and e.get("message_id") == message_id
        for e in events
    )


@pytest.mark.parametrize("queue", ["rabbitmq", "sqlite"])
async def test_killed_while_a_conversation_is_parked_newer_messages_still_wait_behind_it(
    crash_env: ProcessEnv, tmp_path: Path, queue: str
) -> None:
    # The order guarantee lives in the queue, not in the dead process's memory: after
    # the restart, a message sent to a conversation whose older messages are parked
    # for a retry is answered after them.
    extra = "\nchatbots.twitter-bot.webhooks-messaging.max-rate-limit-hold: 0s\n"
    if queue == "sqlite":
        extra += f'chatbots.messaging.sqlite.path: "{tmp_path / "queue.sqlite3"}"\n'
    config, port = crash_env.variant(queue, extra=extra, rabbit=queue == "rabbitmq")
    crash_env.gateway.fail_then_succeed(BOT_ID, times=1, status=503, headers={"Retry-After": "3"})
    daemon = await crash_env.start("all", config, port)
    try:
        await crash_env.send_dm(daemon.url, "7001", "first")
        await crash_env.send_dm(daemon.url, "7002", "second")
        # "second" is accepted (durable) by now; whether the worker holds it behind the
        # parked "first", parked it too, or has not received it yet, the order must hold.
        deadline = time.monotonic() + 10
        while not _parked(daemon.logs, "7001"):
            assert time.monotonic() < deadline, "never parked:\n" + "".join(daemon.logs)
            await asyncio.sleep(0.05)
        await daemon.kill()  # SIGKILL: the conversation is parked until the Retry-After
        daemon = await crash_env.start("all", config, port)
        await crash_env.send_dm(daemon.url, "7003", "third")
        await crash_env.x.wait_for_dms(3, timeout=20)
        await asyncio.sleep(0.5)
    finally:
        await daemon.kill()
    assert [dm.text for dm in crash_env.x.sent_dms()] == [
        "echo: first",
        "echo: second",
        "echo: third",
    ]


async def test_killed_with_a_pack_half_done_only_its_unfinished_dm_is_answered_after(
    crash_env: ProcessEnv,
) -> None:
    """rabbit.pack-publishes: three DMs share a broker message; two are answered and the
    bot call of the third is in flight when the daemon is SIGKILLed. The broker delivers
    the whole pack again, but the two done DMs left checkpoints that stay queued as long as
    their pack does: after the restart only the third is answered."""
    settings = load_settings(crash_env.config)
    first, fast_a, slow, fast_b = users_on_one_shard(4, shards=settings.rabbit.shards)
    event_ids = {first: "9200", fast_a: "9201", slow: "9202", fast_b: "9203"}
    await publish_one_then_a_pack(settings, event_ids)

    slow_in_flight = asyncio.Event()

    async def hang_once_for_slow(request: RecordedRequest) -> Any:
        if request.body["sender"]["id"] == slow and not slow_in_flight.is_set():
            slow_in_flight.set()
            await asyncio.sleep(30)
        return echo(request)

    crash_env.gateway.on_message(BOT_ID, hang_once_for_slow)
    daemon = await crash_env.start()
    try:
        await asyncio.wait_for(slow_in_flight.wait(), 10)
        deadline = time.monotonic() + 10
        while not all(_done(daemon.logs, event_ids[u]) for u in (first, fast_a, fast_b)):
            assert time.monotonic() < deadline, "not done:\n" + "".join(daemon.logs)
            await asyncio.sleep(0.05)
        await daemon.kill()  # SIGKILL: the pack is unacked, two of its DMs done
        daemon = await crash_env.start()
        await crash_env.x.wait_for_dms(4, timeout=20)
        await asyncio.sleep(1.0)  # a done DM answered again would show up now
    finally:
        await daemon.kill()
    recipients = [dm.recipient_id for dm in crash_env.x.sent_dms()]
    assert sorted(recipients) == sorted([first, fast_a, slow, fast_b])
    asked = [r.body["sender"]["id"] for r in crash_env.gateway.requests_for(BOT_ID)]
    assert sorted(asked) == sorted([first, fast_a, slow, fast_b, slow])


def _done(logs: list[str], message_id: str) -> bool:
    """Whether the daemon logged ``message_id`` as bridged."""
    events = [json.loads(line) for line in logs if line.startswith("{")]
    return any(
        e.get("event") == "bridge.message_done" and e.get("message_id") == message_id
        for e in events
    )
