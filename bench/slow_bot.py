"""Benchmark 4, slow bot: the gateway takes 2 s per answer; the webhook's ack latency must not care.

Side by side at the same fixed rate (200 deliveries/s, 60 s, open loop, bench/loadgen.py):
  daemon   ``--role all`` (it queues, answers X, and bridges in the background)
  naive    bench/naive_receiver.py: calls the gateway inline and answers X after the reply
Both talk to the same stand-ins (bench/stubs.py --gateway-delay 2). X gives up on a webhook
call after about 3 s, so acks slower than that count as failed deliveries X would retry.

    .venv/bin/python bench/slow_bot.py [--runs 3] [--duration 60] [--rate 200] [--quick]
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import (
    BENCH,
    PY,
    SECRET,
    fixed_rate_arguments,
    fmt_runs,
    free_port,
    latency_row,
    load_average,
    load_deployment,
    percentile,
    run_loadgen,
    spawn,
    start_stubs,
    wait_http,
    workdir,
    write_section,
)

TARGETS = ("daemon", "naive")
DELAY = 2.0


def one_run(where: Any, stubs: Any, target: str, args: argparse.Namespace, run: int) -> Any:
    first_id = 300_000_000 * (run + 1) + (0 if target == "daemon" else 100_000_000)
    if target == "naive":
        port = free_port()
        argv = [PY, str(BENCH / "naive_receiver.py"), str(port), stubs.url, stubs.url, SECRET]
        proc = spawn("naive", argv, where)
        try:
            wait_http(f"http://127.0.0.1:{port}/health/ready", proc)
            return run_loadgen(
                where,
                f"http://127.0.0.1:{port}/webhooks",
                rate=args.rate,
                duration=args.duration,
                first_id=first_id,
                concurrency=4096,
            )
        finally:
            proc.stop()
    return load_deployment(
        where,
        "all",
        stubs,
        rate=args.rate,
        duration=args.duration,
        first_id=first_id,
        concurrency=4096,
    )


def main() -> None:
    args = fixed_rate_arguments(duration=60.0, rate=200.0)
    loads = load_average()
    results: dict[str, list[dict[str, Any]]] = {t: [] for t in TARGETS}
    with workdir() as where:
        stubs = start_stubs(where, gateway_delay=DELAY)
        try:
            for run in range(args.runs):
                for target in TARGETS:
                    summary = one_run(where, stubs, target, args, run)
                    results[target].append(summary)
                    lat = summary["ok_latencies_ms"]
                    print(
                        f"run {run + 1} {target}: {summary['statuses']} p50 "
                        f"{percentile(lat, 50):.1f} p99 {percentile(lat, 99):.1f} ms",
                        flush=True,
                    )
        finally:
            stubs.proc.stop()
    slow = {
        t: fmt_runs(
            [
                100 * sum(1 for v in r["ok_latencies_ms"] if v > 3000) / max(r["sent"], 1)
                for r in results[t]
            ],
            " %",
        )
        for t in TARGETS
    }
    body = f"""
Gateway stand-in answering after {DELAY:g} s; {args.rate:g} deliveries/s for {args.duration:g} s
per run, open loop (bench/loadgen.py, aiohttp client, own process, up to 4096 connections).
Load average before: {loads}.

| receiver | p50 | p99 | max | non-200 | 200s slower than X's ~3 s timeout |
|---|---|---|---|---|---|
{latency_row("daemon `--role all` (queue first)", results["daemon"])} {slow["daemon"]} |
{latency_row("naive: gateway inline, then 200", results["naive"])} {slow["naive"]} |

The daemon's acks do not wait for the bot; the bridge works through the backlog behind
them (at most `prefetch` 32 unacked per shard, 8 shards, so 128 answers/s at 2 s each).
"""
    write_section("slow_bot", "4. Slow bot (2 s per answer) vs a naive inline receiver", body)


if __name__ == "__main__":
    main()
