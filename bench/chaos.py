"""Chaos: 10,000 messages across 50 conversations and 2 bots through two real daemon processes,
one scenario at a time, then a summary table (also written to docs/performance.md).

Scenarios (seconds are from the start of the load):
  kill      an instance SIGKILLed at 12 random moments, restarted each time
  broker    the RabbitMQ link (a TCP proxy) cut for 8 s at 10 s and 30 s, 5 s at 45 s
  gateway   the gateway answers 503 for 60 s from 10 s
  x429      X answers 429 to the second bot's DMs for 30 s from 10 s (x-rate-limit-reset)
  all       all of them together
The harness (tests/support/chaos.py) plays X: each conversation's DMs in order, each to a
random instance, redelivered after a non-200 or a 3 s timeout, and echoes every DM the bots
send back to a random instance, as X does (up to 4 tries; `--no-echoes`: not at all). The
daemons check a reply in doubt after a crash against its echo (the default); `--config
'chatbots.twitter-bot.webhooks-messaging.resend-echo-wait: 0'` turns that off. They run with default
bridge settings (retry 1 s doubling to 300 s, each wait 1/2 to 1 of that, 10 attempts, 10 s
hold), with read receipts and typing indicators off.

    .venv/bin/python bench/chaos.py [--scenarios kill,broker,gateway,x429,all]
        [--messages 10000] [--conversations 50] [--rate 200] [--seed 1] [--quick]
        [--config 'chatbots.messaging.rabbit.pack-publishes: false' ...] [--no-echoes]
        [--logs DIR]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from _common import vhost, workdir, write_section

from tests.support.chaos import ChaosPlan, ChaosResult, Faults, run_chaos, summary_table

SCENARIOS = {
    "kill": Faults(kills=12, kill_window=(3.0, 55.0)),
    "broker": Faults(broker_cuts=((10.0, 8.0), (30.0, 8.0), (45.0, 5.0))),
    "gateway": Faults(gateway_503=(10.0, 60.0)),
    "x429": Faults(x_429=(10.0, 30.0)),
    "all": Faults(
        kills=12,
        kill_window=(3.0, 70.0),
        broker_cuts=((20.0, 8.0), (50.0, 5.0)),
        gateway_503=(10.0, 60.0),
        x_429=(15.0, 30.0),
    ),
}
NAMES = {
    "kill": "SIGKILL x12 (2 instances)",
    "broker": "broker link cut 3x",
    "gateway": "gateway 503 for 60 s",
    "x429": "X 429 for bot-b, 30 s",
    "all": "all together",
}


async def run(args: argparse.Namespace, where: Path) -> list[ChaosResult]:
    results = []
    for n, key in enumerate(args.scenarios.split(",")):
        plan = ChaosPlan(
            name=NAMES[key],
            messages=args.messages,
            conversations=args.conversations,
            rate=args.rate,
            faults=SCENARIOS[key],
            drain_timeout=args.drain_timeout,
            seed=args.seed,
            extra_config="".join(line + "\n" for line in args.config),
            echoes=not args.no_echoes,
            logs_to=args.logs / f"{n}-{key}" if args.logs else None,
        )
        with vhost() as vhost_name:
            result = await run_chaos(plan, vhost_name, where)
        results.append(result)
        print(summary_table([result]).splitlines()[-1], flush=True)
        print(f"  duplicates by cause: {result.dup_causes}", flush=True)
        print(
            f"  X's echoes: {result.echoes_sent} delivered, {result.echoes_given_up} given up",
            flush=True,
        )
        print(f"  daemon warnings/errors: {result.daemon_events}", flush=True)
        if args.verbose:
            print("\n".join("  " + note for note in result.notes), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--drain-timeout", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="print duplicate examples")
    parser.add_argument(
        "--no-echoes", action="store_true", help="X does not echo the bots' DMs to the webhook"
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="LINE",
        help="a HOCON line added to both daemons' config (repeatable), e.g. "
        "'chatbots.messaging.rabbit.pack-publishes: false'",
    )
    parser.add_argument("--quick", action="store_true", help="1,000 messages per scenario")
    parser.add_argument(
        "--logs",
        type=Path,
        help="write each daemon process's log here (DIR/<n>-<scenario>/daemon-<k>.log); "
        "add --config 'chatbots.twitter-bot.logging.level: info' to see every message's path",
    )
    args = parser.parse_args()
    if args.quick:
        args.messages = 1_000
    with workdir() as where:
        results = asyncio.run(run(args, where))
    table = summary_table(results)
    print("\n" + table)
    extra = "".join(f"\nDaemon config added: `{line}`." for line in args.config)
    echoes = (
        "FakeX does not echo the bots' DMs."
        if args.no_echoes
        else "FakeX echoes each DM a bot sends to a random instance, as X does (20,000 more\n"
        "webhook calls per run)."
    )
    body = f"""
{args.messages:,} messages per scenario across {args.conversations} conversations and 2 bots,
offered at {args.rate:g}/s, through 2 `--role all` daemon processes (`tests/support/chaos.py`;
FakeX and FakeGateway in the harness process, the broker link through a TCP proxy the run
controls). Every message is answered with 2 replies. {echoes} Seed {args.seed}.{extra}
Lost = a reply of an accepted message never sent; duplicated = extra copies of a reply;
out of order = a first copy sent after a later reply of the same conversation.

{table}
"""
    write_section("chaos", "Chaos runs", body)


if __name__ == "__main__":
    main()
