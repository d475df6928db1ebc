"""A message redelivered after a crash resumes from the newest progress the broker holds."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import replace
from typing import Any

import aio_pika
from structlog.testing import capture_logs

from tests.bridge import test_packing as packing
from tests.conftest import BOT_A_USER_ID
from tests.fakes.fake_gateway import FakeGateway, RecordedRequest, ScriptedResponse
from tests.support.bridge_env import GATEWAY_TOKEN, BridgeEnv, fast_messaging, start_bridge_env
from tests.support.deliveries import aaa_delivery, dm_event
from tests.support.rabbit import RABBIT_HOST, RABBIT_PORT, clear_policy, set_policy
from tests.support.waiting import eventually
from twitter_bot.app import build_queue, topology_for
from twitter_bot.metrics import Metrics
from twitter_bot.queue.base import HEADER_ATTEMPT, HEADER_NOT_BEFORE, Envelope, shard_of
from twitter_bot.settings import Settings
from twitter_bot.webhook.handler import envelope_for
from twitter_bot.webhook.payloads import parse_delivery

ALICE = "732739706"
ANSWER = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]


def queued_dm(settings: Settings, event_id: str, text: str) -> Envelope:
    bots = {bot.user_id: bot.bot_id for bot in settings.bots}
    delivery = aaa_delivery(BOT_A_USER_ID, dm_event(event_id, ALICE, BOT_A_USER_ID, text))
    [message] = parse_delivery(delivery, bots).messages
    return envelope_for(message, time.time())


async def deliver_and_drop(settings: Settings, shard: int, count: int) -> None:
    """What a worker SIGKILLed mid-message leaves: ``count`` deliveries taken, none acked.

    The broker puts them back in place, flagged redelivered.
    """
    connection = await aio_pika.connect(
        host=RABBIT_HOST, port=RABBIT_PORT, virtualhost=settings.rabbit.virtual_host
    )
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology_for(settings).shard_queue(shard))
        for _ in range(count):
            assert await queue.get(no_ack=False, timeout=5) is not None


async def test_a_redelivered_parked_copy_resumes_from_the_checkpoint_queued_behind_it(
    aiohttp_server: Any, aiohttp_client: Any, rabbit_vhost: str
) -> None:
    """The crashed worker had parked the message, then got its answer and sent the
    first of two replies, checkpointing each step; the restart sends the second only."""

    async def crashed_worker(settings: Settings) -> None:
        queue = build_queue(settings, Metrics())
        await queue.start()
        try:
            assert await queue.wait_ready(5)
            envelope = queued_dm(settings, "8101", "hello")
            parked = replace(envelope, headers={HEADER_ATTEMPT: 1, HEADER_NOT_BEFORE: 0})
            await queue.park([parked])
            await queue.checkpoint(replace(parked, progress={"answer": ANSWER, "sent": 1}))
        finally:
            await queue.stop()
        shard = shard_of(envelope.conversation_id, settings.rabbit.shards)
        await deliver_and_drop(settings, shard, 2)

    env = await start_bridge_env(
        aiohttp_server, aiohttp_client, rabbit_vhost, before_start=crashed_worker
    )
    [dm] = await env.x.wait_for_dms(1, timeout=10)
    await asyncio.sleep(1.0)  # the checkpoint copy, run on its own, would send "two" again

    assert [d.text for d in env.x.sent_dms()] == ["two"]
    assert dm.recipient_id == ALICE
    assert env.gateway.requests == []  # the answer came from the checkpoint
    metrics = await env.metrics()
    assert 'twitter_bot_bridge_messages_total{outcome="delivered"} 1.0' in metrics


async def test_a_crashed_workers_first_checkpoint_waits_for_a_newer_one_before_sending(
    aiohttp_server: Any, aiohttp_client: Any, rabbit_vhost: str
) -> None:
    """After a crash, the worker taking over can get a message's first checkpoint (answer
    known, nothing sent) before the newer one saying both replies are out: prefetch holds
    it back (here, a late publish). Resuming from the first would send both again; it
    waits for a newer copy, or for the message itself, queued behind every checkpoint."""
    envelope: Envelope | None = None

    async def checkpoint(settings: Settings, sent: int, *, message: bool = False) -> None:
        nonlocal envelope
        queue = build_queue(settings, Metrics())
        await queue.start()
        try:
            assert await queue.wait_ready(5)
            envelope = envelope or queued_dm(settings, "8301", "hello")
            await queue.checkpoint(replace(envelope, progress={"answer": ANSWER, "sent": sent}))
            if message:
                await queue.publish([envelope])
        finally:
            await queue.stop()

    env = await start_bridge_env(
        aiohttp_server,
        aiohttp_client,
        rabbit_vhost,
        before_start=lambda settings: checkpoint(settings, 0),
    )
    await asyncio.sleep(0.5)  # the first checkpoint has been in the bridge for a while
    await checkpoint(env.settings, 2, message=True)

    done = 'twitter_bot_bridge_messages_total{outcome="delivered"} 1.0'
    await env.until_metric(done, 10, "the message bridged")
    await asyncio.sleep(0.5)  # a reply sent from the first checkpoint would show up now
    assert env.x.sent_dms() == []
    assert env.gateway.requests == []


async def test_checkpoints_the_broker_refuses_while_the_link_is_fine_do_not_stop_the_answer(
    aiohttp_server: Any, aiohttp_client: Any, rabbit_vhost: str
) -> None:
    """While the bot answers, the shard queues fill up (max-length 0, reject-publish):
    RabbitMQ nacks every checkpoint copy while the connection stays up. After the grace
    wait the delivery is still valid, so the worker sends every reply, once and in
    order, and settles the message."""
    policy = f"full-shards-{uuid.uuid4().hex[:8]}"
    shards = ""

    async def queued(settings: Settings) -> None:
        nonlocal shards
        shards = rf"^{re.escape(topology_for(settings).prefix)}\.incoming\."
        queue = build_queue(settings, Metrics())
        await queue.start()
        try:
            assert await queue.wait_ready(5)
            await queue.publish([queued_dm(settings, "8201", "hello")])
        finally:
            await queue.stop()

    async def answer_once_the_shards_are_full(request: RecordedRequest) -> list[dict[str, Any]]:
        # Only now: a policy applied while the message was still ready would drop it
        # (max-length counts ready messages; this one is unacked at the worker).
        definition = '{"max-length": 0, "overflow": "reject-publish"}'
        await asyncio.to_thread(set_policy, rabbit_vhost, policy, shards, definition)
        return ANSWER

    gateway = FakeGateway(token=GATEWAY_TOKEN)
    gateway.on_message("bot-a", answer_once_the_shards_are_full)
    try:
        with capture_logs() as logs:
            env = await start_bridge_env(
                aiohttp_server, aiohttp_client, rabbit_vhost, before_start=queued, gateway=gateway
            )
            await eventually(
                lambda: any(e["event"] == "bridge.message_done" for e in logs), timeout=15
            )
    finally:
        await asyncio.to_thread(clear_policy, rabbit_vhost, policy)

    assert [d.text for d in env.x.sent_dms()] == ["one", "two"]
    assert len(gateway.requests) == 1
    refused = [e for e in logs if e["event"] == "bridge.checkpoint_failed"]
    assert len(refused) == 3, refused  # after the answer and after each reply
    assert not [e for e in logs if e["event"] == "bridge.delivery_abandoned"]
    metrics = await env.metrics()
    assert 'twitter_bot_bridge_messages_total{outcome="delivered"} 1.0' in metrics


# The bot fails "second"; a retry is due past the hold bound, so the DM is parked at once.
BOT_DOWN = ScriptedResponse(503, {"error": "the bot is down"})
QUICK_PARK = fast_messaging(
    retry_initial_delay=0.6, retry_max_delay=0.6, max_rate_limit_hold=0.1, max_attempts=50
)


def parked_alone(logs: list[dict[str, Any]]) -> bool:
    """Whether every park logged took the failing DM alone (nothing queued behind it)."""
    parks = [e for e in logs if e["event"] == "bridge.message_parked"]
    return bool(parks) and all(e["behind_it"] == 0 for e in parks)


async def sent_after_restart(
    aiohttp_server: Any, aiohttp_client: Any, rabbit_vhost: str, env: BridgeEnv, settle: float
) -> tuple[list[str], list[str]]:
    """Restart on ``env``'s queues (bot answering, echo check off), wait for one DM and
    ``settle`` seconds more: the texts sent to X and asked of the bot."""
    restarted = await start_bridge_env(
        aiohttp_server,
        aiohttp_client,
        rabbit_vhost,
        messaging=fast_messaging(resend_echo_wait=0.0),
        rabbit={"queue_prefix": env.settings.rabbit.queue_prefix},
    )
    await restarted.x.wait_for_dms(1, timeout=10)
    await asyncio.sleep(settle)  # a DM sent again would show up now
    await restarted.client.close()
    return [dm.text or "" for dm in restarted.x.sent_dms()], [
        r.text for r in restarted.gateway.requests
    ]


async def test_a_finished_answer_s_checkpoints_are_not_parked_behind_a_later_message(
    aiohttp_server: Any, aiohttp_client: Any, rabbit_vhost: str
) -> None:
    """A two-reply answer's checkpoints come back to their conversation's queue behind the
    next DM, which the bot fails and which is parked with what waits behind it. Those
    copies must not be parked too: a copy of a done DM, parked, outlives the copies that
    said it was done, and the process that finds it later sends both replies again."""
    user = "870000001"

    async def answer(request: RecordedRequest) -> Any:
        if request.text == "first":
            await asyncio.sleep(0.3)  # the second DM is queued behind it meanwhile
            return [{"type": "text", "text": "first/a"}, {"type": "text", "text": "first/b"}]
        return BOT_DOWN

    gateway = FakeGateway(token=GATEWAY_TOKEN)
    gateway.on_message("bot-a", answer)
    env = await start_bridge_env(
        aiohttp_server, aiohttp_client, rabbit_vhost, gateway=gateway, messaging=QUICK_PARK
    )
    with capture_logs() as logs:
        await env.send_dm("9601", user, text="first")
        await env.send_dm("9602", user, text="second")
        await env.x.wait_for_dms(2, timeout=10)
        await eventually(
            lambda: len([r for r in gateway.requests if r.text == "second"]) >= 2, timeout=10
        )  # the second was parked (its retry is past the hold) and came back at least once
        await env.client.close()
    assert parked_alone(logs), logs
    assert [dm.text for dm in env.x.sent_dms()] == ["first/a", "first/b"]
    # An orphan copy waits 2 s for its message, then resends: 3 s covers it.
    sent, _ = await sent_after_restart(aiohttp_server, aiohttp_client, rabbit_vhost, env, 3.0)
    assert sent == ["echo: second"]


async def test_a_dm_found_done_behind_a_failing_one_is_not_parked_with_it(
    aiohttp_server: Any, aiohttp_client: Any, rabbit_vhost: str
) -> None:
    """A crashed process answered DM A; its checkpoint comes first here and finishes A,
    whose own delivery waits behind DM B. B fails and is parked with what waits behind
    it: not A, which this process knows is done. Parked, A would reach a process that
    does not know, and be asked and answered again."""
    user = "870000002"
    event_a, event_b = "9701", "9702"

    async def crashed(settings: Settings) -> None:
        await packing.leave_answered_checkpoints(settings, {user: event_a})
        queue = build_queue(settings, Metrics())
        await queue.start()
        try:
            assert await queue.wait_ready(5)
            await queue.publish([packing.queued_dm(settings, event_b, user, "second")])
            await queue.publish([packing.queued_dm(settings, event_a, user, "hi")])
        finally:
            await queue.stop()

    gateway = FakeGateway(token=GATEWAY_TOKEN)
    gateway.on_message("bot-a", lambda request: BOT_DOWN)
    env = await start_bridge_env(
        aiohttp_server,
        aiohttp_client,
        rabbit_vhost,
        before_start=crashed,
        gateway=gateway,
        messaging=QUICK_PARK,
    )
    with capture_logs() as logs:
        await eventually(lambda: len(gateway.requests) >= 2, timeout=10)  # B parked, back
        await env.client.close()
    assert parked_alone(logs), logs
    assert [r.text for r in gateway.requests] == ["second"] * len(gateway.requests)
    sent, asked = await sent_after_restart(aiohttp_server, aiohttp_client, rabbit_vhost, env, 1.0)
    assert (sent, asked) == (["echo: second"], ["second"])
