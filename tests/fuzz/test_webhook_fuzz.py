"""The webhook under hostile input (hypothesis): never a 500, nothing queued unless signed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import BOT_A_USER_ID, CONSUMER_SECRET
from tests.fuzz.webhook_fuzz import run_fuzz
from tests.support.deliveries import aaa_delivery, dm_event, signed
from twitter_bot.app import create_app
from twitter_bot.settings import Settings


@pytest.mark.timeout(120)
def test_random_and_mutated_deliveries_never_crash_the_webhook(rabbit_vhost: str) -> None:
    report = run_fuzz(rabbit_vhost, examples=300)
    assert report.tried >= 300
    assert report.unsigned > 0
    assert report.statuses[200] > 0  # some inputs were valid and got queued
    assert report.statuses[400] > 0


# Regression tests for the two 500s the fuzz found (both fixed).


async def test_deeply_nested_json_is_a_400(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(settings, role="webhook"))
    raw, headers = signed(b"[" * 100_000 + b"]" * 100_000, CONSUMER_SECRET)
    assert (await client.post("/webhooks", data=raw, headers=headers)).status == 400


async def test_a_lone_surrogate_in_the_text_is_queued_intact(
    aiohttp_client: Any, settings: Settings
) -> None:
    from tests.conftest import drain_queued

    client = await aiohttp_client(create_app(settings, role="webhook"))
    body = json.dumps(aaa_delivery(BOT_A_USER_ID, dm_event("1001", "42", BOT_A_USER_ID, "a\ud800")))
    raw, headers = signed(body.encode(), CONSUMER_SECRET)
    assert (await client.post("/webhooks", data=raw, headers=headers)).status == 200
    [envelope] = await drain_queued(settings)
    assert envelope.payload["text"] == "a\ud800"
