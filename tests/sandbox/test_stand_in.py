"""The X stand-in: it knows the config's credentials, refuses wrong signatures, and calls
the daemon's webhook as X does (signed AAA deliveries, CRCs at start and periodically)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.sandbox.conftest import (
    ECHO_BOT,
    RunningSandbox,
    sandbox_settings,
    start_sandbox,
)
from tests.support.waiting import eventually
from twitter_bot.sandbox.fake_x import FakeX
from twitter_bot.sandbox.webhook_caller import WebhookCaller, XAccount, dm_delivery
from twitter_bot.webhook.payloads import parse_delivery
from twitter_bot.webhook.signature import SIGNATURE_HEADER, crc_response_token, sign_body
from twitter_bot.x import XAuthError, XClient, XCredentials


def _client(
    running: RunningSandbox, session: aiohttp.ClientSession, consumer_secret: str | None = None
) -> XClient:
    auth = running.sandbox.settings.auth
    api_base, upload = FakeX.urls(running.sandbox.x_url)
    return XClient(
        session,
        consumer_key=auth.consumer_key,
        consumer_secret=consumer_secret or auth.consumer_secret.value,
        api_base_url=api_base,
        upload_url=upload,
    )


async def test_stand_in_accepts_the_configured_credentials_and_refuses_wrong_signatures(
    running: RunningSandbox,
) -> None:
    sandbox = running.sandbox
    bot = next(b for b in sandbox.settings.bots if b.user_id == ECHO_BOT)
    creds = XCredentials(bot.access_token.value, bot.access_secret.value)
    async with aiohttp.ClientSession() as session:
        await _client(running, session).indicate_typing(creds, sandbox.user.user_id)

        with pytest.raises(XAuthError) as wrong_consumer:
            await _client(running, session, "not-the-consumer-secret").send_dm_v11(
                creds, sandbox.user.user_id, "hi"
            )
        with pytest.raises(XAuthError) as wrong_token:
            await _client(running, session).send_dm_v11(
                XCredentials(bot.access_token.value, "not-the-access-secret"),
                sandbox.user.user_id,
                "hi",
            )

    assert (wrong_consumer.value.status, wrong_consumer.value.code) == (401, 32)
    assert (wrong_token.value.status, wrong_token.value.code) == (401, 32)
    assert [c.user_id for c in sandbox.x.calls] == [ECHO_BOT]  # only the signed typing call
    assert sandbox.x.sent_dms() == []
    assert [(r.status, r.body["errors"][0]["code"]) for r in sandbox.x.rejections] == [
        (401, 32),
        (401, 32),
    ]


async def test_a_wrongly_signed_call_shows_in_the_trip_of_the_message_being_bridged(
    running: RunningSandbox,
) -> None:
    sandbox = running.sandbox
    event_id, answer = await sandbox.send(ECHO_BOT, "hi")
    assert answer.status == 200
    await eventually(lambda: len(sandbox.x.sent_dms()) == 1)
    bot = next(b for b in sandbox.settings.bots if b.user_id == ECHO_BOT)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(XAuthError):
            await _client(running, session).indicate_typing(
                XCredentials(bot.access_token.value, "wrong"), sandbox.user.user_id
            )

    [trip] = [t for t in sandbox.hub.snapshot()["trips"] if t["event_id"] == event_id]
    refused = [s for s in trip["steps"] if s["name"] == "x-refused"]
    assert [(s["ok"], s["detail"]) for s in refused] == [
        (False, "X refused indicate_typing: 401 code 32")
    ]


async def test_crc_runs_at_start_and_periodically(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    running = await start_sandbox(aiohttp_server, sandbox_settings(tmp_path), crc_interval=0.1)
    hub = running.sandbox.hub
    first = hub.snapshot()["crc"]
    assert first["ok"] and first["detail"] == "response_token matches"

    await eventually(lambda: hub.snapshot()["crc"]["at"] > first["at"], timeout=5)
    assert hub.snapshot()["crc"]["ok"]

    async with (
        aiohttp.ClientSession() as http,
        http.post(running.url + "api/crc") as response,
    ):
        assert response.status == 200
        assert (await response.json())["ok"] is True


async def _recording_webhook(
    aiohttp_server: Callable[..., Awaitable[TestServer]], crc_answer: Callable[[str], Any]
) -> tuple[TestServer, list[tuple[bytes, dict[str, str]]]]:
    received: list[tuple[bytes, dict[str, str]]] = []

    async def deliver(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        return web.json_response({"queued": 1, "duplicates": 0})

    async def crc(request: web.Request) -> web.Response:
        return web.json_response({"response_token": crc_answer(request.query["crc_token"])})

    app = web.Application()
    app.router.add_post("/webhooks", deliver)
    app.router.add_get("/webhooks", crc)
    return await aiohttp_server(app), received


async def test_deliveries_are_signed_over_the_raw_body_in_x_shape(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    server, received = await _recording_webhook(aiohttp_server, lambda token: "")
    user = XAccount("732739706", "Sandbox User", "sandbox_user")
    bot = XAccount(ECHO_BOT, "echo-bot", "echo-bot")
    async with aiohttp.ClientSession() as http:
        caller = WebhookCaller(lambda: http, str(server.make_url("/webhooks")), "s3cret-value")
        answer = await caller.deliver(
            dm_delivery(
                for_user_id=ECHO_BOT,
                event_id="1850000000000000042",
                sender=user,
                recipient=bot,
                text="Say hello",
                quick_reply_metadata="hello",
            )
        )

    assert (answer.status, answer.queued) == (200, 1)
    [(raw, headers)] = received
    assert headers[SIGNATURE_HEADER] == sign_body("s3cret-value", raw)
    body = json.loads(raw)
    assert body["users"][user.user_id]["screen_name"] == "sandbox_user"
    [event] = body["direct_message_events"]
    assert event["type"] == "message_create"
    assert event["message_create"]["message_data"]["quick_reply_response"] == {
        "type": "options",
        "metadata": "hello",
    }
    [message] = parse_delivery(body, {ECHO_BOT}).messages
    assert (message.event_id, message.sender.id, message.text) == (
        "1850000000000000042",
        user.user_id,
        "Say hello",
    )
    assert message.quick_reply_payload == "hello"
    assert message.sender.screen_name == "sandbox_user"


async def test_a_wrong_crc_answer_is_reported_as_failed(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    good, _ = await _recording_webhook(aiohttp_server, lambda t: crc_response_token("k3y", t))
    bad, _ = await _recording_webhook(aiohttp_server, lambda t: crc_response_token("other", t))
    async with aiohttp.ClientSession() as http:
        passed = await WebhookCaller(lambda: http, str(good.make_url("/webhooks")), "k3y").crc()
        failed = await WebhookCaller(lambda: http, str(bad.make_url("/webhooks")), "k3y").crc()

    assert (passed.ok, passed.status) == (True, 200)
    assert (failed.ok, failed.detail) == (False, "wrong response_token")


async def test_on_dm_api_v2_quick_replies_are_a_numbered_list_answered_by_number(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    settings = sandbox_settings(tmp_path)
    settings = replace(settings, api=replace(settings.api, dm_api="v2"))
    running = await start_sandbox(aiohttp_server, settings)
    sandbox = running.sandbox

    await sandbox.send(ECHO_BOT, "menu")
    [menu] = await sandbox.x.wait_for_dms(1)
    await sandbox.send(ECHO_BOT, "1")
    [_, answer] = await sandbox.x.wait_for_dms(2)

    assert menu.api_version == "2" and menu.quick_replies is None
    assert "1. Say hello" in (menu.text or "")
    assert answer.text == "echo: 1 [payload: hello]"
    messages = sandbox.hub.snapshot()["conversations"][ECHO_BOT]
    assert [m["api"] for m in messages if m["from"] == "bot"] == ["2", "2"]
