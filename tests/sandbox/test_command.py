"""`twitter-bot sandbox` as a process: the shipped config by default, a working page, a clean
stop on SIGINT/SIGTERM with no secret in its logs; and the same sandbox over RabbitMQ."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.sandbox.conftest import (
    ECHO_BOT,
    REPO,
    SANDBOX_CONF,
    sandbox_settings,
    start_sandbox,
)
from tests.support.daemon import cli_env, free_port
from tests.support.rabbit import RABBIT_HOST, RABBIT_PORT
from tests.support.waiting import eventually
from twitter_bot.settings import BrokerHost, load_settings

SECRETS = (
    "sandbox-consumer-secret",
    "1230981029831098231-sandbox-echo-token",
    "sandbox-echo-secret",
    "4337869213-sandbox-shop-token",
    "sandbox-shop-secret",
)


async def _get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200
        return await response.json()


async def _wait_for_page(
    http: aiohttp.ClientSession, url: str, process: asyncio.subprocess.Process
) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.returncode is None, "the sandbox exited early"
        try:
            async with http.get(url) as response:
                if response.status == 200:
                    return await response.text()
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("the page did not come up")


def test_shipped_config_uses_the_embedded_queue_and_no_x() -> None:
    settings = load_settings(SANDBOX_CONF)

    assert not settings.uses_rabbitmq
    assert settings.sqlite.path.startswith("data/")
    assert settings.logging.format == "console"
    assert [bot.bot_id for bot in settings.bots] == ["echo-bot", "shop-bot"]
    # Standalone: an include plus overrides trips a pyhocon bug that nulls keys.
    lines = SANDBOX_CONF.read_text().splitlines()
    assert not [line for line in lines if line.strip().startswith("include")]


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
async def test_sandbox_command_serves_the_page_and_stops_cleanly(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    # The default config is conf/sandbox.conf in the working directory (this copy differs
    # only in the daemon's port); $TWITTER_BOT_CONFIG, meant for `run`, is not read.
    (tmp_path / "conf").mkdir()
    daemon_port, page_port = free_port(), free_port()
    text = SANDBOX_CONF.read_text()
    assert "port: 5758" in text
    (tmp_path / "conf" / "sandbox.conf").write_text(text.replace("5758", str(daemon_port)))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "twitter_bot",
        "sandbox",
        "--port",
        str(page_port),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=cli_env(TWITTER_BOT_CONFIG=str(tmp_path / "missing.conf")),
    )
    page = f"http://127.0.0.1:{page_port}/"
    try:
        async with aiohttp.ClientSession() as http:
            assert "twitter-bot sandbox" in await _wait_for_page(http, page, process)
            state = await _get_json(http, page + "api/state")
            assert state["crc"]["ok"] is True
            assert state["info"]["daemon_url"] == f"http://127.0.0.1:{daemon_port}"
            assert state["info"]["queue"] == "embedded SQLite (data/sandbox-queue.sqlite3)"
            body = {"bot_user_id": ECHO_BOT, "text": "hello from a process"}
            async with http.post(page + "api/messages", json=body) as response:
                assert (await response.json())["webhook_status"] == 200
            deadline = time.monotonic() + 10
            while True:
                conversation = (await _get_json(http, page + "api/state"))["conversations"]
                texts = [m["text"] for m in conversation[ECHO_BOT]]
                if "echo: hello from a process" in texts:
                    break
                assert time.monotonic() < deadline, texts
                await asyncio.sleep(0.05)
            ready = await _get_json(http, f"http://127.0.0.1:{daemon_port}/health/ready")
            assert ready["status"] == "ready"
        process.send_signal(stop_signal)
        output, _ = await asyncio.wait_for(process.communicate(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    logs = output.decode()
    assert process.returncode == 0, logs
    assert "sandbox.started" in logs and "sandbox.stopped" in logs
    assert "Traceback" not in logs
    for secret in SECRETS:
        assert secret not in logs
    assert (tmp_path / "data" / "sandbox-queue.sqlite3").exists()


def test_make_sandbox_installs_then_starts_the_sandbox() -> None:
    dry_run = subprocess.run(
        # --no-print-directory: under `make test` (as in CI) a nested make prints
        # "Entering/Leaving directory" lines.
        ["make", "--no-print-directory", "-n", "-B", "sandbox"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    assert "pip install --quiet -e '.[test]'" in dry_run
    assert dry_run.strip().splitlines()[-1].endswith("twitter-bot sandbox")


async def test_sandbox_uses_rabbitmq_when_hosts_are_configured(
    tmp_path: Path,
    rabbit_vhost: str,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    settings = sandbox_settings(tmp_path)
    rabbit = replace(
        settings.rabbit,
        hosts=(BrokerHost(RABBIT_HOST, RABBIT_PORT),),
        virtual_host=rabbit_vhost,
        queue_prefix=f"sbx-{uuid.uuid4().hex[:8]}",
        connect_timeout=2.0,
    )
    running = await start_sandbox(aiohttp_server, replace(settings, rabbit=rabbit))
    sandbox = running.sandbox

    event_id, answer = await sandbox.send(ECHO_BOT, "over rabbit")
    [dm] = await sandbox.x.wait_for_dms(1)

    assert (answer.status, answer.queued) == (200, 1)
    assert dm.text == "echo: over rabbit"
    assert sandbox.hub.info["queue"] == f"RabbitMQ ({RABBIT_HOST}:{RABBIT_PORT})"
    assert not (tmp_path / "queue.sqlite3").exists()
    await eventually(lambda: sandbox.hub.active_event(ECHO_BOT) == event_id)
