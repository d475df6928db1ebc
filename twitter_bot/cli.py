"""The ``twitter-bot`` command line: ``run``, ``check-config``, ``dead-letters``, ``webhooks``,
``sandbox``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from twitter_bot import deadletters
from twitter_bot.app import ROLES, Role
from twitter_bot.daemon import serve
from twitter_bot.logs import configure_logging
from twitter_bot.management import cli as webhooks_cli
from twitter_bot.sandbox import cli as sandbox_cli
from twitter_bot.settings import ConfigError, Settings, load_settings, render_summary

DEFAULT_CONFIG = "conf/application.conf"
CONFIG_ENV = "TWITTER_BOT_CONFIG"
EXIT_CONFIG_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twitter-bot", description="Bridge X Direct Messages to conversational bots."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the daemon")
    run.add_argument(
        "--role",
        choices=ROLES,
        default="all",
        help="webhook: answer X and fill the queue; worker: bridge the queue to the bots "
        "(serves only health and metrics); all: both (default)",
    )
    check = commands.add_parser(
        "check-config", help="validate the configuration and print a summary (secrets masked)"
    )
    for command in (run, check):
        _add_config_option(command)
    _add_dead_letters(commands)
    webhooks = commands.add_parser(
        "webhooks", help="set up, check and repair X's webhook and subscriptions (see README)"
    )
    webhooks_cli.add_arguments(webhooks, _add_config_option)
    sandbox = commands.add_parser(
        "sandbox",
        help="chat with a bot in the browser through the real daemon, X stood in locally",
    )
    sandbox_cli.add_arguments(sandbox)
    return parser


def _add_config_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--config",
        help=f"HOCON file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def _add_dead_letters(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``dead-letters list|retry|purge``: inspect and re-drive the dead-letter queue."""
    group = commands.add_parser(
        "dead-letters", help="list, retry (re-drive) or purge the dead-letter queue"
    )
    actions = group.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="show dead letters, oldest first, consuming nothing")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument("--limit", type=_positive_int, help="show at most N")
    selective = [
        actions.add_parser("retry", help="re-drive dead letters to their conversation's shard"),
        actions.add_parser("purge", help="remove dead letters for good"),
    ]
    for command in selective:
        which = command.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "--id", action="append", dest="ids", metavar="MESSAGE_ID", help="repeatable"
        )
        which.add_argument("--all", action="store_true", help="every dead letter")
    for command in (listing, *selective):
        _add_config_option(command)


def _dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    # The command's output is its report: library log lines (aiormq logs a
    # refused connection as an error) would only clutter it.
    configure_logging("critical", settings.logging.format, secret_values(settings))
    command = deadletters.Command(
        action=args.action,
        selection=deadletters.Selection(
            ids=frozenset(getattr(args, "ids", None) or ()), all=getattr(args, "all", False)
        ),
        limit=getattr(args, "limit", None),
        as_json=getattr(args, "json", False),
    )
    return deadletters.run(settings, command)


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


def _run(settings: Settings, role: Role) -> int:
    configure_logging(
        settings.logging.level,
        settings.logging.format,
        secret_values(settings),
        cache_loggers=True,
    )
    asyncio.run(serve(settings, role))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "sandbox":
        path = args.config or sandbox_cli.DEFAULT_CONFIG
    else:
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
    if args.command == "dead-letters":
        return _dead_letters(settings, args)
    if args.command == "webhooks":
        configure_logging("critical", settings.logging.format, secret_values(settings))
        return webhooks_cli.run(settings, args, secrets=secret_values(settings))
    if args.command == "sandbox":
        return sandbox_cli.run(settings, args, secret_values(settings))
    return _run(settings, args.role)
