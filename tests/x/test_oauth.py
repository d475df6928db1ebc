"""FakeX really verifies OAuth 1.0a: wrong secrets, tampered fields and replays are refused."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from oauthlib.oauth1 import Client
from yarl import URL

from tests.fakes.fake_x import DEFAULT_CONSUMER_KEY, DEFAULT_CONSUMER_SECRET, FakeX, FakeXUser
from tests.x.conftest import BOT_A_ID, USER_ID
from twitter_bot.x import XAuthError, XClient, XCredentials, sign_request


def _sign_typing(
    x_server: TestServer, user: FakeXUser, recipient_id: str
) -> tuple[str, dict[str, str], bytes]:
    url = str(x_server.make_url("/1.1/direct_messages/indicate_typing.json"))
    signed = sign_request(
        "POST",
        url,
        consumer_key=DEFAULT_CONSUMER_KEY,
        consumer_secret=DEFAULT_CONSUMER_SECRET,
        token=user.token,
        token_secret=user.secret,
        form=[("recipient_id", recipient_id)],
    )
    assert signed.body is not None
    return signed.uri, signed.headers, signed.body


async def test_wrong_consumer_secret_is_rejected(
    make_client: Callable[..., XClient], fake_x: FakeX, creds_a: XCredentials
) -> None:
    client = make_client(consumer_secret="not-the-consumer-secret")

    with pytest.raises(XAuthError) as caught:
        await client.send_dm_v11(creds_a, USER_ID, "hi")

    assert (caught.value.status, caught.value.code) == (401, 32)
    assert fake_x.calls == []


async def test_wrong_token_secret_is_rejected(
    client: XClient, fake_x: FakeX, bot_a: FakeXUser
) -> None:
    with pytest.raises(XAuthError) as caught:
        await client.send_dm_v2(XCredentials(bot_a.token, "wrong-token-secret"), USER_ID, "hi")

    assert (caught.value.status, caught.value.code) == (401, 32)
    assert fake_x.calls == []


async def test_unknown_consumer_key_is_rejected(
    make_client: Callable[..., XClient], creds_a: XCredentials
) -> None:
    client = make_client(consumer_key="some-other-app")

    with pytest.raises(XAuthError):
        await client.indicate_typing(creds_a, USER_ID)


async def test_unknown_or_revoked_token_answers_code_89(
    client: XClient, fake_x: FakeX, creds_a: XCredentials, bot_a: FakeXUser
) -> None:
    fake_x.revoke(bot_a.token)

    with pytest.raises(XAuthError) as caught:
        await client.indicate_typing(creds_a, USER_ID)

    assert caught.value.code == 89


async def test_another_registered_app_may_sign(
    make_client: Callable[..., XClient], fake_x: FakeX, creds_a: XCredentials
) -> None:
    fake_x.add_app("second-app-key", "second-app-secret")
    client = make_client(consumer_key="second-app-key", consumer_secret="second-app-secret")

    await client.indicate_typing(creds_a, USER_ID)

    assert fake_x.calls[0].user_id == BOT_A_ID


async def test_form_fields_are_inside_the_signature(
    x_server: TestServer, session: aiohttp.ClientSession, fake_x: FakeX, bot_a: FakeXUser
) -> None:
    uri, headers, body = _sign_typing(x_server, bot_a, USER_ID)
    tampered = body.replace(USER_ID.encode(), b"999999")

    async with session.post(URL(uri, encoded=True), headers=headers, data=tampered) as response:
        assert response.status == 401
        assert (await response.json())["errors"][0]["code"] == 32
    assert fake_x.calls == []


async def test_untampered_form_passes_and_a_replay_is_refused(
    x_server: TestServer, session: aiohttp.ClientSession, fake_x: FakeX, bot_a: FakeXUser
) -> None:
    uri, headers, body = _sign_typing(x_server, bot_a, USER_ID)

    async with session.post(URL(uri, encoded=True), headers=headers, data=body) as response:
        assert response.status == 204
    async with session.post(URL(uri, encoded=True), headers=headers, data=body) as response:
        assert response.status == 401
    assert len(fake_x.calls) == 1


async def test_query_parameters_are_inside_the_signature(
    x_server: TestServer, session: aiohttp.ClientSession, bot_a: FakeXUser
) -> None:
    url = str(x_server.make_url("/1.1/media/upload.json")) + "?command=STATUS&media_id=1"
    signed = sign_request(
        "GET",
        url,
        consumer_key=DEFAULT_CONSUMER_KEY,
        consumer_secret=DEFAULT_CONSUMER_SECRET,
        token=bot_a.token,
        token_secret=bot_a.secret,
    )
    tampered = URL(signed.uri.replace("media_id=1", "media_id=2"), encoded=True)

    async with session.get(tampered, headers=signed.headers) as response:
        assert response.status == 401


async def test_unsigned_request_is_rejected(
    x_server: TestServer, session: aiohttp.ClientSession
) -> None:
    url = x_server.make_url("/1.1/direct_messages/indicate_typing.json")

    async with session.post(url, data={"recipient_id": USER_ID}) as response:
        assert response.status == 401
        assert response.headers["x-rate-limit-limit"] == "1000"


def test_json_bodies_stay_out_of_the_signature() -> None:
    signed = sign_request(
        "POST",
        "https://api.twitter.com/1.1/direct_messages/events/new.json",
        consumer_key="key",
        consumer_secret="secret",
        token="1-token",
        token_secret="token-secret",
    )

    assert signed.body is None
    assert signed.headers["Authorization"].startswith("OAuth ")
    assert "oauth_body_hash" not in signed.headers["Authorization"]
    assert 'oauth_signature_method="HMAC-SHA1"' in signed.headers["Authorization"]


async def test_stale_timestamp_answers_code_135(
    x_server: TestServer, session: aiohttp.ClientSession, bot_a: FakeXUser
) -> None:
    url = str(x_server.make_url("/1.1/direct_messages/indicate_typing.json"))
    stale = Client(
        DEFAULT_CONSUMER_KEY,
        client_secret=DEFAULT_CONSUMER_SECRET,
        resource_owner_key=bot_a.token,
        resource_owner_secret=bot_a.secret,
        timestamp="1500000000",
    )
    uri, headers, body = stale.sign(
        url,
        http_method="POST",
        body=f"recipient_id={USER_ID}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    async with session.post(URL(uri, encoded=True), headers=headers, data=body) as response:
        assert response.status == 401
        assert (await response.json())["errors"][0]["code"] == 135
