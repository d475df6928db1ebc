"""Gap recovery: the daemon records accepted events and replays its downtime once (v2)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from tests.conftest import BOT_A_USER_ID, BOT_B_USER_ID, CONSUMER_SECRET, USER_ID
from tests.management.conftest import ManagementEnv
from tests.support.deliveries import aaa_delivery, dm_event, signed
from tests.support.waiting import eventually
from twitter_bot.app import create_app
from twitter_bot.management.clients import api_for
from twitter_bot.management.daemon import GAP_RECOVERY
from twitter_bot.management.gap import (
    GapRecovery,
    GapState,
    ReplayWindow,
    load_state,
    replay_window,
    save_state,
)
from twitter_bot.settings import ApiSettings, GapRecoverySettings

MINUTE = 60.0
DAY = 86400.0


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%d%H%M")


def this_minute() -> float:
    """The current minute's start: a start time whose replay window ends now, not later."""
    return math.floor(time.time() / MINUTE) * MINUTE


def test_replay_window_covers_the_downtime_in_whole_minutes() -> None:
    base = 1_700_000_000.0 - 1_700_000_000.0 % MINUTE  # a minute boundary

    assert replay_window(base - 599, base, threshold=600, now=base) is None
    assert replay_window(base - 3600 - 17, base + 5, threshold=600, now=base + 5) == ReplayWindow(
        base - 3660, base + MINUTE
    )
    # X keeps 5 days: an older gap is clamped, and what is lost is said.
    window = replay_window(base - 7 * DAY, base, threshold=600, now=base)
    assert window == ReplayWindow(base - 5 * DAY, base, lost_before=base - 5 * DAY)


def test_state_file_round_trips_and_is_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "state" / "gap.json"
    state = GapState(alive_at=1_700_000_000.5, last_event_at={BOT_A_USER_ID: 1_699_999_000.25})

    save_state(path, state)
    save_state(path, state)

    assert load_state(path) == state
    assert [p.name for p in path.parent.iterdir()] == ["gap.json"]  # no temporary left
    assert load_state(tmp_path / "absent.json") is None
    path.write_text("{")
    with pytest.raises(ValueError):
        load_state(path)


def recovery(env: ManagementEnv, path: Path, clock: float, **kwargs: Any) -> GapRecovery:
    return GapRecovery(
        lambda: api_for(env.settings),
        env.webhook_url,
        path,
        threshold=600.0,
        clock=lambda: clock,
        **kwargs,
    )


@contextlib.asynccontextmanager
async def running(gap: GapRecovery) -> AsyncIterator[None]:
    async with contextlib.asynccontextmanager(gap.resource)(web.Application()):
        yield


@pytest.mark.parametrize("generation", ["v2", "xaa"], indirect=True)
async def test_after_downtime_one_replay_of_the_gap_is_requested_and_logged(
    env: ManagementEnv, tmp_path: Path
) -> None:
    assert (await env.run("setup")).code == 0
    path = tmp_path / "gap.json"
    start = this_minute()
    alive_at = start - 30 * MINUTE - 17
    save_state(path, GapState(alive_at, {BOT_A_USER_ID: start - 35 * MINUTE}))
    gap = recovery(env, path, start)

    with capture_logs() as logs:
        async with running(gap):
            await eventually(lambda: bool(env.fake.replays))
            gap.record(BOT_B_USER_ID, start + 1)

    [replay] = env.fake.replays
    assert (replay["webhook_id"], replay["from_date"], replay["to_date"]) == (
        env.webhook().id,
        stamp(start - 31 * MINUTE),
        stamp(start),
    )
    [requested] = [entry for entry in logs if entry["event"] == "gap.replay_requested"]
    assert requested["job_id"] == replay["job_id"]
    assert requested["downtime_seconds"] == 30 * 60 + 17
    assert set(requested["last_event_at"]) == {BOT_A_USER_ID}
    saved = load_state(path)
    assert saved == GapState(
        alive_at=start, last_event_at={BOT_A_USER_ID: start - 35 * MINUTE, BOT_B_USER_ID: start + 1}
    )

    # The next start, two minutes later, is not after a long downtime: no second replay.
    with capture_logs() as logs:
        async with running(recovery(env, path, start + 2 * MINUTE)):
            await eventually(lambda: any(entry["event"] == "gap.none" for entry in logs))
    assert len(env.fake.replays) == 1


