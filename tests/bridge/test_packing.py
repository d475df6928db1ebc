"""Packed deliveries (rabbit.pack-publishes) through the whole pipeline: every DM bridged
once and in order, and a shutdown mid-pack loses nothing (twitter_bot/queue/packing.py)."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from tests.conftest import BOT_A_USER_ID, RABBIT_HOST, RABBIT_PORT, drain_queued
from tests.fakes.fake_gateway import FakeGateway, RecordedRequest, echo
from tests.queue.test_rabbit import queue_depths
from tests.support.bridge_env import (
    GATEWAY_TOKEN,
    BridgeEnv,
    fast_messaging,
    start_bridge_env,
)
from tests.support.deliveries import aaa_delivery, dm_event
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually
from twitter_bot.app import build_queue
from twitter_bot.bridge import scheduler as scheduler_module
from twitter_bot.metrics import Metrics
from twitter_bot.models import conversation_id
from twitter_bot.queue.base import Envelope, shard_of
from twitter_bot.settings import Settings
from twitter_bot.webhook.handler import envelope_for
from twitter_bot.webhook.payloads import parse_delivery


def users_on_one_shard(count: int, shards: int) -> list[str]:
    """User ids whose conversations with bot A land on the same shard."""
    by_shard: dict[int, list[str]] = defaultdict(list)
    for n in itertools.count(700_000_001):
        user = str(n)
        shard = shard_of(conversation_id(BOT_A_USER_ID, user), shards)
        by_shard[shard].append(user)
        if len(by_shard[shard]) == count:
            return by_shard[shard]
    raise AssertionError("unreachable")


def queued_dm(settings: Settings, event_id: str, user: str, text: str) -> Envelope:
    bots = {bot.user_id: bot.bot_id for bot in settings.bots}
    delivery = aaa_delivery(BOT_A_USER_ID, dm_event(event_id, user, BOT_A_USER_ID, text))
    [message] = parse_delivery(delivery, bots).messages
    return envelope_for(message, time.time())


async def publish_one_then_a_pack(settings: Settings, event_ids: dict[str, str]) -> None:
    """Queue a "hi" DM from each user (by event id) at once, with packing: the first goes
    alone, those published while it is in flight share one broker message."""
    packed = replace(settings, rabbit=replace(settings.rabbit, pack_publishes=True))
    queue = build_queue(packed, Metrics())
    await queue.start()
    try:
        assert await queue.wait_ready(5)
        dms = [queued_dm(settings, event_id, user, "hi") for user, event_id in event_ids.items()]
        await asyncio.gather(*(queue.publish([dm]) for dm in dms))
    finally:
        await queue.stop()


async def leave_answered_checkpoints(
    settings: Settings, event_ids: dict[str, str], replies: int = 1
) -> None:
    """What a process killed after answering these "hi" DMs (user -> event id) leaves:
    a checkpoint of each with its first reply sent, of ``replies`` ("echo: hi", then
    "more: n")."""
    queue = build_queue(settings, Metrics())
    await queue.start()
    try:
        assert await queue.wait_ready(5)
        for user, event_id in event_ids.items():
            dm = queued_dm(settings, event_id, user, "hi")
            answer = [{"type": "text", "text": "echo: hi"}]
            answer += [{"type": "text", "text": f"more: {n}"} for n in range(1, replies)]
            await queue.checkpoint(replace(dm, progress={"answer": answer, "sent": 1}))
    finally:
        await queue.stop()


def a_done_dm_in_a_pack(
    done_dm: str, event_ids: dict[str, str], replies: int = 1
) -> Callable[[Settings], Awaitable[None]]:
    """What a process killed with ``done_dm`` answered leaves: its checkpoint (first of
    ``replies`` replies out), and the DMs (user -> event id) queued one then a pack,
    ``done_dm`` in the pack."""

    async def crashed(settings: Settings) -> None:
        await leave_answered_checkpoints(settings, {done_dm: event_ids[done_dm]}, replies)
        await publish_one_then_a_pack(settings, event_ids)

    return crashed


def gateway_taking(
    seconds: dict[str, float], answer: Callable[[RecordedRequest], Any] = echo
) -> FakeGateway:
    """A gateway for bot A that takes this long (by sender id, else no time) to answer."""

    async def slow_answer(request: RecordedRequest) -> Any:
        await asyncio.sleep(seconds.get(request.body["sender"]["id"], 0))
        return answer(request)

    gateway = FakeGateway(token=GATEWAY_TOKEN)
    gateway.on_message("bot-a", slow_answer)
    return gateway


async def restart_and_wait(
    aiohttp_server: Any, aiohttp_client: Any, env: BridgeEnv, dms: int, **kw: Any
) -> BridgeEnv:
    """A new process on ``env``'s queues, once it has sent ``dms`` DMs and a moment more
    (a done DM answered again would show up then)."""
    restarted = await start_bridge_env(
        aiohttp_server,
        aiohttp_client,
        env.settings.rabbit.virtual_host,
        rabbit={"pack_publishes": True, "queue_prefix": env.settings.rabbit.queue_prefix},
        **kw,
    )
    await restarted.x.wait_for_dms(dms, timeout=10)
    await asyncio.sleep(0.5)
    return restarted


def metric_value(metrics: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", metrics, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def test_a_burst_is_packed_and_each_conversation_gets_its_replies_once_in_order(
    aiohttp_server: Any, aiohttp_client: Any, rabbit_vhost: str
) -> None:
    env = await start_bridge_env(
        aiohttp_server, aiohttp_client, rabbit_vhost, rabbit={"pack_publishes": True}
    )
    users = [str(800_000_001 + n) for n in range(24)]
    rounds = 3

    async def conversation(user: str) -> None:
        for n in range(rounds):  # X delivers one user's DMs one after another
            await env.send_dm(f"{user}{n}", user, text=f"{user}:{n}")

    await asyncio.gather(*(conversation(user) for user in users))
    await env.x.wait_for_dms(len(users) * rounds, timeout=20)
    await asyncio.sleep(0.3)  # a DM sent twice would show up now

    for user in users:
        texts = [dm.text for dm in env.x.sent_dms() if dm.recipient_id == user]
        assert texts == [f"echo: {user}:{n}" for n in range(rounds)], user
    metrics = await env.metrics()
    published = metric_value(metrics, "twitter_bot_publish_pack_size_sum")
    packs = metric_value(metrics, "twitter_bot_publish_pack_size_count")
    assert published == len(users) * rounds
    assert packs < published  # concurrent deliveries to one shard did share messages
    assert 'twitter_bot_bridge_messages_total{outcome="delivered"} 72.0' in metrics


@pytest.mark.parametrize("replies", [1, 3])
async def test_at_shutdown_a_pack_with_a_dm_unfinished_goes_back_whole_and_only_it_is_resent(
    aiohttp_server: Any, aiohttp_client: Any, rabbit_vhost: str, replies: int
) -> None:
    """A pack of three DMs: the bot answers two at once and hangs on the third. On shutdown
    the pack goes back whole, in its place, behind checkpoints saying its two done DMs are
    done: after the restart only the third is answered, and nothing is lost or reordered.
    With several replies per answer the checkpoints come after each reply: the pack keeps
    only the newest of each DM, so the next consumer cannot resume from an older one."""
    first, fast_a, slow, fast_b = users_on_one_shard(4, shards=8)
    event_ids = {first: "9100", fast_a: "9101", slow: "9102", fast_b: "9103"}

    async def queued(settings: Settings) -> None:
        await publish_one_then_a_pack(settings, event_ids)
        assert sorted((await queue_depths(settings)).values())[-2:] == [0, 2]

    def answer(request: RecordedRequest) -> Any:
        return [{"type": "text", "text": f"{n}: {request.text}"} for n in range(replies)]

    env = await start_bridge_env(
        aiohttp_server,
        aiohttp_client,
        rabbit_vhost,
        before_start=queued,
        gateway=gateway_taking({slow: 30}, answer),
        messaging=fast_messaging(message_timeout=1.0, max_attempts=20),
        rabbit={"pack_publishes": True},
    )
    await env.x.wait_for_dms(3 * replies, timeout=10)
    await env.client.close()  # shutdown: the slow one is requeued, the rest are done
    sent = sorted(dm.recipient_id for dm in env.x.sent_dms())
    assert sent == sorted([first, fast_a, fast_b] * replies)

    restarted = await restart_and_wait(
        aiohttp_server,
        aiohttp_client,
        env,
        replies,
        gateway=gateway_taking({}, answer),
        # One message at a time: the first checkpoint it gets must be the newest.
        messaging=fast_messaging(prefetch=1),
    )
    assert [(dm.recipient_id, dm.text) for dm in restarted.x.sent_dms()] == [
        (slow, f"{n}: hi") for n in range(replies)
    ]
    assert [r.body["sender"]["id"] for r in restarted.gateway.requests_for("bot-a")] == [slow]
    await restarted.client.close()
    assert await drain_queued(restarted.settings) == []


@pytest.mark.parametrize("first_takes", [0.1, 1.0])
async def test_a_checkpoint_finished_before_its_pack_arrives_still_stays_with_the_pack(
    aiohttp_server: Any, aiohttp_client: Any, rabbit_vhost: str, first_takes: float
) -> None:
    """A crashed process left a DM's checkpoint (its answer out) and the pack holding the
    DM with another one still to do. The checkpoint comes first and finishes the DM here
    before the pack has arrived (prefetch 2, the message before the pack is slow). After
    a shutdown before the other DM is done, a restart still finds the DM done and does
    not ask about, or answer, it again: the checkpoint waits for the pack and is acked
    with it, or (the pack slower than that wait) is acked alone, and the DM found done
    in the pack is checkpointed again to go with it."""
    first, done_dm, slow = users_on_one_shard(3, shards=8)
    event_ids = {first: "9300", done_dm: "9301", slow: "9302"}
    gateway = gateway_taking({first: first_takes, slow: 30})
    env = await start_bridge_env(
        aiohttp_server,
        aiohttp_client,
        rabbit_vhost,
        before_start=a_done_dm_in_a_pack(done_dm, event_ids),
        gateway=gateway,
        messaging=fast_messaging(prefetch=2, message_timeout=5.0),
        rabbit={"pack_publishes": True},
    )
    await env.x.wait_for_dms(1, timeout=10)  # the first; the pack arrives after it
    await eventually(lambda: any(r.body["sender"]["id"] == slow for r in gateway.requests))
    await env.client.close()  # shutdown: the slow DM is unfinished, its pack goes back
    assert [dm.recipient_id for dm in env.x.sent_dms()] == [first]

    restarted = await restart_and_wait(aiohttp_server, aiohttp_client, env, 1)
    assert [dm.recipient_id for dm in restarted.x.sent_dms()] == [slow]
    assert [r.body["sender"]["id"] for r in restarted.gateway.requests_for("bot-a")] == [slow]
    await restarted.client.close()


@pytest.mark.parametrize("replies", [1, 2])
async def test_a_checkpoint_acked_before_its_pack_arrives_leaves_a_record_the_next_process_finds(
    aiohttp_server: Any, aiohttp_client: Any, rabbit_vhost: str, replies: int
) -> None:
    """As above, but the pack never reaches the process that finished the DM from its
    checkpoint: prefetch 1, and the message before the pack hangs until shutdown (as a
    prefetch full of parked messages holds a pack back during a gateway outage). That
    process is the only one knowing the DM is done; so it records the finished answer in
    the stream every worker reads before it acks the checkpoint, and the next process,
    given the pack, finds the DM done there and does not ask about, or answer, it again.
    With two replies, the checkpoint has the second still to send: the DM is finished
    (and recorded) only once it is out."""
    first, done_dm, other = users_on_one_shard(3, shards=8)
    event_ids = {first: "9310", done_dm: "9311", other: "9312"}
    gateway = gateway_taking({first: 30})
    env = await start_bridge_env(
        aiohttp_server,
        aiohttp_client,
        rabbit_vhost,
        before_start=a_done_dm_in_a_pack(done_dm, event_ids, replies),
        gateway=gateway,
        messaging=fast_messaging(prefetch=1, message_timeout=1.0, max_attempts=20),
        rabbit={"pack_publishes": True},
    )
    await eventually(lambda: [r.body["sender"]["id"] for r in gateway.requests] == [first])
    recorded = 'twitter_bot_bridge_finished_answers_total{event="recorded"} 1.0'
    assert recorded in await env.metrics()
    await env.client.close()  # shutdown: the first goes back; the pack never came here
    assert [dm.text for dm in env.x.sent_dms()] == ["more: 1"] * (replies - 1)

    restarted = await restart_and_wait(aiohttp_server, aiohttp_client, env, 2)
    assert sorted(dm.recipient_id for dm in restarted.x.sent_dms()) == sorted([first, other])
    asked = [r.body["sender"]["id"] for r in restarted.gateway.requests_for("bot-a")]
    assert sorted(asked) == sorted([first, other])
    found = 'twitter_bot_bridge_finished_answers_total{event="found"} 1.0'
    assert found in await restarted.metrics()
    await restarted.client.close()
    assert await drain_queued(restarted.settings) == []


@pytest.mark.parametrize(
    ("from_a_copy", "prefetch"), [(False, 1), (True, 2)], ids=["answered here", "from a copy"]
)
async def test_a_done_dm_found_again_in_its_pack_after_a_broker_cut_is_checkpointed_again(
    aiohttp_server: Any, aiohttp_client: Any, rabbit_vhost: str, from_a_copy: bool, prefetch: int
) -> None:
    """A pack of two DMs: one is done here (answered here, or from a crashed process's
    checkpoint that waited for the pack), the bot hangs on the other. The broker link
    drops and comes back: the same process gets the done DM's checkpoints again and acks
    them at once (it knows the DM is done; the pack comes only once one is acked), then
    the pack. The done DM, found in it again, is checkpointed again to go with the pack,
    every time and not only the first: after a shutdown, a restart neither asks about
    nor answers it again."""
    first, done_dm, slow = users_on_one_shard(3, shards=8)
    event_ids = {first: "9320", done_dm: "9321", slow: "9322"}
    proxy = TcpProxy(RABBIT_HOST, RABBIT_PORT)
    await proxy.start()

    async def queued(settings: Settings) -> None:
        if from_a_copy:
            await leave_answered_checkpoints(settings, {done_dm: event_ids[done_dm]})
        await publish_one_then_a_pack(settings, event_ids)

    gateway = gateway_taking({slow: 30})
    try:
        env = await start_bridge_env(
            aiohttp_server,
            aiohttp_client,
            rabbit_vhost,
            before_start=queued,
            gateway=gateway,
            messaging=fast_messaging(prefetch=prefetch, message_timeout=5.0),
            rabbit={"pack_publishes": True, "port": proxy.port},
        )
        answered_here = [first] if from_a_copy else [first, done_dm]
        await env.x.wait_for_dms(len(answered_here), timeout=10)
        await eventually(lambda: any(r.body["sender"]["id"] == slow for r in gateway.requests))
        assert sorted(dm.recipient_id for dm in env.x.sent_dms()) == sorted(answered_here)
        # Finished from the copy, the DM is then found done in its pack.
        found_done = int(from_a_copy)
        dropped = "twitter_bot_bridge_duplicates_dropped_total"
        await env.until_metric(f"{dropped} {found_done}.0", 15)
        await proxy.cut()
        await proxy.restore()
        await env.until_metric(f"{dropped} {found_done + 1}.0", 15, "the pack again")
        await env.client.close()  # shutdown: the slow DM is unfinished, its pack goes back
    finally:
        await proxy.stop()

    restarted = await restart_and_wait(aiohttp_server, aiohttp_client, env, 1)
    assert [dm.recipient_id for dm in restarted.x.sent_dms()] == [slow]
    assert [r.body["sender"]["id"] for r in restarted.gateway.requests_for("bot-a")] == [slow]
    await restarted.client.close()
    assert await drain_queued(restarted.settings) == []


async def test_finished_checkpoints_waiting_for_their_messages_leave_prefetch_room(
    aiohttp_server: Any,
    aiohttp_client: Any,
    rabbit_vhost: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two DMs a crashed process answered: their checkpoints come first and each would
    wait for its message. With prefetch 2, both waiting would keep the messages out
    until the wait ran out (30 s here); only half the prefetch may wait, so the other
    checkpoint is acked, the messages arrive, and everything settles at once."""
    monkeypatch.setattr(scheduler_module, "CHECKPOINT_MESSAGE_WAIT", 30.0)
    users = users_on_one_shard(2, shards=8)
    event_ids = {user: str(9400 + n) for n, user in enumerate(users)}

    async def crashed(settings: Settings) -> None:
        await leave_answered_checkpoints(settings, event_ids)
        await publish_one_then_a_pack(settings, event_ids)

    env = await start_bridge_env(
        aiohttp_server,
        aiohttp_client,
        rabbit_vhost,
        before_start=crashed,
        messaging=fast_messaging(prefetch=2),
        rabbit={"pack_publishes": True},
    )

    async def dropped() -> float:
        return metric_value(await env.metrics(), "twitter_bot_bridge_duplicates_dropped_total")

    deadline = time.monotonic() + 10
    while await dropped() < 2:  # both messages arrived and were found done
        assert time.monotonic() < deadline, "the messages did not arrive in 10 s"
        await asyncio.sleep(0.05)
    assert env.gateway.requests == [] and env.x.sent_dms() == []
    await env.client.close()
    assert await drain_queued(env.settings) == []
