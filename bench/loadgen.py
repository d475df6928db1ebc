"""Load generator (a separate process): POSTs pre-signed ~1 KB deliveries at a fixed rate.

Open loop: request i is started at t0 + i/rate whether or not earlier ones were answered, and
its latency is measured from that scheduled moment, so a slow server cannot slow the load
down and hide its own latency (no coordinated omission). Every delivery has its own event id.
Writes a JSON summary: counts per status, latencies (ms) of the 200s, and per request
(event id, scheduled epoch time, latency ms, status) for the pipeline benchmark.

    .venv/bin/python bench/loadgen.py --url http://127.0.0.1:5756/webhooks --rate 200 \
        --duration 60 --first-id 100000000 --out /tmp/out.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SIGNATURE_HEADER, signed_body, user_for  # noqa: E402


async def closed_loop(args: argparse.Namespace) -> dict[str, object]:
    """``--count`` deliveries from ``--concurrency`` senders, each waiting for its answer."""
    statuses: Counter[int] = Counter()
    next_index = iter(range(args.count))
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def sender() -> None:
            for i in next_index:
                raw, signature = signed_body(str(args.first_id + i), user_for(i, args.users))
                headers = {SIGNATURE_HEADER: signature, "Content-Type": "application/json"}
                try:
                    async with http.post(args.url, data=raw, headers=headers) as response:
                        await response.read()
                        statuses[response.status] += 1
                except (aiohttp.ClientError, TimeoutError):
                    statuses[0] += 1

        await asyncio.gather(*(sender() for _ in range(args.concurrency)))
    return {
        "sent": args.count,
        "elapsed_s": time.perf_counter() - start,
        "statuses": {str(k): v for k, v in statuses.items()},
        "ok_latencies_ms": [],
        "requests": [],
    }


class OwnPauses:
    """The load generator's own garbage-collection pauses.

    A pause here delays the requests due meanwhile, and that delay would be counted as
    the server's latency: the summary reports them so a tail can be told apart.
    """

    def __init__(self, over: float = 0.005) -> None:
        self.over = over
        self.pauses_ms: list[float] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif (took := time.perf_counter() - self._started) > self.over:
            self.pauses_ms.append(round(took * 1000, 1))


async def run(args: argparse.Namespace) -> dict[str, object]:
    if args.count:
        return await closed_loop(args)
    total = int(args.rate * args.duration)
    bodies = [
        signed_body(str(args.first_id + i), user_for(i, args.users), args.tag) for i in range(total)
    ]
    # The pre-signed bodies live until the end: keep them out of the collector's full
    # passes, which would otherwise walk them all while requests are due.
    gc.freeze()
    own_pauses = OwnPauses()
    gc.callbacks.append(own_pauses)
    results: list[tuple[str, float, float, int]] = []
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def one(i: int, scheduled: float, wall: float) -> None:
            raw, signature = bodies[i]
            headers = {SIGNATURE_HEADER: signature, "Content-Type": "application/json"}
            try:
                async with http.post(args.url, data=raw, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            latency = (time.perf_counter() - scheduled) * 1000
            results.append((str(args.first_id + i), wall, latency, status))

        tasks = []
        start = time.perf_counter()
        wall0 = time.time()
        for i in range(total):
            due = start + i / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due, wall0 + i / args.rate)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    statuses = Counter(status for *_rest, status in results)
    ok = sorted(latency for _id, _wall, latency, status in results if status == 200)
    return {
        "sent": total,
        "elapsed_s": elapsed,
        "statuses": {str(k): v for k, v in statuses.items()},
        "ok_latencies_ms": ok,
        "requests": results if args.keep_requests else [],
        "own_gc_pauses_ms": own_pauses.pauses_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--duration", type=float, default=0.0)
    parser.add_argument("--count", type=int, default=0, help="closed loop: send this many")
    parser.add_argument("--first-id", type=int, required=True)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--tag", default="")
    parser.add_argument("--keep-requests", action="store_true", default=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    summary = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
