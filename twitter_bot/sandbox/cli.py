"""``twitter-bot sandbox [--config FILE] [--gateway URL] [--port 5757]``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from urllib.parse import urlsplit

from twitter_bot.logs import configure_logging
from twitter_bot.sandbox.server import DEFAULT_PORT, SandboxOptions, run_sandbox
from twitter_bot.settings import Settings

DEFAULT_CONFIG = "conf/sandbox.conf"
EXIT_CANNOT_START = 1


def _http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"must be an http:// or https:// URL, not {text!r}")
    return text


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, not {text!r}")
    return int(text)


def add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--config",
        help=f"HOCON file (default: {DEFAULT_CONFIG}; $TWITTER_BOT_CONFIG is not read here)",
    )
    command.add_argument(
        "--gateway",
        type=_http_url,
        metavar="URL",
        help="a real bot platform (gateway-api.md) instead of the built-in echo bot",
    )
    command.add_argument(
        "--host", default="127.0.0.1", help="address of the chat page (default: 127.0.0.1)"
    )
    command.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port of the chat page (default: {DEFAULT_PORT})",
    )


def run(settings: Settings, args: argparse.Namespace, secrets: list[str]) -> int:
    """Run the sandbox until SIGINT or SIGTERM; 1 when a port is taken."""
    configure_logging(settings.logging.level, settings.logging.format, secrets)
    options = SandboxOptions(host=args.host, port=args.port, gateway_url=args.gateway)
    try:
        asyncio.run(run_sandbox(settings, options))
    except OSError as exc:
        print(f"twitter-bot sandbox: cannot start: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    return 0
