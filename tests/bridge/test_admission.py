"""The bridge yields the event loop to the webhook in `--role all` (bridge/admission.py)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest

from tests.fakes.fake_gateway import RecordedRequest
from tests.support.bridge_env import BridgeEnv, fast_messaging, start_bridge_env
from twitter_bot.app import METRICS
from twitter_bot.bridge.admission import LagAdaptiveLimit
from twitter_bot.loop_lag import LoopLagMonitor

TARGET = 0.002
LAGGING, PROMPT = 0.010, 0.0002


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def hold(limit: LagAdaptiveLimit, started: list[int], release: asyncio.Event, n: int) -> None:
    async with limit.slot():
        started.append(n)
        await release.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_limit_shrinks_while_the_loop_lags() -> None:
    limit = LagAdaptiveLimit(TARGET, initial=16)
    limit.ingested()

    seen = []
    for _ in range(3):
        limit.observe(LAGGING)
        seen.append(limit.limit)
    limit.observe(TARGET)  # at the target: hold

    assert seen == [10, 6, 4]
    assert limit.limit == 4


async def test_without_webhook_traffic_a_lagging_loop_does_not_narrow_it() -> None:
    clock = FakeClock()
    limit = LagAdaptiveLimit(TARGET, initial=16, quiet_after=1.0, clock=clock)
    limit.observe(LAGGING)  # nothing ingested yet: the bridge has the loop to itself
    assert limit.limit == 16

    limit.ingested()
    clock.now = 1.0
    limit.observe(LAGGING)
    assert limit.limit == 10
    clock.now = 2.5  # X has gone quiet: catch up at full speed
    limit.observe(LAGGING)
    assert limit.limit == 10


async def test_it_grows_back_only_while_every_slot_is_busy() -> None:
    limit = LagAdaptiveLimit(TARGET, initial=2)
    release = asyncio.Event()
    started: list[int] = []

    limit.observe(PROMPT)  # idle: no demand, no growth
    assert limit.limit == 2

    tasks = [asyncio.create_task(hold(limit, started, release, n)) for n in range(4)]
    await settle()
    assert started == [0, 1]
    limit.observe(PROMPT)  # saturated and prompt: one more slot, the next waiter gets it
    await settle()
    assert (limit.limit, started) == (3, [0, 1, 2])
    release.set()
    await asyncio.gather(*tasks)
    assert started == [0, 1, 2, 3] and limit.in_use == 0


async def test_waiters_are_admitted_in_arrival_order_as_slots_free() -> None:
    limit = LagAdaptiveLimit(TARGET, initial=1)
    order: list[int] = []

    async def one(n: int) -> None:
        async with limit.slot():
            order.append(n)
            await asyncio.sleep(0)

    await asyncio.gather(*(one(n) for n in range(6)))

    assert order == list(range(6))


async def test_at_zero_one_waiter_still_goes_through_per_starvation_guard() -> None:
    clock = FakeClock()
    limit = LagAdaptiveLimit(TARGET, initial=1, starvation_guard=0.1, clock=clock)
    limit.ingested()
    limit.observe(LAGGING)
    assert limit.limit == 0
    release = asyncio.Event()
    started: list[int] = []
    tasks = [asyncio.create_task(hold(limit, started, release, n)) for n in range(3)]

    clock.now = 0.05
    limit.observe(LAGGING)
    await settle()
    assert started == []  # lagging and not starved yet: nothing is admitted
    clock.now = 0.1
    limit.observe(LAGGING)
    await settle()
    assert started == [0]  # starved for the guard's time: one goes through anyway
    clock.now = 0.15
    limit.observe(LAGGING)
    await settle()
    assert started == [0]
    clock.now = 0.2
    limit.observe(LAGGING)
    await settle()
    assert started == [0, 1]

    release.set()
    await settle()
    clock.now = 0.25
    limit.observe(PROMPT)  # the loop is prompt again: the limit grows from zero
    await asyncio.gather(*tasks)
    assert started == [0, 1, 2] and limit.limit == 1 and limit.in_use == 0


async def test_a_cancelled_waiter_gives_up_its_place_and_a_granted_one_its_slot() -> None:
    limit = LagAdaptiveLimit(TARGET, initial=1)
    release = asyncio.Event()
    started: list[int] = []
    first = asyncio.create_task(hold(limit, started, release, 0))
    waiting = asyncio.create_task(hold(limit, started, release, 1))
    last = asyncio.create_task(hold(limit, started, release, 2))
    await settle()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    release.set()
    await asyncio.gather(first, last)
    assert started == [0, 2] and limit.in_use == 0

    # Granted the slot, but cancelled before it ran: the slot passes to the next waiter.
    release.clear()
    started.clear()
    holder = asyncio.create_task(hold(limit, started, release, 3))
    granted = asyncio.create_task(hold(limit, started, release, 4))
    after = asyncio.create_task(hold(limit, started, release, 5))
    await settle()
    release.set()
    await asyncio.sleep(0)  # the holder leaves and grants the slot to `granted`...
    granted.cancel()  # ...which is cancelled before it resumes
    await asyncio.gather(holder, after, granted, return_exceptions=True)
    assert started == [3, 5]
    assert limit.in_use == 0


async def test_the_monitor_sees_a_blocked_loop() -> None:
    samples: list[float] = []
    monitor = LoopLagMonitor(samples.append, interval=0.005)
    task = asyncio.create_task(monitor.run())
    try:
        await asyncio.sleep(0.03)
        time.sleep(0.05)  # what a burst of CPU-bound work does to every other task
        await asyncio.sleep(0.03)
    finally:
        task.cancel()
    assert max(samples) >= 0.04
    assert min(samples) < 0.01


class Bot:
    """A bot whose every answer first blocks the loop ``block`` s (CPU-heavy work in the
    same process), then waits ``wait`` s; it counts the answers in progress."""

    def __init__(self, block: float, wait: float) -> None:
        self.block, self.wait = block, wait
        self.running = self.peak = 0

    async def __call__(self, request: RecordedRequest) -> list[dict[str, Any]]:
        self.running += 1
        self.peak = max(self.peak, self.running)
        time.sleep(self.block)
        await asyncio.sleep(self.wait)
        self.running -= 1
        return [{"type": "text", "text": f"echo: {request.text}"}]


async def run_burst(env: BridgeEnv, bot: Bot, conversations: int) -> list[float]:
    """DMs from ``conversations`` users at once; the limit gauge as sampled meanwhile."""
    env.gateway.on_message("bot-a", bot)
    registry = env.client.app[METRICS].registry
    limits: list[float] = []

    async def watch() -> None:
        while True:
            limits.append(registry.get_sample_value("twitter_bot_bridge_concurrency_limit") or 0)
            await asyncio.sleep(0.002)

    users = [str(5000 + n) for n in range(conversations)]
    watcher = asyncio.create_task(watch())
    try:
        await asyncio.gather(*(env.send_dm(str(9000 + n), u) for n, u in enumerate(users)))
        dms = await env.x.wait_for_dms(conversations, timeout=20)
    finally:
        watcher.cancel()
    assert sorted(dm.recipient_id for dm in dms) == sorted(users)
    return limits


async def test_in_role_all_a_lagging_bridge_narrows_and_still_delivers_all(
    aiohttp_server: Any, aiohttp_client: Any, rabbit_vhost: str
) -> None:
    env = await start_bridge_env(aiohttp_server, aiohttp_client, rabbit_vhost)

    limits = await run_burst(env, Bot(block=0.02, wait=0.0), conversations=30)

    assert max(limits) >= 10  # it starts wide (16) ...
    assert min(limits) <= 1  # ... and yields the loop while the blocking calls lag it
    registry = env.client.app[METRICS].registry
    lag_count = registry.get_sample_value("twitter_bot_event_loop_lag_seconds_count")
    assert lag_count is not None and lag_count > 0


async def test_with_the_target_at_zero_the_bridge_is_not_limited(
    aiohttp_server: Any, aiohttp_client: Any, rabbit_vhost: str
) -> None:
    messaging = replace(fast_messaging(), loop_lag_target=0.0)
    env = await start_bridge_env(aiohttp_server, aiohttp_client, rabbit_vhost, messaging=messaging)
    bot = Bot(block=0.005, wait=1.0)

    limits = await run_burst(env, bot, conversations=20)

    assert set(limits) == {0.0}  # no limit was ever set
    assert bot.peak == 20  # all at once, however much the loop lagged


async def test_a_message_whose_bot_has_answered_goes_before_messages_not_begun() -> None:
    limit = LagAdaptiveLimit(TARGET, initial=1)
    order: list[str] = []
    release = asyncio.Event()

    async def step(name: str, resuming: bool = False) -> None:
        async with limit.slot(resuming=resuming):
            order.append(name)
            if name == "holder":
                await release.wait()

    holder = asyncio.create_task(step("holder"))
    await settle()
    waiting = [asyncio.create_task(step(f"new-{n}")) for n in range(3)]
    await settle()
    waiting += [asyncio.create_task(step(f"replies-{n}", resuming=True)) for n in range(2)]
    await settle()
    release.set()
    await asyncio.gather(holder, *waiting)

    assert order == ["holder", "replies-0", "replies-1", "new-0", "new-1", "new-2"]
