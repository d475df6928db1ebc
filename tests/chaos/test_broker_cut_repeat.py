"""A worker that loses its broker link mid-message must not bridge it beside its successor.

Found by the chaos run (bench/chaos.py, "broker link cut"): when instance A's connection
drops, RabbitMQ requeues A's unacked deliveries and single-active-consumer hands the shard
to instance B, which bridges them. A used to carry on with the same deliveries (its
checkpoints and acks failed, its gateway calls and X sends did not), so the user got the
replies twice, interleaved with later ones. A now drops every delivery of the lost link
before its next side effect.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.fakes.fake_gateway import RecordedRequest
from tests.support.process_env import BOT_ID, start_process_env
from tests.support.rabbit import RABBIT_HOST, RABBIT_PORT
from tests.support.tcp_proxy import TcpProxy


async def test_a_message_in_flight_when_the_broker_link_drops_is_answered_once(
    aiohttp_server: Any, tmp_path: Path, rabbit_vhost: str
) -> None:
    env = await start_process_env(aiohttp_server, tmp_path, rabbit_vhost)
    in_flight = asyncio.Event()

    async def slow(request: RecordedRequest) -> list[dict[str, Any]]:
        text = request.body["text"]
        if text == "hello":
            in_flight.set()
            await asyncio.sleep(2.0)
            return [{"type": "text", "text": "only once"}]
        return [{"type": "text", "text": f"then {text}"}]

    env.gateway.on_message(BOT_ID, slow)
    proxy = TcpProxy(RABBIT_HOST, RABBIT_PORT)
    await proxy.start()
    hosts = f'\nchatbots.messaging.rabbit.hosts: ["{RABBIT_HOST}:{proxy.port}"]\n'
    config_a, port_a = env.variant("instance-a", extra=hosts)
    daemons = []
    try:
        # A subscribes first, so it is the active consumer of every shard; B is the standby.
        daemons.append(await env.start("all", config_a, port_a))
        daemons.append(await env.start())
        await env.send_dm(daemons[0].url, "4401", "hello")
        await asyncio.wait_for(in_flight.wait(), 10)
        # Two more in the same conversation: A holds them queued behind the first.
        await env.send_dm(daemons[0].url, "4402", "two")
        await env.send_dm(daemons[0].url, "4403", "three")
        await proxy.cut()  # A's broker link drops while A waits for the gateway
        await env.x.wait_for_dms(3, timeout=15)
        await asyncio.sleep(4.0)  # A's gateway call ends too; any second copy shows up
    finally:
        for daemon in daemons:
            await daemon.kill()
        await proxy.stop()
    assert [dm.text for dm in env.x.sent_dms()] == ["only once", "then two", "then three"]
    # A's call had reached the gateway before its link dropped, so B asks again: with the
    # same Idempotency-Key, which lets the bot platform answer it as the same message
    # (gateway-api.md). A drops its answer instead of sending it.
    first = [r for r in env.gateway.requests_for(BOT_ID) if r.body["text"] == "hello"]
    assert 1 <= len(first) <= 2
    assert {r.headers["Idempotency-Key"] for r in first} == {"4401"}
