"""Fixtures: a fake gateway served on a local port, and a client factory pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.fakes.fake_gateway import FakeGateway
from twitter_bot.gateway import GatewayAttachment, GatewayClient, UserMessage

TOKEN = "tok-3e1c9a7f-very-secret"

ClientFactory = Callable[..., GatewayClient]


def make_message(**overrides: object) -> UserMessage:
    """A valid message; override any field by keyword."""
    fields: dict[str, object] = {
        "message_id": "1494419467836000004",
        "bot_id": "aaaabbbb-4444-5555-6666-ccccddddeeee",
        "conversation_id": "732739706-1230981029831098231",
        "sender_id": "732739706",
        "sender_screen_name": "alice",
        "sender_name": "Alice",
        "recipient_id": "1230981029831098231",
        "timestamp": datetime(2026, 11, 21, 19, 18, 31, 123456, tzinfo=UTC),
        "text": "Hi there",
        "quick_reply_payload": None,
        "attachments": (),
    }
    fields.update(overrides)
    return UserMessage(**fields)  # type: ignore[arg-type]


ATTACHMENT = GatewayAttachment(
    "image", "https://ton.twitter.com/1.1/ton/data/dm/1/2/photo.jpg", "1494419466"
)


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
async def server(fake: FakeGateway, aiohttp_server: Callable[..., object]) -> TestServer:
    return await aiohttp_server(fake.app)  # type: ignore[no-any-return,misc]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def make_client(server: TestServer, session: aiohttp.ClientSession) -> ClientFactory:
    def factory(
        *, token: str | None = None, timeout: float = 5.0, base_url: str | None = None
    ) -> GatewayClient:
        url = base_url or str(server.make_url("/"))
        return GatewayClient(session, base_url=url, token=token, timeout=timeout)

    return factory
