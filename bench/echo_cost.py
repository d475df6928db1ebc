"""What X's echoes of the bots' DMs cost, with the echo check off (dropped at parse) and on
(appended to the echo stream, read by the worker): CPU of the daemon and of RabbitMQ per
1,000 echoes, and the rate the webhook takes them at.

One ``--role all`` daemon (the echo reader lives in the worker), echoes posted by an aiohttp
client in this process (``--concurrency`` at once), each a signed AAA delivery of a DM the
bot sent. CPU from /proc (utime + stime) of the daemon and of RabbitMQ's beam.smp, over the
posting and until the worker has read every echo (on) or the last answer (off).

    .venv/bin/python bench/echo_cost.py [--echoes 20000] [--concurrency 32] [--runs 3] [--quick]

Not written to docs/performance.md on its own: the numbers go into the echo-check bullet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import aiohttp
from _common import BOT, metric_value, sign, start_daemon, vhost, workdir

ON = "chatbots.twitter-bot.webhooks-messaging.resend-echo-wait: 2s\n"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def broker_pid() -> int:
    argv = ["pgrep", "-f", "beam.smp"]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


def echo_body(n: int) -> tuple[bytes, str]:
    user = str(900_000_000 + n % 500)
    event = {
        "type": "message_create",
        "id": str(5_000_000_000 + n),
        "created_timestamp": str(int(time.time() * 1000)),
        "message_create": {
            "target": {"recipient_id": user},
            "sender_id": BOT,
            "message_data": {"text": f"reply {n} " + "x" * 200, "entities": {"urls": []}},
        },
    }
    body = {
        "for_user_id": BOT,
        "direct_message_events": [event],
        "users": {
            user: {"id": user, "name": "Jordan Brinks", "screen_name": "furiouscamper"},
            BOT: {"id": BOT, "name": "Demo bot", "screen_name": "demobot"},
        },
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    return raw, sign(raw)


async def post_all(url: str, count: int, concurrency: int) -> float:
    bodies = [echo_body(n) for n in range(count)]
    queue = iter(bodies)
    async with aiohttp.ClientSession() as http:

        async def sender() -> None:
            for raw, signature in queue:
                headers = {"x-twitter-webhooks-signature": signature}
                async with http.post(url, data=raw, headers=headers) as response:
                    assert response.status == 200, response.status

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        return time.perf_counter() - started


def one_run(check_on: bool, count: int, concurrency: int) -> dict[str, float]:
    with workdir() as where, vhost() as vhost_name:
        daemon = start_daemon(where, vhost_name, "all", None, extra=ON if check_on else "")
        try:
            time.sleep(1.0)
            broker = broker_pid()
            daemon_cpu, broker_cpu = cpu_seconds(daemon.proc.pid), cpu_seconds(broker)
            seconds = asyncio.run(post_all(daemon.url + "/webhooks", count, concurrency))
            if check_on:
                name = "twitter_bot_bridge_echoes_read_total"
                deadline = time.monotonic() + 60
                while metric_value(daemon.metrics(), name) < count:
                    assert time.monotonic() < deadline, "the worker did not read every echo"
                    time.sleep(0.05)
            return {
                "rate": count / seconds,
                # CPU milliseconds per 1,000 echoes
                "daemon_ms": (cpu_seconds(daemon.proc.pid) - daemon_cpu) * 1e6 / count,
                "broker_ms": (cpu_seconds(broker) - broker_cpu) * 1e6 / count,
            }
        finally:
            daemon.proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--echoes", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2,000 echoes, one run")
    args = parser.parse_args()
    if args.quick:
        args.echoes, args.runs = 2_000, 1
    for check_on in (False, True):
        runs = [one_run(check_on, args.echoes, args.concurrency) for _ in range(args.runs)]
        label = "check on " if check_on else "check off"
        cells = []
        units = (("rate", "echoes/s"), ("daemon_ms", "ms/1k"), ("broker_ms", "ms/1k"))
        for key, unit in units:
            values = [run[key] for run in runs]
            spread = f"{min(values):.0f}-{max(values):.0f}"
            cells.append(f"{key} {statistics.median(values):.0f} ({spread}) {unit}")
        print(f"{label}: " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
