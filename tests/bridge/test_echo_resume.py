"""After a crash, a reply X may already have taken is checked against X's echo of it.

The daemon is SIGKILLed at the moment X takes a DM (FakeX's on_call, before its answer
leaves): the reply is out, the checkpoint saying so never written. X echoes every DM a
bot sends back to the webhook (x-api.md); the restarted daemon finds the echo and goes
on with the next reply instead of sending that one again.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.fake_x import EndpointKind, Rejection, XCall
from tests.support.daemon import DaemonProcess
from tests.support.process_env import BOT_ID, ProcessEnv, start_process_env


@pytest.fixture
async def env(aiohttp_server: Any, tmp_path: Path, rabbit_vhost: str) -> AsyncIterator[ProcessEnv]:
    env = await start_process_env(aiohttp_server, tmp_path, rabbit_vhost)
    with env.config.open("a") as config:  # off by default
        config.write("chatbots.twitter-bot.webhooks-messaging.resend-echo-wait: 2s\n")
    yield env


def kill_now(daemon: DaemonProcess) -> None:
    """SIGKILL from inside FakeX's handler: the daemon never sees X's answer."""
    os.kill(daemon.process.pid, signal.SIGKILL)


def answers(table: dict[str, list[str]]) -> Any:
    return lambda request: [{"type": "text", "text": t} for t in table[request.body["text"]]]


@pytest.mark.parametrize("echoes_arrive", ["after the restart", "while it is down"])
async def test_a_reply_x_took_at_the_kill_is_not_sent_again_once_its_echo_arrives(
    env: ProcessEnv, echoes_arrive: str
) -> None:
    # While it is down, X's echoes go to another instance (a webhook only): the restarted
    # worker reads them from the echo stream, from before it subscribed.
    env.gateway.on_message(BOT_ID, answers({"first": ["one", "two", "three"]}))
    daemon = await env.start()
    others: list[DaemonProcess] = []
    try:

        def on_call(call: XCall) -> None:
            if call.text == "two":
                kill_now(daemon)

        env.x.on_call = on_call
        await env.send_dm(daemon.url, "7001", "first")
        await env.x.wait_for_dms(2, timeout=10)
        await daemon.process.wait()
        env.x.on_call = None
        if echoes_arrive == "while it is down":
            config, port = env.variant("webhook-only")
            others.append(await env.start("webhook", config, port))
            for dm in env.x.sent_dms():
                await env.send_echo(others[0].url, dm)
            await asyncio.sleep(2.5)  # older than the moment the worker subscribes
        others.append(await env.start())
        if echoes_arrive == "after the restart":
            for dm in env.x.sent_dms():
                await env.send_echo(others[-1].url, dm)
        await env.x.wait_for_dms(3, timeout=20)
        await asyncio.sleep(1.5)  # a second "two" would show up by now
    finally:
        await daemon.kill()
        for other in others:
            await other.kill()
    assert [dm.text for dm in env.x.sent_dms()] == ["one", "two", "three"]
    assert [r.body["text"] for r in env.gateway.requests_for(BOT_ID)] == ["first"]


async def test_without_an_echo_the_reply_in_doubt_is_sent_again(env: ProcessEnv) -> None:
    # X's echo may never come (some tiers drop deliveries): after the wait, the reply
    # goes out again. Twice is better than never.
    env.gateway.on_message(BOT_ID, answers({"first": ["one", "two"]}))
    daemon = await env.start()
    restarted: DaemonProcess | None = None
    try:

        def on_call(call: XCall) -> None:
            if call.text == "one":
                kill_now(daemon)

        env.x.on_call = on_call
        await env.send_dm(daemon.url, "7101", "first")
        await env.x.wait_for_dms(1, timeout=10)
        await daemon.process.wait()
        env.x.on_call = None
        restarted = await env.start()
        await env.x.wait_for_dms(3, timeout=20)
        await asyncio.sleep(1.0)
    finally:
        await daemon.kill()
        if restarted is not None:
            await restarted.kill()
    assert [dm.text for dm in env.x.sent_dms()] == ["one", "one", "two"]


async def test_an_echo_stamped_before_the_checkpoint_is_not_taken_for_the_reply_in_doubt(
    env: ProcessEnv,
) -> None:
    # "ok" answers the first DM and opens the answer to the second. The second's "ok" is
    # refused by X and the daemon killed: it never went out. The first's echo (same
    # text, stamped before the second's checkpoint) arrives late and must not count.
    env.gateway.on_message(BOT_ID, answers({"hi": ["ok"], "more": ["ok", "bye"]}))
    daemon = await env.start()
    restarted: DaemonProcess | None = None
    try:
        await env.send_dm(daemon.url, "7201", "hi")
        await env.x.wait_for_dms(1, timeout=10)
        first_ok = env.x.sent_dms()[0]

        def on_rejection(rejection: Rejection) -> None:
            kill_now(daemon)

        env.x.on_rejection = on_rejection
        env.x.fail_next(EndpointKind.DM_V11, 503, {"errors": [{"code": 131, "message": "x"}]})
        await env.send_dm(daemon.url, "7202", "more")
        await daemon.process.wait()
        env.x.on_rejection = None
        restarted = await env.start()
        await env.send_echo(restarted.url, first_ok)
        await env.x.wait_for_dms(3, timeout=20)
        await asyncio.sleep(1.0)
    finally:
        await daemon.kill()
        if restarted is not None:
            await restarted.kill()
    assert [dm.text for dm in env.x.sent_dms()] == ["ok", "ok", "bye"]
