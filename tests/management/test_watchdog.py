"""The CRC watchdog inside a real daemon: X marks the webhook invalid, the daemon repairs it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from tests.management.conftest import OWNER_USER_ID, ManagementEnv
from tests.support.daemon import free_port
from tests.support.waiting import eventually
from twitter_bot.app import create_app
from twitter_bot.management.daemon import CRC_WATCHDOG


def metric(text: str, name: str) -> float:
    [value] = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(value)


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        body = await (response.json() if "json" in response.content_type else response.text())
        return response.status, body


async def start_daemon(env: ManagementEnv, *, register: bool, interval: float = 0.2) -> Any:
    """A webhook-role daemon with the watchdog on, its webhook URL being its own."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks"
    env.settings = env.with_api(webhook_url=url, crc_watchdog_interval=interval)
    if register:
        webhook = env.fake.add_webhook(url, version=env.version, env="DEFAULT")
        env.fake.invalidate(webhook.id)
    app = create_app(env.settings, role="webhook")
    return app, await env.aiohttp_server(app, port=port)


@pytest.mark.parametrize("generation", ["v1.1", "v2"], indirect=True)
async def test_watchdog_revalidates_an_invalid_webhook(env: ManagementEnv) -> None:
    app, server = await start_daemon(env, register=True)
    webhook = env.webhook()

    await eventually(lambda: webhook.valid)

    [put] = env.fake.calls_to("PUT", r".*/webhooks/\d+(\.json)?")
    assert put.status < 400
    assert put.principal == (OWNER_USER_ID if env.version == "1.1" else "app")
    # X's CRC GET was answered by this daemon.
    assert env.fake.crc_checks[-1].failure is None
    assert env.fake.crc_checks[-1].url.startswith(env.webhook_url)

    status, metrics = await get(str(server.make_url("/metrics")))
    assert status == 200
    assert metric(metrics, "twitter_bot_webhook_valid") == 1.0
    assert metric(metrics, 'twitter_bot_webhook_crc_triggers_total{outcome="valid"}') == 1.0
    assert metric(metrics, "twitter_bot_webhook_last_check_timestamp_seconds") > time.time() - 60
    assert metric(metrics, "twitter_bot_webhook_last_crc_timestamp_seconds") > time.time() - 60
    assert metric(metrics, "twitter_bot_webhook_crc_last_answered_timestamp_seconds") > 0

    status, ready = await get(str(server.make_url("/health/ready")))
    assert status == 200
    details = ready["checks"]["webhook"]
    assert details["webhook_id"] == webhook.id
    assert (details["registered"], details["valid"], details["error"]) == (True, True, None)
    assert details["last_check"] and details["last_crc"]

    # A valid webhook is only checked, not poked: no further PUT.
    checks = len(env.fake.calls_to("GET", r".*webhooks(\.json)?"))
    await eventually(lambda: len(env.fake.calls_to("GET", r".*webhooks(\.json)?")) > checks + 1)
    assert len(env.fake.calls_to("PUT", r".*")) == 1
    assert app[CRC_WATCHDOG].state.valid is True


@pytest.mark.parametrize("generation", ["v2"], indirect=True)
async def test_a_missing_webhook_shows_in_metrics_and_details_not_in_readiness(
    env: ManagementEnv,
) -> None:
    with capture_logs() as logs:
        app, server = await start_daemon(env, register=False)
        await eventually(lambda: app[CRC_WATCHDOG].state.checked_at is not None)

    status, ready = await get(str(server.make_url("/health/ready")))
    assert status == 200, ready  # readiness is about the broker, not X's side
    assert ready["status"] == "ready"
    assert ready["checks"]["webhook"]["registered"] is False
    assert ready["checks"]["webhook"]["valid"] is False
    _, metrics = await get(str(server.make_url("/metrics")))
    assert metric(metrics, "twitter_bot_webhook_valid") == 0.0
    assert env.fake.calls_to("PUT", r".*") == []  # registering is `setup`'s job
    assert any(entry["event"] == "webhook.not_registered" for entry in logs)


@pytest.mark.parametrize("generation", ["v2"], indirect=True)
async def test_x_unreachable_is_reported_and_the_watchdog_keeps_going(
    env: ManagementEnv,
) -> None:
    port = free_port()
    env.settings = env.with_api(
        webhook_url=f"http://127.0.0.1:{port}/webhooks",
        crc_watchdog_interval=0.1,
        twitter_base_url=f"http://127.0.0.1:{free_port()}/",
    )
    app = create_app(env.settings, role="webhook")
    server = await env.aiohttp_server(app, port=port)
    watchdog = app[CRC_WATCHDOG]

    await eventually(lambda: watchdog.state.error is not None)

    _, ready = await get(str(server.make_url("/health/ready")))
    assert ready["checks"]["webhook"]["error"].startswith("list the webhooks: ConnectionError")
    assert ready["checks"]["webhook"]["valid"] is None
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == "crc-watchdog"]
    assert len(tasks) == 1 and not tasks[0].done()

    await server.close()

    # Cancelled and awaited on shutdown: nothing left running.
    assert tasks[0].done()
    assert [t for t in asyncio.all_tasks() if t.get_name() == "crc-watchdog"] == []


@pytest.mark.parametrize("generation", ["v2"], indirect=True)
async def test_the_watchdog_runs_only_where_the_webhook_is_served(env: ManagementEnv) -> None:
    settings = env.with_api(crc_watchdog_interval=60.0)

    assert CRC_WATCHDOG in create_app(settings, role="webhook")
    assert CRC_WATCHDOG in create_app(settings, role="all")
    assert CRC_WATCHDOG not in create_app(settings, role="worker")
    assert CRC_WATCHDOG not in create_app(env.settings, role="all")  # not configured: off
