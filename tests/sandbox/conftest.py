"""Fixtures: the sandbox in-process, from the shipped conf/sandbox.conf, on free ports."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from twitter_bot.sandbox.server import Sandbox, SandboxOptions
from twitter_bot.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
SANDBOX_CONF = REPO / "conf" / "sandbox.conf"
ECHO_BOT = "1230981029831098231"
SHOP_BOT = "4337869213"


def sandbox_settings(tmp_path: Path) -> Settings:
    """conf/sandbox.conf with the queue file in tmp_path and the daemon on a free port."""
    settings = load_settings(SANDBOX_CONF)
    return replace(
        settings,
        sqlite=replace(settings.sqlite, path=str(tmp_path / "queue.sqlite3")),
        http=replace(settings.http, port=0),
    )


@dataclass
class RunningSandbox:
    sandbox: Sandbox
    server: TestServer

    @property
    def url(self) -> str:
        return str(self.server.make_url("/"))


async def start_sandbox(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    settings: Settings,
    **options: Any,
) -> RunningSandbox:
    sandbox = Sandbox(settings, SandboxOptions(**{"think_seconds": 1.0, **options}))
    server = await aiohttp_server(sandbox.make_app())
    return RunningSandbox(sandbox, server)


@pytest.fixture
async def running(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> RunningSandbox:
    return await start_sandbox(aiohttp_server, sandbox_settings(tmp_path))
