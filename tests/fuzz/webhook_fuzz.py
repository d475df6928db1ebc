"""Hostile input for the webhook: random and mutated AAA/XAA bodies, signed and unsigned.

Properties, checked on every input against ``create_app(settings, role="webhook")`` and the
real RabbitMQ:

- never a 500 (or any status outside 200/400/401/413/503), and the process keeps serving;
- an unsigned (or wrongly signed) body is a 401 and queues nothing: the unsigned app's
  ``twitter_bot_messages_queued_total`` stays 0 and its shard queues stay empty.

``run_fuzz(vhost, examples)`` is shared by the CI test (tests/fuzz/test_webhook_fuzz.py, a
few hundred inputs) and the long run (bench/fuzz.py, tens of thousands).
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import BOT_A_USER_ID, BOT_B_USER_ID, CONSUMER_SECRET, make_settings
from tests.support.deliveries import aaa_delivery, dm_event, xaa_delivery
from tests.support.rabbit import RABBIT_HOST, RABBIT_PORT
from twitter_bot.app import create_app, topology_for
from twitter_bot.metrics import Metrics
from twitter_bot.webhook.signature import SIGNATURE_HEADER, sign_body

ALLOWED = {200, 400, 401, 413, 503}
MAX_BODY = 64 * 1024

# Inputs that once crashed the daemon (a 500): deep nesting and lone surrogates. Both are
# fixed and have regression tests in test_webhook_fuzz.py, so the fuzz no longer skips them.
KNOWN_BUGS_OPEN = False


def known_bug(raw: bytes) -> str | None:
    """Which open bug an input would hit, if any."""
    if not KNOWN_BUGS_OPEN:
        return None
    try:
        value = json.loads(raw)
    except RecursionError:
        return "deep-nesting"  # json.loads raises RecursionError, not ValueError
    except ValueError:
        return None
    if _has_lone_surrogate(value):
        return "lone-surrogate"  # Envelope.encode() cannot UTF-8-encode it
    return None


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any(0xD800 <= ord(c) <= 0xDFFF for c in item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


# -- strategies ---------------------------------------------------------------------------

UNICODE = st.characters(codec=None, exclude_categories=())  # every code point, surrogates too
texts = st.one_of(
    st.text(max_size=40),
    st.text(UNICODE, max_size=40),
    st.sampled_from(["", " ", "\x00", "\u202e", "\ufeff", "𝕏", "a" * 12_000, "%00", "../.."]),
)
huge_numbers = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
)
ids = st.one_of(
    st.integers(min_value=0, max_value=2**70).map(str),
    st.integers(min_value=0, max_value=2**70),
    huge_numbers,
    texts,
    st.sampled_from(["", "0", "-5", "1e9", "0x10", " 1", "1" * 5000, BOT_A_USER_ID]),
)
leaves = st.one_of(st.none(), st.booleans(), huge_numbers, texts, ids)
json_values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)
KEYS = [
    "for_user_id", "direct_message_events", "users", "type", "id", "created_timestamp",
    "message_create", "target", "recipient_id", "sender_id", "message_data", "text",
    "entities", "attachment", "quick_reply_response", "metadata", "media", "data",
    "event_type", "filter", "user_id", "payload", "tweet_create_events", "user_event",
    "direct_message_indicate_typing_events", "apps", "urls", "event_uuid",
]  # fmt: skip
keys = st.one_of(st.sampled_from(KEYS), texts)


@st.composite
def valid_delivery(draw: st.DrawFn) -> dict[str, Any]:
    bot = draw(st.sampled_from([BOT_A_USER_ID, BOT_B_USER_ID, "999"]))
    events = [
        dm_event(
            str(draw(st.integers(1, 2**63 - 1))),
            draw(st.sampled_from(["3001969357", "42", bot])),
            bot,
            draw(texts),
            quick_reply_metadata=draw(st.one_of(st.none(), texts)),
        )
        for _ in range(draw(st.integers(1, 3)))
    ]
    if draw(st.booleans()):
        return xaa_delivery(bot, events[0], draw(st.sampled_from(["dm.received", "dm.sent", ""])))
    return aaa_delivery(bot, *events)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _mutate(value: Any, rng: random.Random, replacement: Any, key: str) -> Any:
    """One structural change at a random place: replace, delete, add, wrap, duplicate."""
    paths = _paths(value)
    path = rng.choice(paths)
    if not path:
        return replacement
    parent = value
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    op = rng.randrange(5)
    if op == 0:
        parent[last] = replacement
    elif op == 1:
        del parent[last]
    elif op == 2 and isinstance(parent, dict):
        parent[key] = replacement
    elif op == 3:
        parent[last] = [parent[last]]
    elif isinstance(parent, list):
        parent.append(copy.deepcopy(parent[last]))
    else:
        parent[last] = {key: parent[last]}
    return value


@st.composite
def mutated_delivery(draw: st.DrawFn) -> Any:
    value = draw(valid_delivery())
    rng = random.Random(draw(st.integers(0, 2**32)))
    for _ in range(draw(st.integers(1, 4))):
        value = _mutate(value, rng, draw(json_values), draw(keys))
    return value


def _dumps(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["valid", "mutated", "mutated", "random", "bytes", "cut", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "deep":
        depth = draw(st.integers(1, 200_000))
        return b"[" * depth + b"]" * depth
    value = {
        "valid": valid_delivery(),
        "mutated": mutated_delivery(),
        "random": json_values,
        "cut": valid_delivery(),
    }[kind]
    raw = _dumps(draw(value), draw(st.booleans()))
    if kind == "cut":
        raw = raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    return raw


SIGNING = ["signed", "signed", "none", "wrong-secret", "other-body", "garbage", "empty"]


def signature_for(mode: str, raw: bytes) -> dict[str, str]:
    if mode == "signed":
        return {SIGNATURE_HEADER: sign_body(CONSUMER_SECRET, raw)}
    if mode == "wrong-secret":
        return {SIGNATURE_HEADER: sign_body(CONSUMER_SECRET + "x", raw)}
    if mode == "other-body":
        return {SIGNATURE_HEADER: sign_body(CONSUMER_SECRET, raw + b" ")}
    if mode == "garbage":
        return {SIGNATURE_HEADER: "sha256=" + "A" * 44}
    if mode == "empty":
        return {SIGNATURE_HEADER: ""}
    return {}


# -- the run ------------------------------------------------------------------------------


@dataclass
class FuzzReport:
    tried: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    skipped_known_bugs: Counter[str] = field(default_factory=Counter)
    unsigned: int = 0
    queued_from_signed: float = 0.0


class _Apps:
    """Two webhook apps on the same RabbitMQ vhost: one gets signed inputs, one unsigned."""

    def __init__(self, vhost: str) -> None:
        self.signed_settings = make_settings(vhost)
        self.unsigned_settings = make_settings(vhost)
        self.signed = TestClient(TestServer(create_app(self.signed_settings, role="webhook")))
        self.unsigned_metrics = Metrics()
        self.unsigned = TestClient(
            TestServer(
                create_app(self.unsigned_settings, metrics=self.unsigned_metrics, role="webhook")
            )
        )

    async def start(self) -> None:
        await self.signed.start_server()
        await self.unsigned.start_server()

    async def close(self) -> None:
        await self.signed.close()
        await self.unsigned.close()


async def _started_apps(vhost: str) -> _Apps:
    apps = _Apps(vhost)
    await apps.start()
    return apps


async def _post(client: TestClient, raw: bytes, headers: dict[str, str]) -> int:
    response = await client.post(
        "/webhooks", data=raw, headers={"Content-Type": "application/json", **headers}
    )
    await response.read()
    return response.status


async def _queued(client: TestClient) -> float:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith("twitter_bot_messages_queued_total "):
            return float(line.split()[-1])
    return 0.0


async def _queue_depth(settings_: Any) -> int:
    topology = topology_for(settings_)
    connection = await aio_pika.connect(
        host=RABBIT_HOST, port=RABBIT_PORT, virtualhost=settings_.rabbit.virtual_host
    )
    async with connection:
        channel = await connection.channel()
        total = 0
        for shard in range(topology.shards):
            queue = await channel.declare_queue(topology.shard_queue(shard), passive=True)
            total += queue.declaration_result.message_count or 0
        return total


def run_fuzz(vhost: str, examples: int, seed: int | None = None) -> FuzzReport:
    """Run ``examples`` hypothesis inputs; raise AssertionError (shrunk) on a violation."""
    report = FuzzReport()
    with asyncio.Runner() as runner:
        apps = runner.run(_started_apps(vhost))
        try:

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=seed is not None,
                suppress_health_check=list(HealthCheck),
            )
            @given(raw=raw_bodies(), mode=st.sampled_from(SIGNING))
            def check(raw: bytes, mode: str) -> None:
                report.tried += 1
                bug = known_bug(raw) if mode == "signed" else None
                if bug is not None:
                    report.skipped_known_bugs[bug] += 1
                    return
                if mode == "signed":
                    status = runner.run(_post(apps.signed, raw, signature_for(mode, raw)))
                    report.statuses[status] += 1
                    assert status in ALLOWED - {401}, (status, raw[:300])
                else:
                    report.unsigned += 1
                    status = runner.run(_post(apps.unsigned, raw, signature_for(mode, raw)))
                    report.statuses[status] += 1
                    assert status == 401, (status, mode, raw[:300])
                    assert runner.run(_queued(apps.unsigned)) == 0, "an unsigned body was queued"
                live = runner.run(apps.signed.get("/health/live"))
                assert live.status == 200

            check()
            report.queued_from_signed = runner.run(_queued(apps.signed))
            assert runner.run(_queue_depth(apps.unsigned_settings)) == 0
        finally:
            runner.run(apps.close())
    return report
