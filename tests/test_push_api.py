"""The push endpoint (gateway-api.md, section 4) against a real RabbitMQ."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from tests.conftest import BOT_A_USER_ID, BOT_B_USER_ID, USER_ID, drain_queued, make_settings
from twitter_bot.app import Role, create_app
from twitter_bot.metrics import Metrics
from twitter_bot.push_api import bearer_token_matches
from twitter_bot.queue.base import PUSH_KIND
from twitter_bot.settings import PushApiSettings, Secret, Settings

TOKEN = "push-token-Zq81xKe0Lm"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# X's canonical id: the numerically smaller user id first.
CONVERSATION_A = f"{USER_ID}-{BOT_A_USER_ID}"
MESSAGES: list[dict[str, Any]] = [
    {"type": "text", "text": "An agent answered your question."},
    {
        "type": "text",
        "text": "Anything else?",
        "quick_replies": [
            {"label": "Yes", "payload": "yes"},
            {"label": "No", "description": "Close the case", "payload": "no"},
        ],
    },
]


def url(bot_id: str = "bot-a", conversation_id: str = CONVERSATION_A) -> str:
    return f"/v1/bots/{bot_id}/conversations/{conversation_id}/messages"


def with_token(settings: Settings, token: str | None = TOKEN) -> Settings:
    return replace(settings, push_api=PushApiSettings(Secret(token) if token else None))


def pushes(metrics: Metrics, outcome: str) -> float | None:
    return metrics.registry.get_sample_value(
        "twitter_bot_push_requests_total", {"outcome": outcome}
    )


@pytest.fixture
def push_settings(settings: Settings) -> Settings:
    return with_token(settings)


async def client_for(
    aiohttp_client: Any, settings: Settings, role: Role = "webhook", **kwargs: Any
) -> TestClient:
    # The webhook role only fills the queue: no bridge consumes what drain_queued reads back.
    return await aiohttp_client(create_app(settings, role=role, **kwargs))  # type: ignore[no-any-return]


async def test_without_a_token_the_endpoint_does_not_exist(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await client_for(aiohttp_client, with_token(settings, None))
    response = await client.post(url(), json={"messages": MESSAGES}, headers=AUTH)
    assert response.status == 404
    assert await drain_queued(settings) == []


async def test_a_worker_only_process_does_not_serve_pushes(
    aiohttp_client: Any, push_settings: Settings
) -> None:
    client = await client_for(aiohttp_client, push_settings, role="worker")
    response = await client.post(url(), json={"messages": MESSAGES}, headers=AUTH)
    assert response.status == 404


async def test_a_push_is_queued_as_one_envelope(
    aiohttp_client: Any, push_settings: Settings
) -> None:
    metrics = Metrics()
    client = await client_for(aiohttp_client, push_settings, metrics=metrics)
    with capture_logs() as logs:
        response = await client.post(url(), json={"messages": MESSAGES}, headers=AUTH)
    assert response.status == 202
    assert await response.json() == {"accepted": 2}
    queued = await drain_queued(push_settings)
    assert len(queued) == 1
    envelope = queued[0]
    assert envelope.kind == PUSH_KIND
    assert envelope.message_id.startswith("push-")
    assert envelope.conversation_id == CONVERSATION_A
    assert envelope.payload == {
        "bot_user_id": BOT_A_USER_ID,
        "recipient_id": USER_ID,
        "messages": MESSAGES,
    }
    accepted = [e for e in logs if e["event"] == "push.accepted"]
    assert accepted == [
        {
            "event": "push.accepted",
            "log_level": "info",
            "bot_id": "bot-a",
            "conversation_id": CONVERSATION_A,
            "message_id": envelope.message_id,
            "count": 2,
        }
    ]
    assert pushes(metrics, "accepted") == 1
    assert metrics.registry.get_sample_value("twitter_bot_push_messages_queued_total") == 2


async def test_the_conversation_id_is_made_canonical(
    aiohttp_client: Any, push_settings: Settings
) -> None:
    # The bot's id is the larger one: given first, the envelope still uses X's order.
    client = await client_for(aiohttp_client, push_settings)
    reversed_id = f"{BOT_A_USER_ID}-{USER_ID}"
    response = await client.post(
        url(conversation_id=reversed_id), json={"messages": MESSAGES[:1]}, headers=AUTH
    )
    assert response.status == 202
    assert await response.json() == {"accepted": 1}
    [envelope] = await drain_queued(push_settings)
    assert envelope.conversation_id == CONVERSATION_A
    assert envelope.payload["recipient_id"] == USER_ID


async def test_accounts_sharing_a_bot_id_are_told_apart_by_the_conversation(
    aiohttp_client: Any, push_settings: Settings
) -> None:
    bots = tuple(replace(bot, bot_id="shared") for bot in push_settings.bots)
    shared = replace(push_settings, bots=bots)
    client = await client_for(aiohttp_client, shared)
    conversation_b = f"{USER_ID}-{BOT_B_USER_ID}"
    response = await client.post(
        url("shared", conversation_b), json={"messages": MESSAGES}, headers=AUTH
    )
    assert response.status == 202
    [envelope] = await drain_queued(shared)
    assert envelope.conversation_id == conversation_b
    assert envelope.payload["bot_user_id"] == BOT_B_USER_ID
    assert envelope.payload["recipient_id"] == USER_ID


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer "},
    ],
    ids=["missing", "wrong", "longer", "basic", "no-scheme", "empty"],
)
async def test_without_the_right_token_it_is_401(
    aiohttp_client: Any, push_settings: Settings, headers: dict[str, str]
) -> None:
    metrics = Metrics()
    client = await client_for(aiohttp_client, push_settings, metrics=metrics)
    response = await client.post(url(), json={"messages": MESSAGES}, headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (await response.json())["error"]
    assert pushes(metrics, "unauthorized") == 1
    assert await drain_queued(push_settings) == []


async def test_the_token_is_checked_before_the_bot_id(
    aiohttp_client: Any, push_settings: Settings
) -> None:
    client = await client_for(aiohttp_client, push_settings)
    response = await client.post(url("no-such-bot"), json={"messages": MESSAGES})
    assert response.status == 401


def test_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token_matches(f"bearer {TOKEN}", TOKEN)
    assert bearer_token_matches(f"BEARER  {TOKEN} ", TOKEN)
    assert not bearer_token_matches(f"Bearer {TOKEN}", "")
    assert not bearer_token_matches("Bearer caf\udcc3", "caf\u00e9")


async def test_an_unknown_bot_is_404(aiohttp_client: Any, push_settings: Settings) -> None:
    client = await client_for(aiohttp_client, push_settings)
    response = await client.post(url("no-such-bot"), json={"messages": MESSAGES}, headers=AUTH)
    assert response.status == 404
    assert response.headers["Content-Type"].startswith("application/json")
    assert (await response.json())["field"] == "bot_id"
    assert await drain_queued(push_settings) == []


@pytest.mark.parametrize(
    "conversation_id",
    [
        f"{USER_ID}-{BOT_B_USER_ID}",  # another bot's conversation
        f"{USER_ID}-777",  # not the bot's at all
        f"{BOT_A_USER_ID}-{BOT_A_USER_ID}",  # the bot with itself
        f"{BOT_A_USER_ID}",
        f"{USER_ID}-{BOT_A_USER_ID}-1",
        f"0-{BOT_A_USER_ID}",
        f"0{USER_ID}-{BOT_A_USER_ID}",
        f"+{USER_ID}-{BOT_A_USER_ID}",
        f"{USER_ID}_{BOT_A_USER_ID}",
        f"abc-{BOT_A_USER_ID}",
        f"{USER_ID}-{BOT_A_USER_ID} ",
        f"99999999999999999999-{BOT_A_USER_ID}",  # above 2**64 - 1
        "\u0663\u0663\u0663-" + BOT_A_USER_ID,  # non-ASCII digits
    ],
)
async def test_a_conversation_that_is_not_the_bots_is_400(
    aiohttp_client: Any, push_settings: Settings, conversation_id: str
) -> None:
    client = await client_for(aiohttp_client, push_settings)
    response = await client.post(
        url(conversation_id=conversation_id), json={"messages": MESSAGES}, headers=AUTH
    )
    assert response.status == 400
    assert (await response.json())["field"] == "conversation_id"
    assert await drain_queued(push_settings) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b'{"messages": [', "body"),
        (b"\xff\xfe\x00", "body"),
        (b'{"messages": [{"type": "text", "text": NaN}]}', "body"),
        (b"[" * 100_000 + b"]" * 100_000, "body"),
        (b"[]", "body"),
        (b'{"message": []}', "messages"),
        (b'{"messages": {"type": "text"}}', "messages"),
        (b'{"messages": []}', "messages"),
        (b'{"messages": [{"type": "text", "text": "hi"}, "hello"]}', "messages[1]"),
        (b'{"messages": [{"type": "sticker"}]}', "messages[0].type"),
        (b'{"messages": [{"type": "text", "text": ""}]}', "messages[0].text"),
        (b'{"messages": [{"type": "image", "url": "ftp://x.example/a.png"}]}', "messages[0].url"),
    ],
)
async def test_a_body_that_breaks_the_contract_is_400_naming_the_field(
    aiohttp_client: Any, push_settings: Settings, body: bytes, field: str
) -> None:
    client = await client_for(aiohttp_client, push_settings)
    response = await client.post(
        url(), data=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status == 400
    answer = await response.json()
    assert answer["field"] == field
    assert answer["error"]
    assert await drain_queued(push_settings) == []


async def test_a_label_over_36_characters_is_400_with_the_field(
    aiohttp_client: Any, push_settings: Settings
) -> None:
    messages = [
        MESSAGES[0],
        {"type": "text", "text": "Pick", "quick_replies": [{"label": "x" * 37, "payload": "p"}]},
    ]
    client = await client_for(aiohttp_client, push_settings)
    response = await client.post(url(), json={"messages": messages}, headers=AUTH)
    assert response.status == 400
    answer = await response.json()
    assert answer["field"] == "messages[1].quick_replies[0].label"
    assert "36" in answer["error"]
    assert await drain_queued(push_settings) == []


async def test_a_body_over_the_size_limit_is_413(
    aiohttp_client: Any, push_settings: Settings
) -> None:
    small = replace(push_settings, http=replace(push_settings.http, max_body_size=1024))
    client = await client_for(aiohttp_client, small)
    big = {"messages": [{"type": "text", "text": "x" * 2000}]}
    response = await client.post(url(), json=big, headers=AUTH)
    assert response.status == 413


async def test_an_unreachable_broker_is_503(aiohttp_client: Any, settings: Settings) -> None:
    metrics = Metrics()
    down = with_token(make_settings(settings.rabbit.virtual_host, port=1, connect_timeout=0.2))
    client = await client_for(aiohttp_client, down, metrics=metrics)
    response = await client.post(url(), json={"messages": MESSAGES}, headers=AUTH)
    assert response.status == 503
    assert (await response.json())["error"]
    assert pushes(metrics, "unavailable") == 1


async def test_the_token_never_reaches_the_logs(
    aiohttp_client: Any, push_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await client_for(aiohttp_client, push_settings)
    with capture_logs() as logs:
        for headers, bot_id in [
            (AUTH, "bot-a"),
            (AUTH, "no-such-bot"),
            ({"Authorization": f"Bearer {TOKEN[:-1]}"}, "bot-a"),
        ]:
            await client.post(url(bot_id), json={"messages": MESSAGES}, headers=headers)
        await client.post(url(), data=b"{", headers=AUTH)
    await drain_queued(push_settings)
    events = {e["event"] for e in logs}
    assert {"push.accepted", "push.refused"} <= events
    assert TOKEN not in repr(logs)
    assert TOKEN[:-1] not in repr(logs)
    assert TOKEN[:-1] not in caplog.text