@pytest.mark.parametrize("generation", ["v2"], indirect=True)
async def test_a_stop_before_the_replay_keeps_the_gap_for_the_next_start(
    env: ManagementEnv, tmp_path: Path
) -> None:
    path = tmp_path / "gap.json"
    alive_at = this_minute() - 60 * MINUTE
    save_state(path, GapState(alive_at, {}))
    waiting = asyncio.Event()

    async def wait_forever(seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()

    # Started mid-minute: the request waits for the minute to end, and the daemon stops.
    gap = recovery(env, path, this_minute() + 30, sleep=wait_forever)
    async with running(gap):
        await waiting.wait()
        gap.record(BOT_A_USER_ID, this_minute() + 31)

    assert env.fake.replays == []
    saved = load_state(path)
    assert saved is not None
    assert saved.alive_at == alive_at
    assert BOT_A_USER_ID in saved.last_event_at


@pytest.mark.parametrize("generation", ["v2"], indirect=True)
async def test_a_failed_replay_is_logged_with_the_command_to_run(
    env: ManagementEnv, tmp_path: Path
) -> None:
    path = tmp_path / "gap.json"
    start = this_minute()
    save_state(path, GapState(start - 20 * MINUTE, {}))

    with capture_logs() as logs:
        async with running(recovery(env, path, start)):  # no webhook registered
            await eventually(lambda: any(e["event"] == "gap.replay_failed" for e in logs))

    [failed] = [entry for entry in logs if entry["event"] == "gap.replay_failed"]
    assert failed["run"] == (
        f"twitter-bot webhooks replay --from {stamp(start - 20 * MINUTE)} --to {stamp(start)}"
    )
    assert env.fake.replays == []


@pytest.mark.parametrize("generation", ["v2"], indirect=True)
async def test_the_daemon_records_accepted_events_off_the_request_path(
    env: ManagementEnv, tmp_path: Path, aiohttp_client: Any
) -> None:
    path = tmp_path / "gap.json"
    settings = env.with_api(
        gap_recovery=GapRecoverySettings(enabled=True, threshold=600.0, state_file=str(path))
    )
    app = create_app(settings, role="webhook")
    assert isinstance(app[GAP_RECOVERY], GapRecovery)
    client = await aiohttp_client(app)
    await eventually(path.exists)  # first start: nothing to replay, state written
    first = load_state(path)
    assert first is not None and first.last_event_at == {}

    raw, headers = signed(
        aaa_delivery(BOT_A_USER_ID, dm_event("8101", USER_ID, BOT_A_USER_ID)), CONSUMER_SECRET
    )
    before = time.time()
    response = await client.post("/webhooks", data=raw, headers=headers)
    assert response.status == 200

    # The request wrote nothing: the state file changes on the task's next flush or at exit.
    assert load_state(path) == first
    await client.close()

    saved = load_state(path)
    assert saved is not None
    assert set(saved.last_event_at) == {BOT_A_USER_ID}
    assert before <= saved.last_event_at[BOT_A_USER_ID] <= time.time()
    assert saved.alive_at >= saved.last_event_at[BOT_A_USER_ID]


@pytest.mark.parametrize("generation", ["v2"], indirect=True)
async def test_gap_recovery_is_off_by_default_and_only_where_the_webhook_is_served(
    env: ManagementEnv, tmp_path: Path
) -> None:
    on = env.with_api(
        gap_recovery=GapRecoverySettings(enabled=True, state_file=str(tmp_path / "s.json"))
    )

    assert GAP_RECOVERY not in create_app(env.settings, role="all")
    assert GAP_RECOVERY in create_app(on, role="all")
    assert GAP_RECOVERY not in create_app(on, role="worker")
    assert ApiSettings().gap_recovery == GapRecoverySettings(enabled=False, threshold=600.0)
