"""``python -m twitter_bot webhooks …`` as an operator runs it: a real process, a real file."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from tests.fakes.fake_x_management import FakeXManagement
from tests.support.daemon import SECRETS, cli_env, free_port, write_config
from twitter_bot.app import create_app
from twitter_bot.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
BOT_USER_ID = "1230981029831098231"


async def cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "twitter_bot",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(),
        cwd=REPO,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_webhooks_commands_as_a_process(
    aiohttp_server: Any, tmp_path: Path, rabbit_vhost: str
) -> None:
    fake = FakeXManagement(
        consumer_key="proc-app-key",
        consumer_secret=SECRETS["consumer_secret"],
        bearer_token=SECRETS["bearer"],
    )
    fake.add_user("2222", token=SECRETS["default_token"], secret=SECRETS["default_secret"])
    fake.add_user(BOT_USER_ID, token=SECRETS["bot_token"], secret=SECRETS["bot_secret"])
    x = await aiohttp_server(fake.make_app())
    port = free_port()
    config = write_config(
        tmp_path / "app.conf",
        vhost=rabbit_vhost,
        queue_prefix="webhooks-cli",
        http_port=port,
        extra=f"""
chatbots.twitter-bot.api {{
  twitter-url: "{x.make_url("/")}"
  webhook-url: "http://127.0.0.1:{port}/webhooks"
  account-activity: v2
}}
""",
    )
    # The daemon X's CRC reaches, configured from the same file.
    await aiohttp_server(create_app(load_settings(config), role="webhook"), port=port)

    before = await cli("webhooks", "status", "--config", str(config))
    setup = await cli("webhooks", "setup", "--config", str(config))
    after = await cli("webhooks", "status", "--config", str(config))
    missing = await cli("webhooks", "delete", "--id", "42", "--config", str(config))

    assert before[0] == 1, before
    assert "status: 2 problem(s)" in before[1]
    assert before[2] == ""
    assert setup[0] == 0, setup
    assert setup[1].strip().endswith("setup: 2 change(s)")
    assert after[0] == 0, after
    assert after[1].strip().endswith("status: OK")
    [webhook] = fake.webhooks.values()
    assert fake.subscribed(webhook.id) == {BOT_USER_ID}
    assert missing[0] == 1
    assert missing[2].count("\n") == 1
    assert missing[2].startswith("twitter-bot webhooks delete: X refused to delete the webhook")
    for _code, out, err in (before, setup, after, missing):
        assert "Traceback" not in out + err
        for secret in SECRETS.values():
            assert secret not in out + err
