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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.fake_x import EndpointKind, Rejection, XCall
from tests.support.daemon import DaemonProcess
from tests.support.process_env import BOT_ID, ProcessEnv, start_process_env


@dataclass
class EchoEnv(ProcessEnv):
    """A ProcessEnv whose daemons check echoes and are all killed when the test ends."""

    started: list[DaemonProcess] = field(default_factory=list)

    async def start(
        self, role: str = "all", config: Path | None = None, port: int | None = None
    ) -> DaemonProcess:
        daemon = await super().start(role, config, port)
        self.started.append(daemon)
        return daemon


@pytest.fixture
async def env(aiohttp_server: Any, tmp_path: Path, rabbit_vhost: str) -> AsyncIterator[EchoEnv]:
    base = await start_process_env(aiohttp_server, tmp_path, rabbit_vhost)
    with base.config.open("a") as config:  # off by default
        config.write("chatbots.twitter-bot.webhooks-messaging.resend-echo-wait: 2s\n")
    env = EchoEnv(base.config, base.port, base.x, base.gateway)
    try:
        yield env
    finally:
        for daemon in env.started:
            await daemon.kill()


def kill_now(daemon: DaemonProcess) -> None:
    """SIGKILL from inside FakeX's handler: the daemon never sees X's answer."""
    os.kill(daemon.process.pid, signal.SIGKILL)


async def killed_as_x_takes(
    env: EchoEnv, daemon: DaemonProcess, reply: str, event_id: str, text: str
) -> None:
    """Send the DM ``text``; SIGKILL the daemon the moment X takes its reply ``reply``."""

    def on_call(call: XCall) -> None:
        if call.text == reply:
            kill_now(daemon)

    env.x.on_call = on_call
    try:
        await env.send_dm(daemon.url, event_id, text)
        await asyncio.wait_for(daemon.process.wait(), 10)
    finally:
        env.x.on_call = None


def answers(table: dict[str, list[str]]) -> Any:
    return lambda request: [{"type": "text", "text": t} for t in table[request.body["text"]]]


@pytest.mark.parametrize("echoes_arrive", ["after the restart", "while it is down"])
async def test_a_reply_x_took_at_the_kill_is_not_sent_again_once_its_echo_arrives(
    env: EchoEnv, echoes_arrive: str
) -> None:
    # While it is down, X's echoes go to another instance (a webhook only): the restarted
    # worker reads them from the echo stream, from before it subscribed.
    env.gateway.on_message(BOT_ID, answers({"first": ["one", "two", "three"]}))
    await killed_as_x_takes(env, await env.start(), "two", "7001", "first")
    if echoes_arrive == "while it is down":
        config, port = env.variant("webhook-only")
        webhook = await env.start("webhook", config, port)
        for dm in env.x.sent_dms():
            await env.send_echo(webhook.url, dm)
        await asyncio.sleep(2.5)  # older than the moment the worker subscribes
    restarted = await env.start()
    if echoes_arrive == "after the restart":
        for dm in env.x.sent_dms():
            await env.send_echo(restarted.url, dm)
    await env.x.wait_for_dms(3, timeout=20)
    await asyncio.sleep(1.5)  # a second "two" would show up by now
    assert [dm.text for dm in env.x.sent_dms()] == ["one", "two", "three"]
    assert [r.body["text"] for r in env.gateway.requests_for(BOT_ID)] == ["first"]


async def test_without_an_echo_the_reply_in_doubt_is_sent_again(env: EchoEnv) -> None:
    # X's echo may never come (some tiers drop deliveries): after the wait, the reply
    # goes out again. Twice is better than never.
    env.gateway.on_message(BOT_ID, answers({"first": ["one", "two"]}))
    await killed_as_x_takes(env, await env.start(), "one", "7101", "first")
    await env.start()
    await env.x.wait_for_dms(3, timeout=20)
    await asyncio.sleep(1.0)
    assert [dm.text for dm in env.x.sent_dms()] == ["one", "one", "two"]


async def test_an_echo_stamped_before_the_checkpoint_is_not_taken_for_the_reply_in_doubt(
    env: EchoEnv,
) -> None:
    # "ok" answers the first DM and opens the answer to the second. The second's "ok" is
    # refused by X and the daemon killed: it never went out. The first's echo (same
    # text, stamped before the second's checkpoint) arrives late and must not count.
    env.gateway.on_message(BOT_ID, answers({"hi": ["ok"], "more": ["ok", "bye"]}))
    daemon = await env.start()
    await env.send_dm(daemon.url, "7201", "hi")
    await env.x.wait_for_dms(1, timeout=10)
    first_ok = env.x.sent_dms()[0]

    def on_rejection(rejection: Rejection) -> None:
        kill_now(daemon)

    env.x.on_rejection = on_rejection
    env.x.fail_next(EndpointKind.DM_V11, 503, {"errors": [{"code": 131, "message": "x"}]})
    await env.send_dm(daemon.url, "7202", "more")
    await asyncio.wait_for(daemon.process.wait(), 10)
    env.x.on_rejection = None
    restarted = await env.start()
    await env.send_echo(restarted.url, first_ok)
    await env.x.wait_for_dms(3, timeout=20)
    await asyncio.sleep(1.0)
    assert [dm.text for dm in env.x.sent_dms()] == ["ok", "ok", "bye"]
