"""A delivery is answered 200 only when RabbitMQ confirmed it; any broker trouble is a 503."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import pytest

from tests.conftest import BOT_A_USER_ID, CONSUMER_SECRET, USER_ID, drain_queued, make_settings
from tests.support.deliveries import aaa_delivery, dm_event, signed
from tests.support.rabbit import RABBIT_HOST, RABBIT_PORT, set_policy
from tests.support.tcp_proxy import TcpProxy
from twitter_bot.app import create_app, topology_for


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(RABBIT_HOST, RABBIT_PORT)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def post_dm(client, event_id: str):  # type: ignore[no-untyped-def]
    raw, headers = signed(
        aaa_delivery(BOT_A_USER_ID, dm_event(event_id, USER_ID, BOT_A_USER_ID)), CONSUMER_SECRET
    )
    return await client.post("/webhooks", data=raw, headers=headers)


async def wait_for_status(client, path: str, status: int, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await client.get(path)).status == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} did not become {status} within {timeout}s")


async def test_broker_cut_gives_503_then_recovers_without_restart(
    aiohttp_client, rabbit_vhost: str, proxy: TcpProxy
) -> None:
    settings = make_settings(rabbit_vhost, port=proxy.port)
    client = await aiohttp_client(create_app(settings, role="webhook"))
    assert (await post_dm(client, "100")).status == 200

    await proxy.cut()
    await wait_for_status(client, "/health/ready", 503)
    assert (await post_dm(client, "101")).status == 503
    assert (await client.get("/health/live")).status == 200
    crc = await client.get("/webhooks", params={"crc_token": "t"})
    assert crc.status == 200

    await proxy.restore()
    await wait_for_status(client, "/health/ready", 200)
    # X redelivers the delivery that got 503: now it is accepted.
    assert (await post_dm(client, "101")).status == 200
    queued = await drain_queued(settings)
    assert sorted(e.message_id for e in queued) == ["100", "101"]


async def test_unconfirmed_publish_is_503_within_the_bound(
    aiohttp_client, rabbit_vhost: str, proxy: TcpProxy
) -> None:
    settings = make_settings(rabbit_vhost, port=proxy.port, publish_timeout=0.5)
    client = await aiohttp_client(create_app(settings, role="webhook"))
    proxy.stall()
    started = time.perf_counter()
    response = await post_dm(client, "200")
    elapsed = time.perf_counter() - started
    assert response.status == 503
    assert 0.4 < elapsed < 1.5
    await proxy.cut()
    await wait_for_status(client, "/health/ready", 503)
    await proxy.restore()
    await wait_for_status(client, "/health/ready", 200)
    # The redelivery is not mistaken for a duplicate of the failed attempt.
    assert (await post_dm(client, "200")).status == 200


async def test_broker_down_at_start_then_up(
    aiohttp_client, rabbit_vhost: str, proxy: TcpProxy
) -> None:
    await proxy.cut()
    settings = make_settings(rabbit_vhost, port=proxy.port, connect_timeout=0.3)
    client = await aiohttp_client(create_app(settings, role="webhook"))
    assert (await client.get("/health/ready")).status == 503
    assert (await post_dm(client, "300")).status == 503
    await proxy.restore()
    await wait_for_status(client, "/health/ready", 200)
    assert (await post_dm(client, "300")).status == 200


async def test_unroutable_publish_is_returned_and_503(
    aiohttp_client, settings, rabbit_channel
) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(settings, role="webhook"))
    topology = topology_for(settings)
    for shard in range(topology.shards):
        await rabbit_channel.queue_delete(topology.shard_queue(shard))
    assert (await post_dm(client, "400")).status == 503


async def test_nacked_publish_is_503(aiohttp_client, settings) -> None:  # type: ignore[no-untyped-def]
    prefix = re.escape(settings.rabbit.queue_prefix)
    set_policy(
        settings.rabbit.virtual_host,
        f"full-{settings.rabbit.queue_prefix}",
        f"^{prefix}\\.incoming\\.",
        '{"max-length": 0, "overflow": "reject-publish"}',
    )
    client = await aiohttp_client(create_app(settings, role="webhook"))
    assert (await post_dm(client, "500")).status == 503
    metrics = await (await client.get("/metrics")).text()
    assert 'twitter_bot_webhook_deliveries_total{outcome="unavailable"} 1.0' in metrics
