"""The fake gateway itself: recording, responders, scripts, delay, token and contract checks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.fakes.fake_gateway import FakeGateway, RecordedRequest, ScriptedResponse
from tests.gateway.conftest import make_message
from tests.support.waiting import eventually

PATH = "/v1/bots/bot-1/conversations/1-2/messages"
HEADERS = {"Idempotency-Key": "m1", "X-Request-Id": "m1"}


def body(**overrides: Any) -> dict[str, Any]:
    return {
        **make_message(message_id="m1", bot_id="bot-1", conversation_id="1-2").to_json(),
        **overrides,
    }


async def post(
    session: aiohttp.ClientSession, server: TestServer, payload: Any, **headers: str
) -> tuple[int, Any]:
    async with session.post(
        server.make_url(PATH), json=payload, headers={**HEADERS, **headers}
    ) as response:
        return response.status, await response.json(content_type=None)


async def test_default_echo_and_recording(
    fake: FakeGateway, server: TestServer, session: aiohttp.ClientSession
) -> None:
    status, answer = await post(session, server, body(text="ping"))

    assert (status, answer) == (200, {"messages": [{"type": "text", "text": "echo: ping"}]})
    [request] = fake.requests
    assert (request.bot_id, request.conversation_id, request.path) == ("bot-1", "1-2", PATH)
    assert request.message_id == "m1"
    assert fake.requests_for("bot-1") == [request]
    assert fake.requests_for("other") == []


async def test_async_handler_per_bot(
    fake: FakeGateway, server: TestServer, session: aiohttp.ClientSession
) -> None:
    async def handler(request: RecordedRequest) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        return [{"type": "typing"}, {"type": "text", "text": request.text.upper()}]

    fake.on_message("bot-1", handler)

    _, answer = await post(session, server, body(text="hi"))

    assert answer == {"messages": [{"type": "typing"}, {"type": "text", "text": "HI"}]}


async def test_fail_then_succeed(
    fake: FakeGateway, server: TestServer, session: aiohttp.ClientSession
) -> None:
    fake.fail_then_succeed("bot-1", times=2, status=503, headers={"Retry-After": "1"})

    statuses = [(await post(session, server, body()))[0] for _ in range(3)]

    assert statuses == [503, 503, 200]


async def test_script_then_handler(
    fake: FakeGateway, server: TestServer, session: aiohttp.ClientSession
) -> None:
    fake.script(
        "bot-1",
        ScriptedResponse(429, {"error": "slow down"}, {"Retry-After": "3"}),
        [{"type": "typing"}],
        then=lambda _: ScriptedResponse(204),
    )

    answers = [await post(session, server, body()) for _ in range(3)]

    assert answers == [
        (429, {"error": "slow down"}),
        (200, {"messages": [{"type": "typing"}]}),
        (204, None),
    ]


async def test_delay_per_bot(
    fake: FakeGateway, server: TestServer, session: aiohttp.ClientSession
) -> None:
    fake.set_delay("bot-1", 0.2)

    started = time.monotonic()
    status, _ = await post(session, server, body())

    assert status == 200
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize(
    ("authorization", "expected"), [(None, 401), ("Bearer wrong", 401), ("Bearer s3cret", 200)]
)
async def test_token_enforcement(
    fake: FakeGateway,
    server: TestServer,
    session: aiohttp.ClientSession,
    authorization: str | None,
    expected: int,
) -> None:
    fake.token = "s3cret"
    headers = {} if authorization is None else {"Authorization": authorization}

    status, _ = await post(session, server, body(), **headers)

    assert status == expected
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (body(timestamp="2026-11-21T19:18:31Z"), "timestamp must look like"),
        (body(channel="x"), "channel must be 'twitter'"),
        (body(bot_id="bot-2"), "bot_id must match the path"),
        (body(quick_reply="opt"), "quick_reply must be null or {payload}"),
        (body(attachments=[{"type": "image"}]), "attachments[0] must be"),
        (body(sender={"id": 1, "screen_name": None, "name": None}), "sender.id"),
        (body(extra=1), "unexpected extra"),
        ({"text": "hi"}, "missing message_id"),
        (body(message_id="m2"), "Idempotency-Key must equal message_id"),
    ],
)
async def test_contract_violations_answer_422(
    fake: FakeGateway,
    server: TestServer,
    session: aiohttp.ClientSession,
    payload: dict[str, Any],
    problem: str,
) -> None:
    status, answer = await post(session, server, payload)

    assert status == 422
    assert any(p.startswith(problem) for p in answer["problems"]), answer
    assert fake.requests[0].problems == tuple(answer["problems"])


async def test_contract_check_can_be_disabled(
    aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    fake = FakeGateway(check_contract=False)
    server = await aiohttp_server(fake.app)

    status, _ = await post(session, server, {"text": "loose"})

    assert status == 200
    assert fake.requests[0].problems != ()


async def test_invalid_json_is_400(
    fake: FakeGateway, server: TestServer, session: aiohttp.ClientSession
) -> None:
    async with session.post(server.make_url(PATH), data=b"{nope", headers=HEADERS) as response:
        assert response.status == 400
    assert fake.requests[0].raw_body == b"{nope"


async def test_running_context_serves_and_stops_a_slow_bot(
    session: aiohttp.ClientSession,
) -> None:
    fake = FakeGateway()
    fake.set_delay("bot-1", 30.0)
    started = time.monotonic()

    async with fake.running() as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        # Waits until the fake has the request (a fixed client timeout flaked when the
        # machine was busy: the request was not recorded yet when it fired).
        request = asyncio.create_task(
            session.post(f"{base_url}{PATH}", json=body(), headers=HEADERS)
        )
        try:
            await eventually(lambda: fake.requests, timeout=4, what="request recorded")
            assert not request.done()  # the bot is still "thinking"
        finally:
            request.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await request

    assert time.monotonic() - started < 5
    assert len(fake.requests) == 1
