"""The webhook's per-delivery pieces, timed alone: JSON, the log line per DM, redaction.

Micro-benchmarks (timeit, in this process, no RabbitMQ): they show what each piece costs
per delivery and how the log line scales with the number of secrets (two per bot). They
print; they write no section of docs/performance.md (its summary quotes them).

    .venv/bin/python bench/hot_path.py [--number 20000]
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import secrets
import timeit

import structlog
from _common import signed_body

from twitter_bot import jsoncodec
from twitter_bot.logs import configure_logging


def per_call_us(fn: object, number: int) -> float:
    """The best of 5 runs of ``number // 5`` calls: the least disturbed by the machine."""
    runs = timeit.repeat(fn, number=number // 5, repeat=5)  # type: ignore[arg-type]
    return min(runs) / (number // 5) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args()
    body, _ = signed_body("1234567890123456789", "4444")
    parsed = json.loads(body)
    rows = [
        ("json.loads, 1 KB delivery", lambda: json.loads(body)),
        ("jsoncodec.loads, 1 KB delivery", lambda: jsoncodec.loads(body)),
        ("json.dumps, the delivery", lambda: json.dumps(parsed, ensure_ascii=False).encode()),
        ("jsoncodec.dumps, the delivery", lambda: jsoncodec.dumps(parsed)),
    ]
    for name, fn in rows:
        print(f"{name:40s} {per_call_us(fn, args.number):7.1f} us")
    for count in (5, 105, 405):
        configure_logging(
            "info",
            "json",
            [secrets.token_urlsafe(30) for _ in range(count)],
            stream=io.StringIO(),
            cache_loggers=True,
        )
        log = structlog.get_logger("twitter_bot.webhook.handler")

        line = functools.partial(
            log.info,
            "webhook.dm_queued",
            event_id="1234567890123456789",
            bot_user_id="9876543210",
            bot_id="aaaabbbb-4444-5555-6666-ccccddddeeee",
            conversation_id="9876543210-1234567",
        )
        print(f"{f'log line, {count} secrets':40s} {per_call_us(line, args.number):7.1f} us")
        structlog.reset_defaults()


if __name__ == "__main__":
    main()
