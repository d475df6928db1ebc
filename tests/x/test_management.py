"""The management client's tolerance of X's answer shapes, and what it never shows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from twitter_bot.x.management import (
    AppCredentials,
    CredentialMissing,
    Subscription,
    UserToken,
    V2Api,
    XaaApi,
    same_url,
)

APP = AppCredentials("key", "consumer-secret-xyz", "bearer-xyz", UserToken("1-tok", "tok-secret"))


def test_same_url_ignores_case_and_default_ports_only() -> None:
    assert same_url("https://Bot.Example.com/webhooks", "https://bot.example.com:443/webhooks")
    assert same_url("http://h/", "http://h")
    assert not same_url("https://bot.example.com/webhooks", "https://bot.example.com/Webhooks")
    assert not same_url("https://bot.example.com/webhooks", "http://bot.example.com/webhooks")
    assert not same_url("https://h:8443/webhooks", "https://h/webhooks")


def test_credentials_never_show_in_repr() -> None:
    text = repr(APP)
    assert "consumer-secret-xyz" not in text
    assert "bearer-xyz" not in text
    assert "tok-secret" not in text and "1-tok" not in text


def test_a_missing_credential_fails_before_any_request() -> None:
    api = V2Api("http://127.0.0.1:9/", AppCredentials("key", "secret"))
    with pytest.raises(CredentialMissing) as caught:
        api.list_webhooks()
    assert caught.value.credential == "bearer"


async def serve(aiohttp_server: Any, routes: dict[tuple[str, str], Any]) -> str:
    app = web.Application()
    for (method, path), body in routes.items():

        async def answer(request: web.Request, body: Any = body) -> web.Response:
            return web.json_response(body)

        app.router.add_route(method, path, answer)
    server = await aiohttp_server(app)
    return str(server.make_url("/"))


async def test_v2_shapes_x_documents_differently_are_all_read(aiohttp_server: Any) -> None:
    base = await serve(
        aiohttp_server,
        {
            ("GET", "/2/webhooks"): {"meta": {"result_count": 0}},
            # X's reference shows the replay job bare; x-api.md wraps it in "data".
            ("POST", "/2/webhooks/replay"): {"job_id": "77", "created_at": "2025-04-24T20:57Z"},
        },
    )
    api = V2Api(base, APP)
    moment = datetime(2025, 4, 24, 20, 0, tzinfo=UTC)

    assert await asyncio.to_thread(api.list_webhooks) == []
    job = await asyncio.to_thread(api.replay, "1", moment, moment)
    assert job.job_id == "77"


async def test_xaa_subscriptions_are_the_dm_received_ones_of_the_webhook(
    aiohttp_server: Any,
) -> None:
    def item(sid: str, event: str, user: str, webhook: str | None) -> dict[str, Any]:
        return {
            "subscription_id": sid,
            "event_type": event,
            "filter": {"user_id": user, "direction": "inbound"},
            "webhook_id": webhook,
        }

    base = await serve(
        aiohttp_server,
        {
            ("GET", "/2/activity/subscriptions"): {
                "data": [
                    item("1", "dm.received", "10", "w1"),
                    item("2", "dm.sent", "10", "w1"),
                    item("3", "dm.received", "11", "w2"),
                    item("4", "profile.update.bio", "12", "w1"),
                    item("5", "dm.received", "13", None),
                ]
            }
        },
    )

    found = await asyncio.to_thread(XaaApi(base, APP).list_subscriptions, "w1")

    assert found == [Subscription("10", "1")]
