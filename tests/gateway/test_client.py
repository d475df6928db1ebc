"""GatewayClient against the fake gateway: request shape, replies, errors (sections 1-3)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest
from aiohttp.test_utils import unused_port
from structlog.testing import capture_logs

from tests.fakes.fake_gateway import FakeGateway, ScriptedResponse
from tests.gateway.conftest import ATTACHMENT, TOKEN, ClientFactory, make_message
from twitter_bot.gateway import (
    GatewayClient,
    GatewayError,
    GatewayPermanentError,
    GatewayTransientError,
    MediaReply,
    QuickReply,
    TextReply,
    TypingReply,
)

BOT = "aaaabbbb-4444-5555-6666-ccccddddeeee"
CONVERSATION = "732739706-1230981029831098231"


async def test_request_matches_section_1(fake: FakeGateway, make_client: ClientFactory) -> None:
    message = make_message(attachments=(ATTACHMENT,))

    await make_client().deliver(message)

    [request] = fake.requests
    assert request.method == "POST"
    assert request.path == f"/v1/bots/{BOT}/conversations/{CONVERSATION}/messages"
    assert (request.bot_id, request.conversation_id) == (BOT, CONVERSATION)
    assert request.headers["Content-Type"] == "application/json"
    assert request.idempotency_key == request.request_id == "1494419467836000004"
    assert request.authorization is None
    assert request.problems == ()
    assert request.body == message.to_json()
    assert request.body["timestamp"] == "2026-11-21T19:18:31.123Z"
    assert request.body["quick_reply"] is None


async def test_body_without_attachments_sends_empty_list(
    fake: FakeGateway, make_client: ClientFactory
) -> None:
    await make_client().deliver(make_message(text="héllo 👋"))

    assert fake.requests[0].body["attachments"] == []
    assert json.loads(fake.requests[0].raw_body)["text"] == "héllo 👋"


async def test_bearer_token_sent_when_configured(
    fake: FakeGateway, make_client: ClientFactory
) -> None:
    fake.token = TOKEN

    replies = await make_client(token=TOKEN).deliver(make_message())

    assert fake.requests[0].authorization == f"Bearer {TOKEN}"
    assert replies == [TextReply("echo: Hi there")]


@pytest.mark.parametrize("token", [None, ""])
async def test_no_authorization_header_without_token(
    fake: FakeGateway, make_client: ClientFactory, token: str | None
) -> None:
    await make_client(token=token).deliver(make_message())

    assert "Authorization" not in fake.requests[0].headers


async def test_path_segments_are_quoted(fake: FakeGateway, make_client: ClientFactory) -> None:
    await make_client().deliver(make_message(bot_id="a/b c?d#e", conversation_id="1-2%3"))

    [request] = fake.requests
    assert request.path == "/v1/bots/a%2Fb%20c%3Fd%23e/conversations/1-2%253/messages"
    assert (request.bot_id, request.conversation_id) == ("a/b c?d#e", "1-2%3")


async def test_base_url_with_path_prefix(fake: FakeGateway, make_client: ClientFactory) -> None:
    client = make_client(base_url="http://gw.example/api/")

    url = client.message_url("b", "1-2")

    assert str(url) == "http://gw.example/api/v1/bots/b/conversations/1-2/messages"


async def test_each_reply_type_parsed(fake: FakeGateway, make_client: ClientFactory) -> None:
    fake.on_message(
        BOT,
        lambda _: [
            {"type": "text", "text": "Hi", "quick_replies": [{"label": "A", "payload": "a"}]},
            {"type": "video", "url": "https://cdn/v.mp4", "text": "watch"},
            {"type": "typing"},
        ],
    )

    replies = await make_client().deliver(make_message())

    assert replies == [
        TextReply("Hi", (QuickReply("A", None, "a"),)),
        MediaReply("video", "https://cdn/v.mp4", "watch"),
        TypingReply(),
    ]


async def test_invalid_replies_skipped_and_logged(
    fake: FakeGateway, make_client: ClientFactory
) -> None:
    fake.on_message(
        BOT,
        lambda _: [{"type": "text", "text": ""}, {"type": "typing"}, {"type": "poll"}],
    )

    with capture_logs() as logs:
        replies = await make_client().deliver(make_message())

    assert replies == [TypingReply()]
    skipped = [entry for entry in logs if entry["event"] == "gateway.reply_skipped"]
    assert [(e["index"], e["log_level"]) for e in skipped] == [(0, "warning"), (2, "warning")]
    assert skipped[0]["reason"].startswith("messages[0].text: ")
    assert skipped[0]["bot_id"] == BOT


@pytest.mark.parametrize(
    "answer",
    [
        ScriptedResponse(204),
        ScriptedResponse(200, {"messages": []}),
        ScriptedResponse(202),
        ScriptedResponse(200, b""),
    ],
)
async def test_no_replies(
    fake: FakeGateway, make_client: ClientFactory, answer: ScriptedResponse
) -> None:
    fake.on_message(BOT, lambda _: answer)

    assert await make_client().deliver(make_message()) == []


@pytest.mark.parametrize(
    "body", ['{"messages": "nope"}', "[]", "<html>oops</html>", '{"replies": []}']
)
async def test_malformed_2xx_body_is_permanent(
    fake: FakeGateway, make_client: ClientFactory, body: str
) -> None:
    fake.on_message(BOT, lambda _: ScriptedResponse(200, body))

    with pytest.raises(GatewayPermanentError) as caught:
        await make_client().deliver(make_message())

    assert caught.value.status == 200
    assert caught.value.body_excerpt == body


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(s, GatewayPermanentError) for s in (400, 401, 403, 404, 409, 410, 422)]
    + [(s, GatewayTransientError) for s in (408, 429, 500, 502, 503)],
)
async def test_status_maps_to_error_class(
    fake: FakeGateway,
    make_client: ClientFactory,
    status: int,
    error_class: type[GatewayError],
) -> None:
    fake.on_message(BOT, lambda _: ScriptedResponse(status, {"error": "e" * 900}))

    with pytest.raises(error_class) as caught:
        await make_client().deliver(make_message())

    assert type(caught.value) is error_class
    assert caught.value.status == status
    assert caught.value.body_excerpt.startswith('{"error": "eee')
    assert len(caught.value.body_excerpt) == 500


async def test_redirect_is_not_followed(fake: FakeGateway, make_client: ClientFactory) -> None:
    fake.on_message(BOT, lambda _: ScriptedResponse(307, headers={"Location": "/elsewhere"}))

    with pytest.raises(GatewayPermanentError) as caught:
        await make_client().deliver(make_message())

    assert caught.value.status == 307
    assert len(fake.requests) == 1


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_seconds(
    fake: FakeGateway, make_client: ClientFactory, status: int
) -> None:
    fake.on_message(BOT, lambda _: ScriptedResponse(status, headers={"Retry-After": "7"}))

    with pytest.raises(GatewayTransientError) as caught:
        await make_client().deliver(make_message())

    assert caught.value.retry_after == 7.0


async def test_retry_after_http_date(fake: FakeGateway, make_client: ClientFactory) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    fake.on_message(BOT, lambda _: ScriptedResponse(503, headers={"Retry-After": when}))

    with pytest.raises(GatewayTransientError) as caught:
        await make_client().deliver(make_message())

    assert caught.value.retry_after is not None
    assert 100 < caught.value.retry_after <= 120


async def test_no_retry_after(fake: FakeGateway, make_client: ClientFactory) -> None:
    fake.on_message(BOT, lambda _: ScriptedResponse(502))

    with pytest.raises(GatewayTransientError) as caught:
        await make_client().deliver(make_message())

    assert caught.value.retry_after is None


async def test_retry_keeps_the_idempotency_key(
    fake: FakeGateway, make_client: ClientFactory
) -> None:
    fake.fail_then_succeed(BOT, times=2)
    client = make_client()
    message = make_message()

    for _ in range(2):
        with pytest.raises(GatewayTransientError):
            await client.deliver(message)
    replies = await client.deliver(message)

    assert replies == [TextReply("echo: Hi there")]
    assert [r.idempotency_key for r in fake.requests] == ["1494419467836000004"] * 3


async def test_timeout_is_transient(fake: FakeGateway, make_client: ClientFactory) -> None:
    fake.set_delay(BOT, 5.0)

    with pytest.raises(GatewayTransientError) as caught:
        await make_client(timeout=0.05).deliver(make_message())

    assert caught.value.status is None
    assert "0.05 s" in str(caught.value)
    assert len(fake.requests) == 1


async def test_connection_refused_is_transient(session: aiohttp.ClientSession) -> None:
    client = GatewayClient(
        session, base_url=f"http://127.0.0.1:{unused_port()}", token=TOKEN, timeout=2.0
    )

    with pytest.raises(GatewayTransientError) as caught:
        await client.deliver(make_message())

    assert caught.value.status is None
    assert "unreachable" in str(caught.value)
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize("status", [401, 500])
async def test_token_never_in_error_text(
    fake: FakeGateway, make_client: ClientFactory, status: int
) -> None:
    fake.on_message(
        BOT, lambda request: ScriptedResponse(status, f"Authorization: {request.authorization}")
    )

    with pytest.raises(GatewayError) as caught:
        await make_client(token=TOKEN).deliver(make_message())

    error = caught.value
    for text in (str(error), repr(error), error.body_excerpt, str(error.args)):
        assert TOKEN not in text
    assert error.body_excerpt == "Authorization: Bearer [redacted]"


async def test_token_not_in_malformed_body_error(
    fake: FakeGateway, make_client: ClientFactory
) -> None:
    fake.on_message(BOT, lambda request: ScriptedResponse(200, f"<{request.authorization}>"))

    with pytest.raises(GatewayPermanentError) as caught:
        await make_client(token=TOKEN).deliver(make_message())

    assert TOKEN not in caught.value.body_excerpt
    assert TOKEN not in str(caught.value)


async def test_wrong_token_is_permanent_401(fake: FakeGateway, make_client: ClientFactory) -> None:
    fake.token = "the-right-one"

    with pytest.raises(GatewayPermanentError) as caught:
        await make_client(token=TOKEN).deliver(make_message())

    assert caught.value.status == 401
    assert TOKEN not in str(caught.value) + caught.value.body_excerpt


def test_timeout_must_be_positive(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ValueError, match="timeout"):
        GatewayClient(session, base_url="http://gw", token=None, timeout=0)
