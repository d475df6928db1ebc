"""Fixtures: a FakeX served over real HTTP, and an XClient pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.fakes.fake_x import DEFAULT_CONSUMER_KEY, DEFAULT_CONSUMER_SECRET, FakeX, FakeXUser
from twitter_bot.x import XClient, XCredentials

BOT_A_ID = "4337869213"
BOT_B_ID = "1500000000000000001"
USER_ID = "3001969357"


@pytest.fixture
def fake_x() -> FakeX:
    return FakeX()


@pytest.fixture
def bot_a(fake_x: FakeX) -> FakeXUser:
    return fake_x.add_user(BOT_A_ID)


@pytest.fixture
def bot_b(fake_x: FakeX) -> FakeXUser:
    return fake_x.add_user(BOT_B_ID)


@pytest.fixture
def creds_a(bot_a: FakeXUser) -> XCredentials:
    return XCredentials(bot_a.token, bot_a.secret)


@pytest.fixture
def creds_b(bot_b: FakeXUser) -> XCredentials:
    return XCredentials(bot_b.token, bot_b.secret)


@pytest.fixture
async def x_server(
    fake_x: FakeX, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> TestServer:
    return await aiohttp_server(fake_x.make_app())


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def make_client(x_server: TestServer, session: aiohttp.ClientSession) -> Callable[..., XClient]:
    """An XClient factory: the app's real keys unless a test overrides them."""
    api_base_url, upload_url = FakeX.urls(x_server.make_url("/"))

    def make(**overrides: Any) -> XClient:
        options: dict[str, Any] = {
            "consumer_key": DEFAULT_CONSUMER_KEY,
            "consumer_secret": DEFAULT_CONSUMER_SECRET,
            "api_base_url": api_base_url,
            "upload_url": upload_url,
            **overrides,
        }
        return XClient(session, **options)

    return make


@pytest.fixture
def client(make_client: Callable[..., XClient]) -> XClient:
    return make_client()
