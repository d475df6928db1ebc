"""``twitter-bot webhooks …``: the arguments, and running one command with one-line errors.

Exit codes: 0 done; 1 ``status`` found a problem, or X refused, or the command stopped on
X's state; 2 configuration or usage error (a missing key or credential); 3 X unreachable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from twitter_bot.management import commands
from twitter_bot.management.clients import api_for, redactor
from twitter_bot.management.commands import EXIT_PROBLEM, EXIT_USAGE, Context, Refused, UsageError
from twitter_bot.management.explain import explain, missing_credential
from twitter_bot.settings import Settings
from twitter_bot.x.management import CredentialMissing, ManagementError, WebhookApi

PROG = "twitter-bot webhooks"

_Add = Callable[[argparse.ArgumentParser], object]


def add_arguments(parser: argparse.ArgumentParser, add_config: _Add) -> None:
    """The actions under ``webhooks``; ``add_config`` adds the shared ``--config`` option."""
    actions = parser.add_subparsers(dest="action", required=True)
    setup = actions.add_parser(
        "setup",
        help="register api.webhook-url, have X run a CRC, subscribe every bot; only what differs",
    )
    setup.add_argument(
        "--replace",
        action="store_true",
        help="delete webhooks registered for another URL (a stale host name) first",
    )
    parsers = [
        setup,
        actions.add_parser("status", help="webhooks, subscriptions, missing bots; exit 1 on any"),
        actions.add_parser("register", help="register api.webhook-url (X runs a CRC first)"),
        actions.add_parser("list", help="the registered webhooks and whether they are valid"),
        actions.add_parser("subscriptions", help="the accounts subscribed to the webhook"),
    ]
    for name, text in (
        ("crc", "have X run a CRC now (re-validates an invalid webhook)"),
        ("delete", "delete the webhook (and its subscriptions)"),
    ):
        command = actions.add_parser(name, help=text)
        command.add_argument("--id", help="webhook id (default: the one for api.webhook-url)")
        parsers.append(command)
    for name, text in (
        ("subscribe", "subscribe the bots' accounts, each with its own token"),
        ("unsubscribe", "unsubscribe the bots' accounts"),
    ):
        command = actions.add_parser(name, help=text)
        command.add_argument("--bot", metavar="USER_ID", help="only this bot (default: all)")
        parsers.append(command)
    lookup = actions.add_parser("lookup", help="the user id of a username, for bots[].user-id")
    lookup.add_argument("username", metavar="USERNAME")
    replay = actions.add_parser("replay", help="have X redeliver a time window's events (v2)")
    replay.add_argument("--from", dest="start", required=True, metavar="TIME", help=_TIME_HELP)
    replay.add_argument("--to", dest="end", default="now", metavar="TIME", help="default: now")
    replay.add_argument("--id", help="webhook id (default: the one for api.webhook-url)")
    for command in (*parsers, lookup, replay):
        add_config(command)


_TIME_HELP = "yyyymmddhhmm or ISO 8601 (2025-04-24T20:00Z); UTC unless an offset is given"


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """The arguments after ``webhooks`` (for callers that have no top-level parser)."""
    parser = argparse.ArgumentParser(prog=PROG)
    add_arguments(parser, lambda command: command.add_argument("--config"))
    return parser.parse_args(argv)


def _dispatch(ctx: Context, args: argparse.Namespace) -> int:
    action = args.action
    simple: dict[str, Callable[[Context], int]] = {
        "status": commands.status,
        "register": commands.register,
        "list": commands.list_webhooks,
        "subscriptions": commands.subscriptions,
    }
    if action in simple:
        return simple[action](ctx)
    if action == "setup":
        return commands.setup(ctx, args.replace)
    if action in ("crc", "delete"):
        step = commands.crc if action == "crc" else commands.delete
        return step(ctx, args.id)
    if action in ("subscribe", "unsubscribe"):
        change = commands.subscribe if action == "subscribe" else commands.unsubscribe
        return change(ctx, args.bot)
    if action == "lookup":
        return commands.lookup(ctx, args.username)
    return commands.replay(ctx, args.start, args.end, args.id)


def run(
    settings: Settings,
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    secrets: Sequence[str] = (),
    api: WebhookApi | None = None,
) -> int:
    """Run one ``webhooks`` action; every failure is one line on ``err``, never a traceback."""
    out = out or sys.stdout
    err = err or sys.stderr
    redact = redactor(list(secrets))
    client = api or api_for(settings, redact=redact)
    try:
        return _dispatch(Context(settings, client, out), args)
    except ManagementError as exc:
        line, code = explain(exc, settings)
    except CredentialMissing as exc:
        line, code = missing_credential(exc), EXIT_USAGE
    except UsageError as exc:
        line, code = str(exc), EXIT_USAGE
    except Refused as exc:
        line, code = str(exc), EXIT_PROBLEM
    finally:
        if api is None:
            client.close()
    print(f"{PROG} {args.action}: {redact(line)}", file=err, flush=True)
    return code
