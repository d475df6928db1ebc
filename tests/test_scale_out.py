"""Several instances against one RabbitMQ: order per conversation, failover, dedupe, quorum."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import BOT_A_USER_ID, make_settings
from tests.fakes.fake_gateway import RecordedRequest
from tests.support.daemon import SECRETS, DaemonProcess
from tests.support.deliveries import aaa_delivery, dm_event, signed
from tests.support.process_env import BOT, BOT_ID, ProcessEnv, start_process_env
from tests.support.rabbit import RABBIT_HOST, RABBIT_PORT, queue_types
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually
from twitter_bot.app import create_app
from twitter_bot.settings import BrokerHost

FAST_PROBES = "\nchatbots.messaging.rabbit.shard-probe-interval: 300ms\n"
USERS = [str(700000000 + i) for i in range(6)]


@pytest.fixture
async def env(aiohttp_server: Any, tmp_path: Path, rabbit_vhost: str) -> ProcessEnv:
    env = await start_process_env(aiohttp_server, tmp_path, rabbit_vhost)

    async def answer(request: RecordedRequest) -> list[dict[str, Any]]:
        await asyncio.sleep(0.05)
        text = request.body["text"]
        return [{"type": "text", "text": f"{text}/a"}, {"type": "text", "text": f"{text}/b"}]

    env.gateway.on_message(BOT_ID, answer)
    return env


async def start_instances(
    env: ProcessEnv, count: int, extra: str = FAST_PROBES
) -> list[DaemonProcess]:
    daemons = []
    for i in range(count):
        config, port = env.variant(f"instance-{i}", extra=extra)
        daemons.append(await env.start("all", config, port))
    return daemons


async def post(
    http: aiohttp.ClientSession, daemon: DaemonProcess, user: str, event_id: str, text: str
) -> None:
    raw, headers = signed(
        aaa_delivery(BOT, dm_event(event_id, user, BOT, text)), SECRETS["consumer_secret"]
    )
    async with http.post(daemon.url + "/webhooks", data=raw, headers=headers) as response:
        assert response.status == 200


async def active_shards(http: aiohttp.ClientSession, daemon: DaemonProcess) -> list[int]:
    async with http.get(daemon.url + "/health/ready") as response:
        return list((await response.json())["active_shards"])


def replies_by_user(env: ProcessEnv) -> dict[str, list[str]]:
    by_user: dict[str, list[str]] = defaultdict(list)
    for dm in env.x.sent_dms():
        by_user[dm.recipient_id or ""].append(dm.text or "")
    return by_user


def expected(user_index: int, messages: int) -> list[str]:
    return [f"u{user_index}m{m}/{part}" for m in range(messages) for part in ("a", "b")]


async def test_three_instances_keep_each_conversation_in_order(env: ProcessEnv) -> None:
    daemons = await start_instances(env, 3)
    try:
        async with aiohttp.ClientSession() as http:
            for m in range(5):
                for u, user in enumerate(USERS):
                    # Deliveries land on any instance, as behind a load balancer.
                    await post(http, daemons[(m + u) % 3], user, f"9{u}{m:03d}", f"u{u}m{m}")
            await env.x.wait_for_dms(60, timeout=30)
            await asyncio.sleep(0.5)
            shards = [set(await active_shards(http, d)) for d in daemons]
    finally:
        for daemon in daemons:
            await daemon.kill()
    by_user = replies_by_user(env)
    for u, user in enumerate(USERS):
        assert by_user[user] == expected(u, 5)
    # Every shard is consumed by exactly one instance.
    assert set().union(*shards) == set(range(8))
    assert sum(len(s) for s in shards) == 8


async def test_killing_the_active_instance_mid_burst_fails_over_without_loss(
    env: ProcessEnv,
) -> None:
    daemons = await start_instances(env, 3)
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.sleep(1.0)  # probes settle
            owners = [await active_shards(http, d) for d in daemons]
            victim = max(range(3), key=lambda i: len(owners[i]))
            assert owners[victim], owners
            survivors = [d for i, d in enumerate(daemons) if i != victim]
            for m in range(6):
                for u, user in enumerate(USERS):
                    await post(http, survivors[(m + u) % 2], user, f"8{u}{m:03d}", f"u{u}m{m}")
                if m == 2:
                    await env.x.wait_for_dms(6, timeout=10)
                    await daemons[victim].kill()  # SIGKILL with work in flight
            await env.x.wait_for_dms(72, timeout=40)
            await asyncio.sleep(1.0)
            after = [set(await active_shards(http, d)) for d in survivors]
    finally:
        for daemon in daemons:
            await daemon.kill()
    assert set().union(*after) == set(range(8))  # the victim's shards moved
    by_user = replies_by_user(env)
    for u, user in enumerate(USERS):
        got = by_user[user]
        # Nothing lost and nothing out of order: with repeats removed the sequence is exact.
        assert list(dict.fromkeys(got)) == expected(u, 6), got
        assert len(got) - len(set(got)) <= 2  # at most the one in-flight reply repeated


async def test_a_duplicate_delivery_to_two_instances_is_bridged_once(env: ProcessEnv) -> None:
    daemons = await start_instances(env, 2)
    try:
        async with aiohttp.ClientSession() as http:
            # X sends the same event twice; a load balancer hands the copies to different instances.
            await post(http, daemons[0], USERS[0], "77001", "once")
            await post(http, daemons[1], USERS[0], "77001", "once")
            await env.x.wait_for_dms(2, timeout=10)
            await asyncio.sleep(1.0)
    finally:
        for daemon in daemons:
            await daemon.kill()
    assert [dm.text for dm in env.x.sent_dms()] == ["once/a", "once/b"]
    assert len(env.gateway.requests_for(BOT_ID)) == 1


async def test_quorum_queues_end_to_end(env: ProcessEnv, rabbit_vhost: str) -> None:
    extra = FAST_PROBES + "chatbots.messaging.rabbit { queue-type: quorum, delivery-limit: 5 }\n"
    env.gateway.fail_then_succeed(BOT_ID, times=1, status=503)
    daemons = await start_instances(env, 2, extra)
    try:
        async with aiohttp.ClientSession() as http:
            for m in range(3):
                await post(http, daemons[m % 2], USERS[0], f"66{m:03d}", f"u0m{m}")
            await env.x.wait_for_dms(6, timeout=20)
    finally:
        for daemon in daemons:
            await daemon.kill()
    assert replies_by_user(env)[USERS[0]] == expected(0, 3)
    prefix = env.config.read_text().split('queue-prefix: "')[1].split('"')[0]
    types = {
        name: kind for name, kind in queue_types(rabbit_vhost).items() if name.startswith(prefix)
    }
    assert types[f"{prefix}.incoming.0"] == "quorum"
    assert types[f"{prefix}.dead-letter"] == "quorum"
    assert not [name for name in types if name.startswith(f"{prefix}.delay")]
    # No checkpoints on quorum queues, so nothing for the streams to add to.
    assert f"{prefix}.echoes" not in types and f"{prefix}.finished" not in types
    events = [
        json.loads(line)["event"]
        for line in daemons[0].logs + daemons[1].logs
        if line.startswith("{")
    ]
    assert "bridge.retry_scheduled" in events  # the 503 was retried on a quorum shard


async def test_an_unreachable_first_host_fails_over_to_the_next(
    aiohttp_client: Any, rabbit_vhost: str
) -> None:
    first = TcpProxy(RABBIT_HOST, RABBIT_PORT)
    second = TcpProxy(RABBIT_HOST, RABBIT_PORT)
    await first.start()
    await second.start()
    await first.cut()  # the first node is down from the start
    base = make_settings(rabbit_vhost, connect_timeout=0.5)
    hosts = (BrokerHost(RABBIT_HOST, first.port), BrokerHost(RABBIT_HOST, second.port))
    settings = replace(base, rabbit=replace(base.rabbit, hosts=hosts))
    client = await aiohttp_client(create_app(settings, role="webhook"))
    try:
        assert (await client.get("/health/ready")).status == 200  # on the second node
        assert first.accepted == 0
        await first.restore()
        await second.cut()  # the node we are on dies: back to the first
        # Not a poll for the 503 in between: the reconnect can be quicker than a poll.
        await eventually(lambda: first.accepted > 0, 15, "a reconnect through the first host")
        await wait_for_status(client, "/health/ready", 200)
        raw, headers = signed(
            aaa_delivery(BOT_A_USER_ID, dm_event("55001", USERS[0], BOT_A_USER_ID)),
            settings.auth.consumer_secret.value,
        )
        assert (await client.post("/webhooks", data=raw, headers=headers)).status == 200
    finally:
        await first.stop()
        await second.stop()


async def wait_for_status(client: Any, path: str, status: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await client.get(path)).status == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} did not become {status}")
