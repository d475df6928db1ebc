"""SIGKILL at the worst moments: the real daemon process, restarted, loses nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.fake_gateway import FakeGateway, RecordedRequest
from tests.fakes.fake_x import EndpointKind, FakeX
from tests.support.daemon import SECRETS, DaemonProcess, free_port, write_config
from tests.support.deliveries import aaa_delivery, dm_event, signed

BOT = "1230981029831098231"
BOT_ID = "aaaabbbb-4444-5555-6666-ccccddddeeee"
USER = "732739706"


@dataclass
class CrashEnv:
    config: Path
    port: int
    x: FakeX
    gateway: FakeGateway

    async def start(self) -> DaemonProcess:
        daemon = await DaemonProcess.start(self.config, self.port)
        await daemon.wait_ready()
        return daemon

    async def send_dm(self, daemon: DaemonProcess, event_id: str, text: str) -> None:
        raw, headers = signed(
            aaa_delivery(BOT, dm_event(event_id, USER, BOT, text)), SECRETS["consumer_secret"]
        )
        async with (
            aiohttp.ClientSession() as http,
            http.post(daemon.url + "/webhooks", data=raw, headers=headers) as response,
        ):
            assert response.status == 200


@pytest.fixture
async def crash_env(
    aiohttp_server: Any, tmp_path: Path, rabbit_vhost: str
) -> AsyncIterator[CrashEnv]:
    x = FakeX(consumer_key="proc-app-key", consumer_secret=SECRETS["consumer_secret"])
    x.add_user(BOT, token=SECRETS["bot_token"], secret=SECRETS["bot_secret"])
    x_server = await aiohttp_server(x.make_app())
    api_url, upload_url = FakeX.urls(x_server.make_url("/"))
    gateway = FakeGateway()
    gateway_server = await aiohttp_server(gateway.app)
    port = free_port()
    config = write_config(
        tmp_path / "app.conf",
        vhost=rabbit_vhost,
        queue_prefix=f"crash-{uuid.uuid4().hex[:8]}",
        http_port=port,
        extra=f"""
chatbots.twitter-bot.api.twitter-url: "{api_url}"
chatbots.twitter-bot.api.upload-url: "{upload_url}"
chatbots.gateway-api.url: "{str(gateway_server.make_url("/")).rstrip("/")}"
chatbots.twitter-bot.webhooks-messaging {{ retry-initial-delay: 100ms, retry-max-delay: 500ms }}
chatbots.twitter-bot.logging.level: info
""",
    )
    yield CrashEnv(config, port, x, gateway)


async def test_killed_during_the_gateway_call_the_reply_is_delivered_once(
    crash_env: CrashEnv,
) -> None:
    in_flight = asyncio.Event()
    calls = 0

    async def answer(request: RecordedRequest) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            in_flight.set()
            await asyncio.sleep(30)  # the daemon dies while waiting for this
        return [{"type": "text", "text": f"echo: {request.body['text']}"}]

    crash_env.gateway.on_message(BOT_ID, answer)
    daemon = await crash_env.start()
    try:
        await crash_env.send_dm(daemon, "5001", "are you there?")
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
    crash_env: CrashEnv,
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
        await crash_env.send_dm(daemon, "6001", "first")
        await crash_env.send_dm(daemon, "6002", "second")  # queued behind the first
        await crash_env.x.wait_for_dms(1, timeout=10)
        await daemon.kill()  # SIGKILL with "two" and "three" not yet out
        crash_env.x.set_delay(0.0, kind=EndpointKind.DM_V11)
        daemon = await crash_env.start()
        await crash_env.x.wait_for_dms(5, timeout=20)
        await asyncio.sleep(1.0)
    finally:
        await daemon.kill()
    texts = [dm.text for dm in crash_env.x.sent_dms()]
    # Nothing lost and the order kept; the bot was asked once for the first message
    # (its answer was checkpointed). What was already out may be sent again.
    assert texts[-4:] == ["one", "two", "three", "after"]
    assert texts.count("one") <= 2 and texts.count("two") == 1 and texts.count("three") == 1
    assert [r.body["text"] for r in crash_env.gateway.requests_for(BOT_ID)] == ["first", "second"]
