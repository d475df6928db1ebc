"""A local X (FakeXManagement) and a real daemon answering its CRCs, for the webhooks commands.

The commands are synchronous: tests run them in a worker thread while the fake and the
daemon serve on the test's event loop, so X's CRC GET reaches our real webhook code.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import pytest

from tests.conftest import CONSUMER_SECRET, make_settings
from tests.fakes.fake_x import FakeXUser
from tests.fakes.fake_x_management import FakeXManagement
from twitter_bot.app import create_app
from twitter_bot.cli import secret_values
from twitter_bot.management.cli import parse_arguments, run
from twitter_bot.settings import AccountActivityApi, Settings

OWNER_USER_ID = "1111"
Server = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Result:
    """A command's exit code and output."""

    code: int
    out: str
    err: str


@dataclass
class ManagementEnv:
    """The fake X, a daemon serving the webhook, and settings pointing at both."""

    fake: FakeXManagement
    settings: Settings
    aiohttp_server: Server
    owner: FakeXUser
    results: list[Result] = field(default_factory=list)

    @property
    def generation(self) -> AccountActivityApi:
        return self.settings.api.account_activity

    @property
    def version(self) -> Literal["1.1", "2"]:
        return "1.1" if self.generation == "v1.1" else "2"

    @property
    def webhook_url(self) -> str:
        assert self.settings.api.webhook_url is not None
        return self.settings.api.webhook_url

    def with_api(self, **changes: Any) -> Settings:
        return replace(self.settings, api=replace(self.settings.api, **changes))

    def with_auth(self, **changes: Any) -> Settings:
        return replace(self.settings, auth=replace(self.settings.auth, **changes))

    async def serve_daemon(self, settings: Settings) -> str:
        """A webhook-role daemon for ``settings``; its webhook URL."""
        server = await self.aiohttp_server(create_app(settings, role="webhook"))
        return str(server.make_url(settings.webhook.path))

    async def run(self, *argv: str, settings: Settings | None = None) -> Result:
        """``twitter-bot webhooks ARGV`` in a worker thread, as the CLI runs it."""
        settings = settings or self.settings
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(
            run,
            settings,
            parse_arguments(argv),
            out=out,
            err=err,
            secrets=secret_values(settings),
        )
        result = Result(code, out.getvalue(), err.getvalue())
        self.results.append(result)
        return result

    def webhook(self) -> Any:
        """The fake's webhook for the configured URL (exactly one must exist)."""
        [webhook] = [w for w in self.fake.webhooks.values() if w.url == self.webhook_url]
        return webhook


def assert_one_line_error(result: Result, settings: Settings, *needles: str) -> None:
    """A failure as operators must see it: non-zero, one stderr line, no traceback, no secret."""
    assert result.code != 0
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err + result.out
    for needle in needles:
        assert needle in lines[0], lines[0]
    for secret in secret_values(settings):
        assert secret not in result.err + result.out


@pytest.fixture(params=["v1.1", "v2", "xaa"])
def generation(request: pytest.FixtureRequest) -> AccountActivityApi:
    return request.param  # type: ignore[no-any-return]


async def make_env(
    aiohttp_server: Server, rabbit_vhost: str, generation: AccountActivityApi
) -> ManagementEnv:
    base = make_settings(rabbit_vhost)
    fake = FakeXManagement(
        consumer_key=base.auth.consumer_key,
        consumer_secret=CONSUMER_SECRET,
        bearer_token=base.auth.bearer_token.value if base.auth.bearer_token else "",
    )
    assert base.auth.default_access_token and base.auth.default_access_secret
    owner = fake.add_user(
        OWNER_USER_ID,
        token=base.auth.default_access_token.value,
        secret=base.auth.default_access_secret.value,
    )
    for bot in base.bots:
        fake.add_user(bot.user_id, token=bot.access_token.value, secret=bot.access_secret.value)
    x_server = await aiohttp_server(fake.make_app())
    env = ManagementEnv(fake, base, aiohttp_server, owner)
    webhook_url = await env.serve_daemon(base)
    env.settings = env.with_api(
        webhook_url=webhook_url,
        twitter_base_url=str(x_server.make_url("/")),
        account_activity=generation,
    )
    return env


@pytest.fixture
async def env(
    aiohttp_server: Server, rabbit_vhost: str, generation: AccountActivityApi
) -> ManagementEnv:
    return await make_env(aiohttp_server, rabbit_vhost, generation)
