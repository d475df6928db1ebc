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
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.fakes.fake_gateway import RecordedRequest
from tests.fakes.fake_x import EndpointKind
from tests.support.process_env import BOT_ID, ProcessEnv, start_process_env
from tests.support.rabbit import RABBIT_HOST, RABBIT_PORT
from tests.support.tcp_proxy import TcpProxy


@contextlib.asynccontextmanager
async def a_behind_a_proxy_and_b(env: ProcessEnv) -> AsyncIterator[tuple[str, TcpProxy]]:
    """Instance A (its broker link through a proxy the test can cut) and standby B.

    A subscribes first, so it is the active consumer of every shard. Yields A's URL
    and the proxy; kills both instances at the end.
    """
    proxy = TcpProxy(RABBIT_HOST, RABBIT_PORT)
    await proxy.start()
    hosts = f'\nchatbots.messaging.rabbit.hosts: ["{RABBIT_HOST}:{proxy.port}"]\n'
    config_a, port_a = env.variant("instance-a", extra=hosts)
    daemons = []
    try:
        daemons.append(await env.start("all", config_a, port_a))
        daemons.append(await env.start())
        yield daemons[0].url, proxy
    finally:
        for daemon in daemons:
            await daemon.kill()
        await proxy.stop()


def answers_in_two_parts(env: ProcessEnv) -> asyncio.Event:
    """The bot answers "part one", "part two"; the event is set once it was asked."""
    asked = asyncio.Event()

    def answer(request: RecordedRequest) -> list[dict[str, Any]]:
        asked.set()
        return [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]

    env.gateway.on_message(BOT_ID, answer)
    return asked


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
    async with a_behind_a_proxy_and_b(env) as (url_a, proxy):
        await env.send_dm(url_a, "4401", "hello")
        await asyncio.wait_for(in_flight.wait(), 10)
        # Two more in the same conversation: A holds them queued behind the first.
        await env.send_dm(url_a, "4402", "two")
        await env.send_dm(url_a, "4403", "three")
        await proxy.cut()  # A's broker link drops while A waits for the gateway
        await env.x.wait_for_dms(3, timeout=15)
        await asyncio.sleep(4.0)  # A's gateway call ends too; any second copy shows up
    assert [dm.text for dm in env.x.sent_dms()] == ["only once", "then two", "then three"]
    # A's call had reached the gateway before its link dropped, so B asks again: with the
    # same Idempotency-Key, which lets the bot platform answer it as the same message
    # (gateway-api.md). A drops its answer instead of sending it.
    first = [r for r in env.gateway.requests_for(BOT_ID) if r.body["text"] == "hello"]
    assert 1 <= len(first) <= 2
    assert {r.headers["Idempotency-Key"] for r in first} == {"4401"}


async def test_a_link_that_drops_between_two_replies_stops_the_rest_of_the_answer(
    aiohttp_server: Any, tmp_path: Path, rabbit_vhost: str
) -> None:
    # A sends the first reply of a two-reply answer; its broker link drops while X is
    # still taking that DM. B resumes from the answer's checkpoint. A must not send the
    # second reply too: only the first, in flight at the cut, may go out twice.
    env = await start_process_env(aiohttp_server, tmp_path, rabbit_vhost)
    asked = answers_in_two_parts(env)
    async with a_behind_a_proxy_and_b(env) as (url_a, proxy):
        env.x.set_delay(1.5, EndpointKind.DM_V11)  # A's first DM is still at X at the cut
        await env.send_dm(url_a, "4501", "two parts please")
        await asyncio.wait_for(asked.wait(), 10)
        await asyncio.sleep(0.5)
        await proxy.cut()
        env.x.set_delay(0.0, EndpointKind.DM_V11)
        await env.x.wait_for_dms(3, timeout=15)
        await asyncio.sleep(2.0)  # a second "part two" would show up by now
    texts = [dm.text for dm in env.x.sent_dms()]
    # A's first DM was already at X: it lands (late) beside B's copy. Nothing after it.
    assert texts.count("part one") == 2, texts
    assert texts.count("part two") == 1, texts


async def test_a_reply_x_took_while_the_link_was_down_is_not_sent_again_by_the_same_instance(
    aiohttp_server: Any, tmp_path: Path, rabbit_vhost: str
) -> None:
    # One instance. Its first reply is at X when the broker link drops, so the checkpoint
    # saying "part one is out" cannot be written; the message comes back to the same
    # instance (with only the answer's checkpoint) once the link is up. The instance
    # remembers what X accepted from it and goes on with part two.
    env = await start_process_env(aiohttp_server, tmp_path, rabbit_vhost)
    asked = answers_in_two_parts(env)
    proxy = TcpProxy(RABBIT_HOST, RABBIT_PORT)
    await proxy.start()
    hosts = f'\nchatbots.messaging.rabbit.hosts: ["{RABBIT_HOST}:{proxy.port}"]\n'
    config, port = env.variant("alone", extra=hosts)
    daemon = await env.start("all", config, port)
    try:
        env.x.set_delay(1.5, EndpointKind.DM_V11)  # part one is still at X at the cut
        await env.send_dm(daemon.url, "4601", "two parts please")
        await asyncio.wait_for(asked.wait(), 10)
        await asyncio.sleep(0.5)
        await proxy.cut()
        env.x.set_delay(0.0, EndpointKind.DM_V11)
        await env.x.wait_for_dms(1, timeout=5)
        await asyncio.sleep(1.0)
        await proxy.restore()
        await env.x.wait_for_dms(2, timeout=30)
        await asyncio.sleep(2.0)  # a second "part one" would show up by now
    finally:
        await daemon.kill()
        await proxy.stop()
    assert [dm.text for dm in env.x.sent_dms()] == ["part one", "part two"]
