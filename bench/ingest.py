"""Benchmark 1, ingest: deliveries per second accepted at concurrency 64, side by side.

Targets, each in a fresh RabbitMQ vhost, interleaved round by round:
  bare      bench/bare_server.py: aiohttp answering 200, nothing else            (ceiling a)
  minimal   bench/minimal_handler.py: signature + one confirmed persistent publish (ceiling b)
  all       the daemon, --role all: the bridge consumes in the same process and calls
            instant X and gateway stand-ins (bench/stubs.py, another process)
  webhook   the daemon, --role webhook: ingest only (the roles split)
            (both with the default rabbit.pack-publishes = true: deliveries to one shard
            that arrive while its publish is in flight share a broker message)
  all-unpacked, webhook-unpacked
            the same with rabbit.pack-publishes = false: one broker message per DM
Load: wrk (Debian package `wrk`), 2 threads, 64 connections, a Lua script sending pre-signed
~1 KB deliveries with distinct event ids (bench/deliveries.lua). Only 200s count.

    .venv/bin/python bench/ingest.py [--runs 3] [--duration 15] [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import time
from pathlib import Path

from _common import (
    BENCH,
    PY,
    SECRET,
    Proc,
    fmt_runs,
    free_port,
    metric_value,
    spawn,
    start_daemon,
    start_stubs,
    vhost,
    wait_http,
    workdir,
    write_body_file,
    write_section,
)

TARGETS = ("bare", "minimal", "all", "webhook", "all-unpacked", "webhook-unpacked")
DAEMONS = ("all", "webhook", "all-unpacked", "webhook-unpacked")
UNPACKED = "chatbots.messaging.rabbit.pack-publishes: false\n"
HEAD = (
    "| target | accepted/s, median (min-max) | ratio to (a) | ratio to (b) | wrk p99 "
    "| non-200 | ids reused |\n|---|---|---|---|---|---|---|"
)
THREADS = 2
CONNECTIONS = 64


def wait_port(port: int, proc: Proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not listen on {port}")


def wrk(port: int, bodies: Path, seconds: float) -> dict[str, float]:
    env = {**os.environ, "BODIES": str(bodies), "WRK_THREADS": str(THREADS)}
    argv = [
        "wrk",
        f"-t{THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(BENCH / "deliveries.lua"),
        f"http://127.0.0.1:{port}/webhooks",
    ]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s|m)\b", out)
    assert m is not None, out
    elapsed = float(m.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(3)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "requests": total,
        "ok_per_s": (total - (int(non2xx.group(1)) if non2xx else 0)) / elapsed,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": 1.0 if errors else 0.0,
        "wraps": int(re.search(r"WRAPS (\d+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
    }


def start_target(target: str, where: Path, vhost_name: str) -> tuple[list[Proc], int, object]:
    if target == "bare":
        port = free_port()
        proc = spawn("bare", [PY, str(BENCH / "bare_server.py"), str(port)], where)
        wait_http(f"http://127.0.0.1:{port}/health/ready", proc)
        return [proc], port, None
    if target == "minimal":
        port = free_port()
        argv = [PY, str(BENCH / "minimal_handler.py"), str(port), vhost_name, "bench.min", SECRET]
        proc = spawn(target, argv, where)
        wait_port(port, proc)
        return [proc], port, None
    role, _, unpacked = target.partition("-")
    stubs = start_stubs(where) if role == "all" else None
    daemon = start_daemon(where, vhost_name, role, stubs, extra=UNPACKED if unpacked else "")
    procs = [daemon.proc] + ([stubs.proc] if stubs else [])
    return procs, daemon.port, daemon


def measure(target: str, where: Path, warm: Path, bodies: Path, seconds: float) -> dict[str, float]:
    with vhost() as vhost_name:
        procs, port, daemon = start_target(target, where, vhost_name)
        try:
            wrk(port, warm, 2)
            result = wrk(port, bodies, seconds)
            if daemon is not None:
                text = daemon.metrics()  # type: ignore[attr-defined]
                result["dedupe_hits"] = metric_value(
                    text, "twitter_bot_webhook_duplicates_dropped_total"
                )
                packed = metric_value(text, "twitter_bot_publish_pack_size_sum")
                result["mean_pack"] = packed / max(
                    metric_value(text, "twitter_bot_publish_pack_size_count"), 1
                )
        finally:
            for proc in procs:
                proc.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--bodies", type=int, default=0, help="pool size (default: 6000/s)")
    parser.add_argument("--quick", action="store_true", help="1 run of 3 s: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.duration = 1, 3.0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    results: dict[str, list[dict[str, float]]] = {t: [] for t in TARGETS}
    with workdir() as where:
        # Enough that even the fastest daemon run does not wrap (a wrap is a dedupe hit).
        warm = write_body_file(where / "warm.tsv", 20_000, 900_000_000)
        pool = args.bodies or int(6000 * args.duration)
        print(f"writing {pool} signed bodies ...", flush=True)
        bodies = write_body_file(where / "bodies.tsv", pool, 100_000_000)
        for run in range(args.runs):
            for target in TARGETS:
                result = measure(target, where, warm, bodies, args.duration)
                results[target].append(result)
                print(f"run {run + 1} {target:8s} {result}", flush=True)
    report(results, args)


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    rates = {t: [r["ok_per_s"] for r in results[t]] for t in TARGETS}
    med = {t: sorted(v)[len(v) // 2] for t, v in rates.items()}
    rows = []
    packs = {t: statistics.median(r["mean_pack"] for r in results[t]) for t in ("all", "webhook")}
    names = {
        "bare": "(a) bare aiohttp, 200 only",
        "minimal": "(b) minimal: signature + confirmed publish",
        "all": "daemon `--role all` (bridge in-process)",
        "webhook": "daemon `--role webhook` (roles split)",
        "all-unpacked": "daemon `--role all`, `pack-publishes = false`",
        "webhook-unpacked": "daemon `--role webhook`, `pack-publishes = false`",
    }
    for target in TARGETS:
        runs = results[target]
        ratio_a = f"{med[target] / med['bare']:.2f}"
        ratio_b = f"{med[target] / med['minimal']:.2f}"
        rejected = sum(int(r["non2xx"]) for r in runs)
        wraps = sum(int(r["wraps"]) for r in runs)
        p99 = fmt_runs([r["p99_ms"] for r in runs], " ms")
        rows.append(
            f"| {names[target]} | {fmt_runs(rates[target], '/s', 0)} | {ratio_a} | {ratio_b} "
            f"| {p99} | {rejected} | {wraps} |"
        )
    verdicts = []
    for target in DAEMONS:
        vs_b, vs_a = med[target] / med["minimal"], med[target] / med["bare"]
        met_b = "met" if vs_b >= 0.9 else "MISSED"
        met_a = "met" if vs_a >= 0.3 else "MISSED"
        verdicts.append(
            f"- `{target}`: {vs_b:.2f} of (b) (target >= 0.9: {met_b}), "
            f"{vs_a:.2f} of (a) (target >= 0.3: {met_a})"
        )
    body = f"""
Load generator: wrk {THREADS} threads, {CONNECTIONS} connections, {args.duration:g} s per
measurement after a 2 s warm-up, pre-signed ~1 KB AAA deliveries with distinct event ids
(`bench/deliveries.lua`), 1000 distinct senders. Each target runs in a fresh vhost; the
targets are interleaved in each round. Only 200 answers count (publisher-confirmed for (b)
and the daemon). Daemon: default settings, JSON logs at `info` to a file. Ratios are of
the medians.

{HEAD}
{chr(10).join(rows)}

{chr(10).join(verdicts)}

With `rabbit.pack-publishes = true` (the default), deliveries that arrive while a shard's
publish is in flight go out together as one broker message once it confirms, each still
answered 200 only after its own pack is confirmed. Mean deliveries per broker message
(median of the runs): `all` {packs["all"]:.1f}, `webhook` {packs["webhook"]:.1f}. The
`-unpacked` rows are the same daemon publishing one broker message per DM.
"""
    write_section("ingest", "1. Ingest rate at concurrency 64", body)


if __name__ == "__main__":
    main()
