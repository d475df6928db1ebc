"""Benchmark 5, memory: resident set size idle and after 100,000 deliveries.

  webhook   ``--role webhook``: RSS idle, then after accepting 100,000 distinct deliveries
            (the dedupe memory holds up to 100,000 ids by default)
  worker    ``--role worker`` on the same queues, bridging to instant stand-ins meanwhile:
            RSS idle, then when the webhook is done and again when it drained (or gave up
            waiting after --drain-timeout)
  all       ``--role all``, idle only (for comparison)
Load: bench/loadgen.py closed loop (64 senders, each waiting for its answer), own process.

    .venv/bin/python bench/memory.py [--count 100000] [--drain-timeout 600] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import time

from _common import (
    BENCH,
    PY,
    ROOT,
    metric_value,
    start_daemon,
    start_deployment,
    start_stubs,
    vhost,
    workdir,
    write_section,
)

SETTLE = 5.0


def mib(kb: int) -> str:
    return f"{kb / 1024:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument("--quick", action="store_true", help="5,000 deliveries, 60 s drain cap")
    args = parser.parse_args()
    if args.quick:
        args.count, args.drain_timeout = 5_000, 60.0
    with workdir() as where:
        stubs = start_stubs(where)
        try:
            with vhost() as vhost_name:
                single = start_daemon(where, vhost_name, "all", stubs)
                time.sleep(SETTLE)
                all_idle = single.proc.rss_kb()
                single.proc.stop()
            with vhost() as vhost_name:
                split = start_deployment(where, vhost_name, "split", stubs)
                webhook, worker = split.daemons
                time.sleep(SETTLE)
                idle = (webhook.proc.rss_kb(), worker.proc.rss_kb())
                started = time.monotonic()
                out = where / "memory-load.json"
                subprocess.run(
                    [
                        PY,
                        str(BENCH / "loadgen.py"),
                        "--url",
                        split.webhook_url,
                        "--count",
                        str(args.count),
                        "--concurrency",
                        "64",
                        "--first-id",
                        "600000000",
                        "--out",
                        str(out),
                    ],
                    check=True,
                    cwd=ROOT,
                )
                load_s = time.monotonic() - started
                time.sleep(SETTLE)
                loaded = (webhook.proc.rss_kb(), worker.proc.rss_kb())
                accepted = metric_value(webhook.metrics(), "twitter_bot_messages_queued_total")
                deadline = time.monotonic() + args.drain_timeout
                while stubs.count() < accepted and time.monotonic() < deadline:
                    time.sleep(1.0)
                bridged = stubs.count()
                drained_s = time.monotonic() - started
                drained = (webhook.proc.rss_kb(), worker.proc.rss_kb())
                peaks = (webhook.proc.hwm_kb(), worker.proc.hwm_kb())
                split.stop()
        finally:
            stubs.proc.stop()
    verdict = (
        "drained" if bridged >= accepted else f"NOT drained within the {args.drain_timeout:g} s cap"
    )
    body = f"""
{args.count:,} signed ~1 KB deliveries with distinct event ids, sent by bench/loadgen.py (closed
loop, 64 concurrent senders, own process) to a `webhook` process while a `worker` process on
the same queues bridged them to instant stand-ins. Default settings (dedupe memory up to
100,000 ids, prefetch 32 per shard). RSS from /proc (VmRSS; peak = VmHWM).

| process | idle | after {args.count:,} accepted | after the worker's drain | peak |
|---|---|---|---|---|
| `--role webhook` | {mib(idle[0])} | {mib(loaded[0])} | {mib(drained[0])} | {mib(peaks[0])} |
| `--role worker` | {mib(idle[1])} | {mib(loaded[1])} | {mib(drained[1])} | {mib(peaks[1])} |
| `--role all` | {mib(all_idle)} | - | - | - |

Accepted {accepted:,.0f} in {load_s:.0f} s; the worker had sent {bridged:,} replies
{drained_s:.0f} s after the load started ({verdict}).
"""
    write_section("memory", "5. Memory", body)


if __name__ == "__main__":
    main()
