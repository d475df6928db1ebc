"""Scripted X failures map onto the typed error hierarchy; no secret leaks into messages."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.fakes.fake_x import EndpointKind, FakeX, FakeXUser, v2_problem, v11_error
from tests.x.conftest import BOT_A_ID, BOT_B_ID, USER_ID
from twitter_bot.x import (
    XApiError,
    XAuthError,
    XBadMedia,
    XBadRequest,
    XClient,
    XCredentials,
    XError,
    XForbidden,
    XRateLimited,
    XServerError,
    XTransportError,
)


async def test_429_for_one_bot_while_another_succeeds(
    client: XClient, fake_x: FakeX, creds_a: XCredentials, creds_b: XCredentials
) -> None:
    fake_x.fail_next(
        EndpointKind.DM_V11,
        429,
        v11_error(88, "Rate limit exceeded"),
        {"x-rate-limit-reset": "1700000900", "Retry-After": "42"},
        for_user_id=BOT_A_ID,
    )

    await client.send_dm_v11(creds_b, USER_ID, "b is fine")
    with pytest.raises(XRateLimited) as caught:
        await client.send_dm_v11(creds_a, USER_ID, "a is limited")
    await client.send_dm_v11(creds_a, USER_ID, "a again")

    error = caught.value
    assert (error.status, error.code, error.reset_at, error.retry_after) == (
        429,
        88,
        1700000900,
        42,
    )
    assert error.rate_limit.remaining == 0
    assert error.retryable
    assert not error.usage_cap_exceeded
    assert [(c.user_id, c.text) for c in fake_x.sent_dms()] == [
        (BOT_B_ID, "b is fine"),
        (BOT_A_ID, "a again"),
    ]
    assert [(r.user_id, r.status) for r in fake_x.rejections] == [(BOT_A_ID, 429)]


async def test_v2_usage_cap_is_not_retryable(
    client: XClient, fake_x: FakeX, creds_a: XCredentials
) -> None:
    fake_x.fail_next(
        EndpointKind.DM_V2,
        429,
        v2_problem("UsageCapExceeded", "Usage cap exceeded: Monthly product cap", 429),
    )

    with pytest.raises(XRateLimited) as caught:
        await client.send_dm_v2(creds_a, USER_ID, "hi")

    assert caught.value.usage_cap_exceeded
    assert not caught.value.retryable


async def test_exhausted_24_hour_cap_sets_reset_at(
    client: XClient, fake_x: FakeX, creds_a: XCredentials
) -> None:
    fake_x.fail_next(
        EndpointKind.DM_V2,
        429,
        v2_problem("Too Many Requests", "Too Many Requests", 429),
        {
            "x-rate-limit-reset": "1700000900",
            "x-user-limit-24hour-remaining": "0",
            "x-user-limit-24hour-reset": "1700080000",
        },
    )

    with pytest.raises(XRateLimited) as caught:
        await client.send_dm_v2(creds_a, USER_ID, "hi")

    assert caught.value.reset_at == 1700080000
    assert caught.value.rate_limit.reset_at == 1700000900


@dataclass(frozen=True)
class Case:
    kind: EndpointKind
    status: int
    body: Any
    error_type: type[XApiError]
    retryable: bool


V11, V2 = EndpointKind.DM_V11, EndpointKind.DM_V2
CASES = [
    Case(V11, 403, v11_error(349, "You cannot send messages to this user."), XForbidden, False),
    Case(
        V11,
        403,
        v11_error(226, "This request looks like it might be automated."),
        XForbidden,
        False,
    ),
    Case(V11, 503, v11_error(130, "Over capacity"), XServerError, True),
    Case(V11, 500, v11_error(131, "Internal error"), XServerError, True),
    Case(V11, 502, "<html>Bad Gateway</html>", XServerError, True),
    Case(V11, 401, v11_error(89, "Invalid or expired token."), XAuthError, False),
    Case(V11, 400, v11_error(215, "Bad Authentication data."), XAuthError, False),
    Case(V11, 400, v11_error(324, "The validation of media ids failed."), XBadMedia, False),
    Case(V11, 400, v11_error(214, "event.type: invalid"), XBadRequest, False),
    Case(V2, 403, v2_problem("Forbidden", "You cannot send this DM", 403), XForbidden, False),
    Case(V2, 400, v2_problem("Invalid Request", "bad participant", 400), XBadRequest, False),
]


@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: f"{c.kind}-{c.status}-{c.error_type.__name__}"
)
async def test_scripted_answers_map_to_error_classes(
    client: XClient, fake_x: FakeX, creds_a: XCredentials, case: Case
) -> None:
    fake_x.fail_next(case.kind, case.status, case.body)
    send = client.send_dm_v11 if case.kind is EndpointKind.DM_V11 else client.send_dm_v2

    with pytest.raises(XApiError) as caught:
        await send(creds_a, USER_ID, "hi")

    assert type(caught.value) is case.error_type
    assert caught.value.status == case.status
    assert caught.value.retryable is case.retryable
    assert caught.value.rate_limit.limit == 1000
    assert caught.value.body_excerpt


async def test_scripted_failure_repeats_times(
    client: XClient, fake_x: FakeX, creds_a: XCredentials
) -> None:
    fake_x.fail_next(EndpointKind.INDICATE_TYPING, 503, v11_error(130, "Over capacity"), times=2)

    for _ in range(2):
        with pytest.raises(XServerError):
            await client.indicate_typing(creds_a, USER_ID)
    await client.indicate_typing(creds_a, USER_ID)


async def test_media_steps_can_fail(client: XClient, fake_x: FakeX, creds_a: XCredentials) -> None:
    fake_x.fail_next(EndpointKind.MEDIA_APPEND, 500, v11_error(131, "Internal error"))

    with pytest.raises(XServerError):
        await client.upload_media(creds_a, b"data", "image/png", "dm_image")


async def test_body_excerpt_is_capped(
    client: XClient, fake_x: FakeX, creds_a: XCredentials
) -> None:
    fake_x.fail_next(EndpointKind.MARK_READ, 400, "x" * 5000)

    with pytest.raises(XBadRequest) as caught:
        await client.mark_read(creds_a, USER_ID, "1")

    assert len(caught.value.body_excerpt) == 500


async def test_fake_enforces_its_own_rate_limit(
    aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    fake = FakeX(rate_limit=1)
    bot = fake.add_user(BOT_A_ID)
    server = await aiohttp_server(fake.make_app())
    api, upload = FakeX.urls(server.make_url("/"))
    client = XClient(
        session,
        consumer_key="dev-consumer-key",
        consumer_secret="dev-consumer-secret",
        api_base_url=api,
        upload_url=upload,
    )
    creds = XCredentials(bot.token, bot.secret)

    sent = await client.send_dm_v11(creds, USER_ID, "one")
    with pytest.raises(XRateLimited) as caught:
        await client.send_dm_v11(creds, USER_ID, "two")

    assert sent.rate_limit.remaining == 0
    assert caught.value.code == 88
    assert caught.value.reset_at == sent.rate_limit.reset_at


async def test_connection_refused_is_a_transport_error(
    session: aiohttp.ClientSession, creds_a: XCredentials
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = XClient(
        session,
        consumer_key="dev-consumer-key",
        consumer_secret="dev-consumer-secret",
        api_base_url=f"http://127.0.0.1:{port}/",
        upload_url=f"http://127.0.0.1:{port}/1.1/",
    )

    with pytest.raises(XTransportError) as caught:
        await client.send_dm_v11(creds_a, USER_ID, "hi")

    assert caught.value.retryable
    assert isinstance(caught.value, XError)
    assert not isinstance(caught.value, XApiError)


async def test_timeout_is_a_transport_error(
    make_client: Callable[..., XClient], fake_x: FakeX, creds_a: XCredentials
) -> None:
    fake_x.set_delay(1.0, EndpointKind.DM_V2)
    client = make_client(timeout=0.1)

    with pytest.raises(XTransportError) as caught:
        await client.send_dm_v2(creds_a, USER_ID, "slow")

    assert caught.value.retryable


async def test_no_secret_appears_in_any_error(
    make_client: Callable[..., XClient], fake_x: FakeX, bot_a: FakeXUser
) -> None:
    consumer_secret = "dev-consumer-secret"
    creds = XCredentials(bot_a.token, bot_a.secret)
    client = make_client(consumer_secret=consumer_secret)
    echo = f"token {bot_a.token} secret {bot_a.secret} app {consumer_secret}"
    fake_x.fail_next(EndpointKind.DM_V11, 400, v11_error(214, echo))
    fake_x.fail_next(EndpointKind.DM_V2, 503, echo)
    fake_x.fail_next(EndpointKind.INDICATE_TYPING, 429, v2_problem("Too Many", echo, 429))
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: client.send_dm_v11(creds, USER_ID, "a"),
        lambda: client.send_dm_v2(creds, USER_ID, "b"),
        lambda: client.indicate_typing(creds, USER_ID),
        lambda: make_client(consumer_secret="wrong").mark_read(creds, USER_ID, "1"),
    ]
    errors: list[XApiError] = []
    for call in calls:
        with pytest.raises(XApiError) as caught:
            await call()
        errors.append(caught.value)

    for error in errors:
        for text in (str(error), repr(error), error.message, error.body_excerpt):
            for secret in (bot_a.token, bot_a.secret, consumer_secret):
                assert secret not in text
    assert "<redacted>" in errors[0].message
    assert bot_a.secret not in repr(creds)
    assert bot_a.token not in repr(creds)
    assert consumer_secret not in repr(client)
