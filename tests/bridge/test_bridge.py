"""The bridge end to end: signed webhook in, gateway called per contract, DMs out as the bot."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.conftest import BOT_A_USER_ID, BOT_B_USER_ID
from tests.fakes.fake_gateway import RecordedRequest, ScriptedResponse
from tests.fakes.fake_x import EndpointKind, v11_error
from tests.support.bridge_env import GATEWAY_TOKEN, PNG, BridgeEnv, fast_messaging, start_bridge_env

ALICE = "732739706"
BOB = "3001969357"


@pytest.fixture
async def env(aiohttp_server, aiohttp_client, rabbit_vhost: str) -> BridgeEnv:  # type: ignore[no-untyped-def]
    return await start_bridge_env(aiohttp_server, aiohttp_client, rabbit_vhost)


def texts(env: BridgeEnv, recipient: str) -> list[str | None]:
    return [dm.text for dm in env.x.sent_dms() if dm.recipient_id == recipient]


async def test_two_bots_end_to_end(env: BridgeEnv) -> None:
    await env.send_dm("1494419467836000004", ALICE, BOT_A_USER_ID, "Hi there")
    await env.send_dm("1494419467836000005", BOB, BOT_B_USER_ID, "Hello B")
    dms = await env.x.wait_for_dms(2)

    by_sender = {dm.user_id: dm for dm in dms}
    assert by_sender[BOT_A_USER_ID].recipient_id == ALICE
    assert by_sender[BOT_A_USER_ID].text == "echo: Hi there"
    assert by_sender[BOT_B_USER_ID].recipient_id == BOB
    assert by_sender[BOT_B_USER_ID].text == "echo: Hello B"
    assert env.x.rejections == []  # every request was validly signed

    request = env.gateway.requests_for("bot-a")[0]
    assert request.problems == ()  # matches gateway-api.md section 1
    assert request.conversation_id == f"{ALICE}-{BOT_A_USER_ID}"
    assert request.authorization == f"Bearer {GATEWAY_TOKEN}"
    assert request.idempotency_key == request.request_id == "1494419467836000004"
    body = request.body
    assert body["bot_id"] == "bot-a"
    assert body["recipient_id"] == BOT_A_USER_ID
    assert body["sender"]["id"] == ALICE
    assert body["quick_reply"] is None
    assert body["attachments"] == []
    # Read receipt and typing indicator went out before the answer, as bot A.
    kinds = [c.kind for c in env.x.calls_of(user_id=BOT_A_USER_ID)]
    assert kinds[:2] == [EndpointKind.MARK_READ, EndpointKind.INDICATE_TYPING]

    await asyncio.sleep(0.2)  # the acks and counters follow the last DM
    metrics = await env.metrics()
    assert 'twitter_bot_dms_total{bot_id="bot-a",code="",outcome="sent"} 1.0' in metrics
    assert 'twitter_bot_dms_total{bot_id="bot-b",code="",outcome="sent"} 1.0' in metrics
    assert 'twitter_bot_gateway_request_seconds_count{outcome="ok"} 2.0' in metrics
    assert 'twitter_bot_bridge_messages_total{outcome="delivered"} 2.0' in metrics
    assert "twitter_bot_bridge_end_to_end_seconds_count 2.0" in metrics


@pytest.mark.parametrize("dm_api", ["v1.1", "v2"])
async def test_every_reply_type(
    aiohttp_server, aiohttp_client, rabbit_vhost: str, dm_api: str
) -> None:  # type: ignore[no-untyped-def]
    env = await start_bridge_env(aiohttp_server, aiohttp_client, rabbit_vhost, dm_api=dm_api)

    def answer(request: RecordedRequest) -> list[dict[str, Any]]:
        if request.body["quick_reply"] is not None:
            return [{"type": "text", "text": f"you chose {request.body['quick_reply']['payload']}"}]
        return [
            {"type": "typing"},
            {"type": "text", "text": "Hello!"},
            {
                "type": "text",
                "text": "What next?",
                "quick_replies": [
                    {"label": "Order status", "description": "Track a parcel", "payload": "status"},
                    {"label": "Talk to a human", "description": "Hand over", "payload": "human"},
                ],
            },
            {"type": "image", "url": env.media_url("map.png"), "text": "Our shop"},
            {"type": "image", "url": env.media_url("missing.png"), "text": "Caption only"},
        ]

    env.gateway.on_message("bot-a", answer)
    await env.send_dm("100", ALICE, text="hello")
    dms = await env.x.wait_for_dms(4)
    assert [dm.text for dm in dms][:2] == ["Hello!", dms[1].text]
    question = dms[1]
    if dm_api == "v1.1":
        assert question.text == "What next?"
        assert [o["metadata"] for o in question.quick_replies or []] == ["status", "human"]
    else:
        assert question.text is not None
        assert question.text.startswith("What next?")
        assert "1. Order status" in question.text and "2. Talk to a human" in question.text
    assert dms[2].text == "Our shop"
    assert dms[2].media_id is not None
    assert env.x.media[dms[2].media_id].data == PNG
    assert dms[3].text == "Caption only" and dms[3].media_id is None
    assert EndpointKind.INDICATE_TYPING in [c.kind for c in env.x.calls]

    # The user answers: a tapped option on v1.1, the option's number on v2.
    if dm_api == "v1.1":
        await env.send_dm("101", ALICE, text="Talk to a human", quick_reply_metadata="human")
    else:
        await env.send_dm("101", ALICE, text="2")
    dms = await env.x.wait_for_dms(5)
    assert dms[4].text == "you chose human"
    assert env.gateway.requests_for("bot-a")[1].body["quick_reply"] == {"payload": "human"}


async def test_order_is_kept_across_a_burst_in_one_conversation(env: BridgeEnv) -> None:
    async def answer(request: RecordedRequest) -> list[dict[str, Any]]:
        await asyncio.sleep(0.01)
        text = request.body["text"]
        return [{"type": "text", "text": f"{text}-a"}, {"type": "text", "text": f"{text}-b"}]

    env.gateway.on_message("bot-a", answer)
    for i in range(12):
        await env.send_dm(str(2000 + i), ALICE, text=f"m{i}")
    await env.x.wait_for_dms(24, timeout=15)
    assert texts(env, ALICE) == [f"m{i}-{part}" for i in range(12) for part in ("a", "b")]


async def test_the_bot_is_asked_while_typing_shows_and_answers_after_it(
    env: BridgeEnv,
) -> None:
    # Read receipt and typing indicator are best effort: the gateway call does not wait
    # for them, but the answer never goes out before "typing" (it would stick after it).
    env.x.set_delay(1.0, EndpointKind.INDICATE_TYPING)
    typing_done_when_asked: list[bool] = []

    def answer(request: RecordedRequest) -> list[dict[str, Any]]:
        kinds = [c.kind for c in env.x.calls_of(user_id=BOT_A_USER_ID)]
        typing_done_when_asked.append(EndpointKind.INDICATE_TYPING in kinds)
        return [{"type": "text", "text": "right away"}]

    env.gateway.on_message("bot-a", answer)
    await env.send_dm("310", ALICE)
    await env.x.wait_for_dms(1, timeout=10)
    assert typing_done_when_asked == [False]
    kinds = [c.kind for c in env.x.calls_of(user_id=BOT_A_USER_ID)]
    assert kinds.index(EndpointKind.INDICATE_TYPING) < kinds.index(EndpointKind.DM_V11)


async def test_a_slow_conversation_does_not_block_another(env: BridgeEnv) -> None:
    async def answer(request: RecordedRequest) -> list[dict[str, Any]]:
        if request.body["sender"]["id"] == ALICE:
            await asyncio.sleep(2.0)
        return [{"type": "text", "text": "done"}]

    env.gateway.on_message("bot-a", answer)
    await env.send_dm("300", ALICE)
    await env.send_dm("301", BOB)
    started = time.monotonic()
    [first] = await env.x.wait_for_dms(1, timeout=5)
    assert first.recipient_id == BOB
    assert time.monotonic() - started < 1.5
    await env.x.wait_for_dms(2, timeout=5)


async def test_gateway_503_twice_then_success_sends_one_reply(env: BridgeEnv) -> None:
    env.gateway.fail_then_succeed("bot-a", times=2, status=503)
    await env.send_dm("400", ALICE, text="retry me")
    await env.x.wait_for_dms(1, timeout=10)
    await asyncio.sleep(0.3)
    assert texts(env, ALICE) == ["echo: retry me"]
    calls = env.gateway.requests_for("bot-a")
    assert len(calls) == 3
    assert {c.idempotency_key for c in calls} == {"400"}
    metrics = await env.metrics()
    assert 'twitter_bot_bridge_retries_total{kind="gateway"} 2.0' in metrics
    assert 'twitter_bot_gateway_request_seconds_count{outcome="transient"} 2.0' in metrics


async def test_gateway_422_is_dead_lettered_after_one_call(env: BridgeEnv) -> None:
    env.gateway.script("bot-a", ScriptedResponse(422, {"error": "unprocessable"}))
    await env.send_dm("500", ALICE, text="bad")
    await env.send_dm("501", ALICE, text="next")  # the conversation goes on
    [dead] = await env.dead_letters(1)
    assert dead.message_id == "500"
    assert dead.headers["x-error-kind"] == "gateway"
    assert dead.headers["x-error-status"] == 422
    assert "unprocessable" in str(dead.headers["x-error-body"])
    assert json.loads(dead.body)["payload"]["text"] == "bad"
    await env.x.wait_for_dms(1)
    assert texts(env, ALICE) == ["echo: next"]
    assert len(env.gateway.requests_for("bot-a")) == 2


async def test_x_429_pauses_only_that_bot_until_its_reset(env: BridgeEnv) -> None:
    reset = int(time.time()) + 3
    env.x.fail_next(
        EndpointKind.DM_V11,
        429,
        v11_error(88, "Rate limit exceeded"),
        {"x-rate-limit-reset": str(reset), "x-rate-limit-remaining": "0"},
        for_user_id=BOT_A_USER_ID,
    )
    started = time.monotonic()
    await env.send_dm("600", ALICE, BOT_A_USER_ID, text="to a")
    await asyncio.sleep(0.3)
    await env.send_dm("601", BOB, BOT_B_USER_ID, text="to b")
    [first] = await env.x.wait_for_dms(1, timeout=5)
    assert first.user_id == BOT_B_USER_ID
    assert time.monotonic() - started < 2.0
    [_, second] = await env.x.wait_for_dms(2, timeout=10)
    assert second.user_id == BOT_A_USER_ID and second.text == "echo: to a"
    assert second.at >= reset - 1
    assert texts(env, ALICE) == ["echo: to a"]  # sent once
    assert 'twitter_bot_bridge_rate_limit_pauses_total{bot_id="bot-a"} 1.0' in await env.metrics()


async def test_x_403_349_is_dead_lettered(env: BridgeEnv) -> None:
    env.x.fail_next(
        EndpointKind.DM_V11, 403, v11_error(349, "You cannot send messages to this user.")
    )
    await env.send_dm("700", ALICE, text="blocked")
    [dead] = await env.dead_letters(1)
    assert dead.headers["x-error-kind"] == "x"
    assert dead.headers["x-error-status"] == 403
    assert dead.headers["x-error-code"] == 349
    assert env.x.sent_dms() == []
    metrics = await env.metrics()
    assert 'twitter_bot_dms_total{bot_id="bot-a",code="349",outcome="failed"} 1.0' in metrics
    assert 'twitter_bot_bridge_dead_letters_total{kind="x"} 1.0' in metrics


async def test_retries_past_the_hold_bound_are_parked_and_keep_order(
    aiohttp_server,
    aiohttp_client,
    rabbit_vhost: str,  # type: ignore[no-untyped-def]
) -> None:
    env = await start_bridge_env(
        aiohttp_server,
        aiohttp_client,
        rabbit_vhost,
        messaging=fast_messaging(max_rate_limit_hold=0.5),
    )
    # Bot A is rate limited for 2 s: longer than the hold bound, so its message is parked.
    env.x.fail_next(
        EndpointKind.DM_V11,
        429,
        v11_error(88, "Rate limit exceeded"),
        {"x-rate-limit-reset": str(int(time.time()) + 2)},
        for_user_id=BOT_A_USER_ID,
    )
    for i in range(3):
        await env.send_dm(str(800 + i), ALICE, text=f"p{i}")
    await env.x.wait_for_dms(3, timeout=15)
    await asyncio.sleep(1.5)  # a parked copy left over would come back by now
    assert texts(env, ALICE) == ["echo: p0", "echo: p1", "echo: p2"]
    assert len(env.gateway.requests_for("bot-a")) == 3
    metrics = await env.metrics()
    assert "twitter_bot_bridge_parked_total" in metrics
    assert "twitter_bot_bridge_parked_total 0.0" not in metrics


async def test_attempts_exhausted_are_dead_lettered(
    aiohttp_server,
    aiohttp_client,
    rabbit_vhost: str,  # type: ignore[no-untyped-def]
) -> None:
    env = await start_bridge_env(
        aiohttp_server, aiohttp_client, rabbit_vhost, messaging=fast_messaging(max_attempts=3)
    )
    env.gateway.fail_then_succeed("bot-a", times=10, status=500)
    await env.send_dm("900", ALICE)
    [dead] = await env.dead_letters(1)
    assert dead.headers["x-error-kind"] == "attempts-exhausted"
    assert dead.headers["x-attempt"] == 3
    assert len(env.gateway.requests_for("bot-a")) == 3


async def test_a_failed_later_reply_does_not_resend_earlier_ones(env: BridgeEnv) -> None:
    env.gateway.on_message(
        "bot-a",
        lambda r: [
            {"type": "text", "text": "one"},
            {"type": "image", "url": env.media_url("map.png"), "text": "pic"},
            {"type": "text", "text": "two"},
        ],
    )
    # "one" is out when the upload for the second reply hits X's over-capacity
    # error; the retry must resume at the picture, not resend "one" or ask the bot again.
    env.x.fail_next(EndpointKind.MEDIA_INIT, 503, v11_error(130, "Over capacity"), times=1)
    await env.send_dm("1000", ALICE)
    await env.x.wait_for_dms(3, timeout=10)
    await asyncio.sleep(0.3)
    assert texts(env, ALICE) == ["one", "pic", "two"]
    assert len(env.gateway.requests_for("bot-a")) == 1


async def test_dead_letter_retry_redrives_through_the_bridge(env: BridgeEnv) -> None:
    import io

    from twitter_bot.deadletters import Command, Selection, execute

    env.gateway.script("bot-a", ScriptedResponse(404, {"error": "no such bot yet"}))
    await env.send_dm("1100", ALICE, text="lost?")
    await asyncio.sleep(0.5)
    out, err = io.StringIO(), io.StringIO()
    assert await execute(env.settings, Command("list"), out, err) == 0
    assert "1100" in out.getvalue() and "gateway" in out.getvalue()
    # The operator fixed the bot, then re-drives the message.
    retry = Command("retry", Selection(ids=frozenset({"1100"})))
    assert await execute(env.settings, retry, out, err) == 0, err.getvalue()
    await env.x.wait_for_dms(1, timeout=10)
    assert texts(env, ALICE) == ["echo: lost?"]
    assert [r.idempotency_key for r in env.gateway.requests_for("bot-a")] == ["1100", "1100"]


async def test_pushed_messages_are_sent_in_order_after_queued_replies(
    aiohttp_server,
    aiohttp_client,
    rabbit_vhost: str,  # type: ignore[no-untyped-def]
) -> None:
    env = await start_bridge_env(
        aiohttp_server, aiohttp_client, rabbit_vhost, push_token="push-token-Zx9Yw8"
    )

    async def slow_answer(request: RecordedRequest) -> list[dict[str, Any]]:
        await asyncio.sleep(0.5)
        return [{"type": "text", "text": "bot answer"}]

    env.gateway.on_message("bot-a", slow_answer)
    await env.send_dm("1200", ALICE, text="hello")
    conversation = f"{ALICE}-{BOT_A_USER_ID}"
    response = await env.client.post(
        f"/v1/bots/bot-a/conversations/{conversation}/messages",
        json={
            "messages": [
                {"type": "text", "text": "agent: hi"},
                {"type": "typing"},
                {"type": "text", "text": "agent: bye"},
            ]
        },
        headers={"Authorization": "Bearer push-token-Zx9Yw8"},
    )
    assert response.status == 202
    assert await response.json() == {"accepted": 3}
    await env.x.wait_for_dms(3, timeout=10)
    assert texts(env, ALICE) == ["bot answer", "agent: hi", "agent: bye"]
    unauthorized = await env.client.post(
        f"/v1/bots/bot-a/conversations/{conversation}/messages",
        json={"messages": [{"type": "text", "text": "x"}]},
    )
    assert unauthorized.status == 401


async def test_no_secret_reaches_the_logs(env: BridgeEnv) -> None:
    from structlog.testing import capture_logs

    env.gateway.fail_then_succeed("bot-a", times=1, status=503)
    env.x.fail_next(
        EndpointKind.DM_V11,
        403,
        v11_error(349, "You cannot send messages to this user."),
        for_user_id=BOT_B_USER_ID,
    )
    with capture_logs() as events:
        await env.send_dm("1300", ALICE, BOT_A_USER_ID)
        await env.send_dm("1301", BOB, BOT_B_USER_ID)
        await env.x.wait_for_dms(1, timeout=10)
        await env.dead_letters(1)
    secrets = [env.settings.auth.consumer_secret.value, GATEWAY_TOKEN]
    for bot in env.settings.bots:
        secrets += [bot.access_token.value, bot.access_secret.value]
    text = repr(events)
    assert "bridge.message_dead_lettered" in text and "bridge.retry_scheduled" in text
    for secret in secrets:
        assert secret not in text
