"""Benchmark 3, pipeline overhead: webhook POST to the DM arriving at X, with instant stand-ins.

bench/loadgen.py sends ~1 KB signed deliveries at a fixed rate (100/s by default); the instant
gateway stand-in answers one text reply naming the event id, and the X stand-in timestamps
every DM it receives (bench/stubs.py; same machine, same clock). Overhead per message =
DM received at X - the moment the load generator started the webhook POST, so it includes the
webhook's own ack. The daemon's ``twitter_bot_bridge_end_to_end_seconds`` histogram (accept to
last reply sent) is quoted beside it (bucket upper bounds).

    .venv/bin/python bench/pipeline.py [--runs 3] [--duration 30] [--rate 100] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from _common import (
    fixed_rate_arguments,
    fmt_runs,
    histogram_quantile,
    load_average,
    percentile,
    run_loadgen,
    start_deployment,
    start_stubs,
    vhost,
    workdir,
    write_section,
)

LAYOUTS = ("split", "all")
E2E = "twitter_bot_bridge_end_to_end_seconds"
HEAD = (
    "| layout | POST -> DM p50 | POST -> DM p99 | daemon histogram p50 "
    "| daemon histogram p99 | undelivered |\n|---|---|---|---|---|---|"
)


def one_run(
    where: Any, stubs: Any, layout: str, args: argparse.Namespace, run: int
) -> dict[str, Any]:
    with vhost() as vhost_name:
        deployment = start_deployment(where, vhost_name, layout, stubs)
        try:
            stubs.reset()
            tag = f"p{run}{layout[0]}"
            summary = run_loadgen(
                where,
                deployment.webhook_url,
                rate=args.rate,
                duration=args.duration,
                first_id=200_000_000 * (run + 1),
                tag=tag,
            )
            accepted = {
                rid: wall for rid, wall, _lat, status in summary["requests"] if status == 200
            }
            deadline = time.monotonic() + args.drain_timeout
            while stubs.count() < len(accepted) and time.monotonic() < deadline:
                time.sleep(0.2)
            metrics = deployment.daemons[-1].metrics()
        finally:
            deployment.stop()
    overheads = []
    for text, at in stubs.dms():
        rid = text.removeprefix(f"r:{tag}")
        if rid in accepted:
            overheads.append((at - accepted.pop(rid)) * 1000)
    return {
        "overheads_ms": overheads,
        "undelivered": len(accepted),
        "e2e_p50": histogram_quantile(metrics, E2E, 0.5) * 1000,
        "e2e_p99": histogram_quantile(metrics, E2E, 0.99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    args = fixed_rate_arguments(duration=30.0, rate=100.0, parser=parser)
    loads = load_average()
    results: dict[str, list[dict[str, Any]]] = {layout: [] for layout in LAYOUTS}
    with workdir() as where:
        stubs = start_stubs(where)
        try:
            for run in range(args.runs):
                for layout in LAYOUTS:
                    result = one_run(where, stubs, layout, args, run)
                    results[layout].append(result)
                    o = result["overheads_ms"]
                    print(
                        f"run {run + 1} {layout}: p50 {percentile(o, 50):.1f} p99 "
                        f"{percentile(o, 99):.1f} ms, undelivered {result['undelivered']}",
                        flush=True,
                    )
        finally:
            stubs.proc.stop()
    rows = []
    verdicts = []
    names = {"split": "split: `webhook` + `worker`", "all": "one `--role all` process"}
    for layout in LAYOUTS:
        runs = results[layout]
        p50 = [percentile(r["overheads_ms"], 50) for r in runs if r["overheads_ms"]]
        p99 = [percentile(r["overheads_ms"], 99) for r in runs if r["overheads_ms"]]
        e50 = [r["e2e_p50"] for r in runs]
        e99 = [r["e2e_p99"] for r in runs]
        undelivered = sum(r["undelivered"] for r in runs)
        rows.append(
            f"| {names[layout]} | {fmt_runs(p50, ' ms')} | {fmt_runs(p99, ' ms')} "
            f"| <= {fmt_runs(e50, ' ms', 0)} | <= {fmt_runs(e99, ' ms', 0)} | {undelivered} |"
        )
        ok = p50 and p99 and statistics.median(p50) < 10 and statistics.median(p99) < 50
        verdict = "met" if ok else "MISSED"
        verdicts.append(f"- {layout}: target p50 < 10 ms and p99 < 50 ms (medians): {verdict}")
    body = f"""
{args.rate:g} messages/s for {args.duration:g} s per run (bench/loadgen.py, aiohttp client,
open loop), each message one gateway call and one reply DM (plus the read receipt and typing
indicator X calls, both on by default). Stand-ins answer instantly. Undelivered = accepted
but no DM within {args.drain_timeout:g} s after the load stopped. Load average before: {loads}.

{HEAD}
{chr(10).join(rows)}

{chr(10).join(verdicts)}
"""
    write_section("pipeline", "3. Pipeline overhead (webhook to last DM sent)", body)


if __name__ == "__main__":
    main()
