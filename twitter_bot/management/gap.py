"""Gap recovery: after downtime, have X replay (v2) the events sent while the daemon was down.

The webhook handler tells ``record`` of every DM once it is queued: an in-memory update,
nothing more, so no request waits for a disk. A background task writes the state file
(atomically: a temporary file, fsync, rename) every ``FLUSH_INTERVAL`` seconds and once
more on shutdown. The file holds the last accepted event time per bot and ``alive_at``,
the last time the daemon was known to be up and accepting.

On start, when ``now - alive_at`` exceeds the threshold, the daemon requests ONE replay of
``[alive_at, start]`` (whole minutes; clamped to what X keeps) and logs the job id. X's
replay covers every account of the webhook, so the downtime, not each bot's quiet time,
decides the window. ``alive_at`` moves on only once that request was made (or failed and
was logged with the command to run by hand): a crash before it leaves the gap for the
next start. Overlap with events already accepted is dropped by the webhook's dedupe.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from twitter_bot.management.tasks import stop_task
from twitter_bot.x.errors import XError
from twitter_bot.x.management import MAX_REPLAY_AGE, WebhookApi, find_webhook, replay_time

log = structlog.get_logger(__name__)

FLUSH_INTERVAL = 15.0
STATE_VERSION = 1
_MINUTE = 60.0


@dataclass
class GapState:
    """What the state file holds: epoch seconds."""

    alive_at: float
    last_event_at: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "alive_at": _iso(self.alive_at),
            "last_event_at": {bot: _iso(at) for bot, at in sorted(self.last_event_at.items())},
        }

    @classmethod
    def from_json(cls, data: Any) -> GapState:
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError("not a version 1 state file")
        events = data.get("last_event_at") or {}
        if not isinstance(events, dict):
            raise ValueError("last_event_at is not an object")
        return cls(
            alive_at=_epoch(data.get("alive_at")),
            last_event_at={str(bot): _epoch(at) for bot, at in events.items()},
        )


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def _epoch(value: Any) -> float:
    if not isinstance(value, str):
        raise ValueError("a time must be an ISO 8601 string")
    moment = datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def load_state(path: Path) -> GapState | None:
    """The saved state; None when there is none. A damaged file raises ValueError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return GapState.from_json(json.loads(text))


def save_state(path: Path, state: GapState) -> None:
    """Write atomically: a reader (or a crash) sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(state.to_json(), file, indent=2)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@dataclass(frozen=True)
class ReplayWindow:
    """``[start, end)`` in epoch seconds on minute boundaries; ``lost_before`` when clamped."""

    start: float
    end: float
    lost_before: float | None = None


def replay_window(
    alive_at: float, started_at: float, threshold: float, now: float
) -> ReplayWindow | None:
    """The window to replay after downtime ``[alive_at, started_at]``, or None when short."""
    if started_at - alive_at <= threshold:
        return None
    start = math.floor(alive_at / _MINUTE) * _MINUTE
    end = math.ceil(started_at / _MINUTE) * _MINUTE
    earliest = math.ceil((now - MAX_REPLAY_AGE.total_seconds()) / _MINUTE) * _MINUTE
    if start < earliest:
        return ReplayWindow(earliest, end, lost_before=earliest)
    return ReplayWindow(start, end)


def _utc(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, UTC)


class GapRecovery:
    """Records accepted events and replays the downtime gap; one per application."""

    def __init__(
        self,
        make_api: Callable[[], WebhookApi],
        webhook_url: str,
        state_file: str | Path,
        threshold: float,
        *,
        flush_interval: float = FLUSH_INTERVAL,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._make_api = make_api
        self._url = webhook_url
        self._path = Path(state_file)
        self._threshold = threshold
        self._flush_interval = flush_interval
        self._clock = clock
        self._sleep = sleep
        self._last_event_at: dict[str, float] = {}
        self._previous: GapState | None = None
        self._settled = False

    def record(self, bot_user_id: str, accepted_at: float) -> None:
        """An event for ``bot_user_id`` was queued: remembered until the next flush."""
        if accepted_at > self._last_event_at.get(bot_user_id, 0.0):
            self._last_event_at[bot_user_id] = accepted_at

    async def resource(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: read the state, run the task, write the state a last time on the way out."""
        started_at = self._clock()
        self._previous = await asyncio.to_thread(self._load)
        if self._previous is not None:
            for bot, at in self._previous.last_event_at.items():
                self.record(bot, at)
        api = self._make_api()
        task = asyncio.create_task(self._run(api, started_at), name="gap-recovery")
        try:
            yield
        finally:
            await stop_task(task)
            api.close()
            await self._flush()

    def _load(self) -> GapState | None:
        try:
            return load_state(self._path)
        except (OSError, ValueError) as exc:
            log.error("gap.state_unreadable", path=str(self._path), error=str(exc))
            return None

    async def _run(self, api: WebhookApi, started_at: float) -> None:
        try:
            await self._recover(api, started_at)
        except Exception:  # never fatal: the daemon serves on without the replay
            log.exception("gap.recovery_failed")
        self._settled = True
        while True:
            await self._flush()
            await self._sleep(self._flush_interval)

    async def _recover(self, api: WebhookApi, started_at: float) -> None:
        previous = self._previous
        if previous is None:
            log.info("gap.no_state", path=str(self._path))
            return
        window = replay_window(previous.alive_at, started_at, self._threshold, self._clock())
        downtime = round(started_at - previous.alive_at)
        if window is None:
            log.info("gap.none", downtime_seconds=downtime)
            return
        if window.lost_before is not None:
            log.error(
                "gap.too_old",
                lost_before=_iso(window.lost_before),
                alive_at=_iso(previous.alive_at),
            )
        # X takes whole minutes and refuses a future to_date: wait for the end to pass.
        wait = window.end - self._clock()
        if wait > 0:
            await self._sleep(wait + 1.0)
        command = (
            f"twitter-bot webhooks replay --from {replay_time(_utc(window.start))} "
            f"--to {replay_time(_utc(window.end))}"
        )
        try:
            webhook = find_webhook(await asyncio.to_thread(api.list_webhooks), self._url)
            if webhook is None:
                log.error("gap.replay_failed", reason="webhook not registered", run=command)
                return
            job = await asyncio.to_thread(
                api.replay, webhook.id, _utc(window.start), _utc(window.end)
            )
        except XError as exc:
            log.error("gap.replay_failed", error=str(exc), run=command)
            return
        log.info(
            "gap.replay_requested",
            job_id=job.job_id,
            webhook_id=webhook.id,
            from_date=replay_time(_utc(window.start)),
            to_date=replay_time(_utc(window.end)),
            downtime_seconds=downtime,
            last_event_at={bot: _iso(at) for bot, at in previous.last_event_at.items()},
        )

    async def _flush(self) -> None:
        """Write the state; ``alive_at`` stays at the old value until the gap is settled."""
        previous = self._previous
        alive_at = self._clock() if self._settled or previous is None else previous.alive_at
        state = GapState(alive_at=alive_at, last_event_at=dict(self._last_event_at))
        try:
            await asyncio.to_thread(save_state, self._path, state)
        except OSError as exc:
            log.error("gap.state_not_written", path=str(self._path), error=str(exc))
