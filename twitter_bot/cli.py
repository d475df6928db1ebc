"""The ``twitter-bot`` command line: ``run`` and ``check-config``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from twitter_bot.daemon import serve
from twitter_bot.logs import configure_logging
from twitter_bot.settings import ConfigError, Settings, load_settings, render_summary

DEFAULT_CONFIG = "conf/application.conf"
CONFIG_ENV = "TWITTER_BOT_CONFIG"
EXIT_CONFIG_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twitter-bot", description="Bridge X Direct Messages to conversational bots."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("run", "run the daemon"),
        ("check-config", "validate the configuration and print a summary (secrets masked)"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument(
            "--config",
            help=f"HOCON file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})",
        )
    return parser


def config_path(explicit: str | None) -> str:
    return explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG


def secret_values(settings: Settings) -> list[str]:
    """Every secret in the configuration, for the log redactor."""
    candidates = [
        settings.auth.consumer_secret,
        settings.auth.bearer_token,
        settings.auth.default_access_token,
        settings.auth.default_access_secret,
        settings.push_api.token,
        settings.gateway.token,
        settings.rabbit.password,
    ]
    for bot in settings.bots:
        candidates += [bot.access_token, bot.access_secret]
    return [c.value for c in candidates if c]


def _run(settings: Settings) -> int:
    configure_logging(settings.logging.level, settings.logging.format, secret_values(settings))
    asyncio.run(serve(settings))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = config_path(args.config)
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        print(f"twitter-bot: configuration error in {path}: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.command == "check-config":
        print(f"configuration {path}: OK")
        print(render_summary(settings))
        return 0
    return _run(settings)
