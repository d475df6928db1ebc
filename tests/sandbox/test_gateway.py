"""The sandbox's bot: the echo bot follows gateway-api.md; `--gateway` proxies a real one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.fakes.fake_gateway import FakeGateway
from tests.sandbox.conftest import ECHO_BOT, sandbox_settings, start_sandbox
from tests.support.daemon import free_port
from tests.support.waiting import eventually
from twitter_bot.gateway.replies import MediaReply, TextReply, parse_replies_strict
from twitter_bot.sandbox.gateway import GatewayCall, GatewayProxy, echo_answer
from twitter_bot.settings import Secret

PICTURE = "http://127.0.0.1:1/sandbox/picture.png"


@pytest.mark.parametrize(
    ("text", "payload", "expected"),
    [
        ("Hi there", None, "echo: Hi there"),
        ("Say hello", "hello", "echo: Say hello [payload: hello]"),
        ("help", None, "echo: help\n"),
        ("MENU", None, "echo: MENU\nPick one:"),
    ],
)
def test_echo_answers_are_valid_gateway_replies(
    text: str, payload: str | None, expected: str
) -> None:
    [reply] = parse_replies_strict({"messages": echo_answer(text, payload, PICTURE)})

    assert isinstance(reply, TextReply)
    assert reply.text.startswith(expected)


def test_menu_offers_quick_replies_and_picture_sends_an_image() -> None:
    [menu] = parse_replies_strict({"messages": echo_answer("menu", None, PICTURE)})
    [picture] = parse_replies_strict(
        {"messages": echo_answer("Show a picture", "picture", PICTURE)}
    )

    assert isinstance(menu, TextReply)
    assert [(q.label, q.payload) for q in menu.quick_replies] == [
        ("Say hello", "hello"),
        ("Show a picture", "picture"),
        ("Think slowly", "slow"),
    ]
    assert isinstance(picture, MediaReply)
    assert (picture.kind, picture.url) == ("image", PICTURE)
    assert picture.text == "echo: Show a picture [payload: picture]"


async def test_echo_bot_checks_the_gateway_token_and_repeats_answers_by_message_id(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    settings = sandbox_settings(tmp_path)
    settings = replace(settings, gateway=replace(settings.gateway, token=Secret("gw")))
    running = await start_sandbox(aiohttp_server, settings)
    url = running.sandbox.gateway_url + f"/v1/bots/echo-bot/conversations/1-{ECHO_BOT}/messages"
    body = {"message_id": "77", "text": "once", "quick_reply": None}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body) as response:
            assert response.status == 401
        headers = {"Authorization": "Bearer gw", "Idempotency-Key": "77"}
        async with http.post(url, json=body, headers=headers) as response:
            first = await response.json()
        async with http.post(url, json={**body, "text": "changed"}, headers=headers) as again:
            second = await again.json()
        async with http.post(url, data=b"[]", headers=headers) as invalid:
            assert invalid.status == 422

    assert first == second == {"messages": [{"type": "text", "text": "echo: once"}]}

    # The daemon presents the configured token: a DM still gets its echo.
    await running.sandbox.send(ECHO_BOT, "with a token")
    dms = await running.sandbox.x.wait_for_dms(1)
    assert dms[0].text == "echo: with a token"


async def test_gateway_option_proxies_to_a_real_bot_platform_and_times_it(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    platform = FakeGateway()
    platform.on_message("echo-bot", lambda request: [{"type": "text", "text": "from upstream"}])
    platform.set_delay("echo-bot", 0.2)
    async with platform.running() as upstream:
        running = await start_sandbox(
            aiohttp_server, sandbox_settings(tmp_path), gateway_url=upstream + "/"
        )
        sandbox = running.sandbox
        event_id, _ = await sandbox.send(ECHO_BOT, "hello upstream")
        [dm] = await sandbox.x.wait_for_dms(1)

    assert dm.text == "from upstream"
    [request] = platform.requests
    assert request.idempotency_key == event_id and request.problems == ()
    assert request.body["sender"]["id"] == sandbox.user.user_id
    [trip] = sandbox.hub.snapshot()["trips"]
    [gateway] = [s for s in trip["steps"] if s["name"] == "gateway"]
    assert gateway["ok"] and gateway["detail"].startswith("200 in ")
    assert float(gateway["detail"].split()[2]) >= 200  # the platform's 0.2 s delay, in ms
    assert sandbox.hub.info["gateway"] == upstream + "/"


async def test_an_unreachable_or_failing_gateway_shows_in_the_trip(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    running = await start_sandbox(
        aiohttp_server,
        sandbox_settings(tmp_path),
        gateway_url=f"http://127.0.0.1:{free_port()}",
    )
    sandbox = running.sandbox
    event_id, answer = await sandbox.send(ECHO_BOT, "anyone there?")
    assert answer.status == 200  # accepted and queued: the bridge retries later

    def gateway_steps() -> list[dict[str, object]]:
        [trip] = [t for t in sandbox.hub.snapshot()["trips"] if t["event_id"] == event_id]
        return [s for s in trip["steps"] if s["name"] == "gateway"]

    await eventually(gateway_steps)
    [step, *_] = gateway_steps()
    assert step["ok"] is False
    assert str(step["detail"]).startswith("502 in ")
    assert "gateway unreachable" in str(step["detail"])
    assert sandbox.x.sent_dms() == []


async def test_the_proxy_passes_the_platform_s_answer_through_and_reports_it() -> None:
    calls: list[GatewayCall] = []
    platform = FakeGateway()
    async with platform.running() as upstream, aiohttp.ClientSession() as http:
        proxy = GatewayProxy(upstream, lambda: http, calls.append, timeout=5)
        server = TestServer(proxy.make_app())
        await server.start_server()
        try:
            url = server.make_url("/v1/bots/bot/conversations/1-2/messages")
            async with http.post(url, data=b"{}", headers={"Idempotency-Key": "9"}) as r:
                assert r.status == 422  # the platform's own contract check, passed through
        finally:
            await server.close()

    [call] = calls
    assert (call.message_id, call.bot_id, call.conversation_id, call.status) == (
        "9",
        "bot",
        "1-2",
        422,
    )
