"""The CRC watchdog: keep the daemon's webhook registered and valid while it runs.

Every ``api.crc-watchdog-interval`` it lists the webhooks; when the one for
``api.webhook-url`` is invalid (X's periodic CRC failed, so X sends nothing), it has X
run a CRC now, which the daemon itself answers. A missing webhook is logged, not
registered: registering is ``twitter-bot webhooks setup``'s job. The blocking client runs
in a worker thread; the state goes to ``/metrics`` and the ``/health/ready`` details.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from aiohttp import web

from twitter_bot.management.tasks import stop_task
from twitter_bot.metrics import Metrics
from twitter_bot.x.errors import XError
from twitter_bot.x.management import WebhookApi, find_webhook

log = structlog.get_logger(__name__)

# The first check waits this long (at most) so the listener is up when X's CRC arrives.
FIRST_CHECK_DELAY = 5.0


def _iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat()


@dataclass
class WebhookState:
    """What the watchdog last learnt; None before it knows."""

    webhook_id: str | None = None
    registered: bool | None = None
    valid: bool | None = None
    checked_at: float | None = None
    crc_at: float | None = None
    error: str | None = None

    def details(self) -> dict[str, object]:
        """The ``webhook`` entry of ``/health/ready``'s checks."""
        return {
            "watchdog": "on",
            "webhook_id": self.webhook_id,
            "registered": self.registered,
            "valid": self.valid,
            "last_check": _iso(self.checked_at),
            "last_crc": _iso(self.crc_at),
            "error": self.error,
        }


class CrcWatchdog:
    """A background task per application, started and stopped by its cleanup context."""

    def __init__(
        self,
        make_api: Callable[[], WebhookApi],
        webhook_url: str,
        interval: float,
        metrics: Metrics,
        *,
        first_delay: float | None = None,
    ) -> None:
        self._make_api = make_api
        self._url = webhook_url
        self._interval = interval
        self._first_delay = min(interval, FIRST_CHECK_DELAY) if first_delay is None else first_delay
        self._metrics = metrics
        self.state = WebhookState()

    def details(self) -> dict[str, object]:
        return self.state.details()

    async def resource(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: the client and the task live as long as the application."""
        api = self._make_api()
        task = asyncio.create_task(self._loop(api), name="crc-watchdog")
        try:
            yield
        finally:
            await stop_task(task)
            # A call still running in its worker thread ends at the client's timeout.
            api.close()

    async def _loop(self, api: WebhookApi) -> None:
        await asyncio.sleep(self._first_delay)
        while True:
            try:
                await self.check(api)
            except Exception:  # one failed check must not end the watchdog
                log.exception("webhook.watchdog_failed")
            await asyncio.sleep(self._interval)

    async def check(self, api: WebhookApi) -> None:
        """One round: list, and have X run a CRC when the webhook is invalid."""
        try:
            webhook = find_webhook(await asyncio.to_thread(api.list_webhooks), self._url)
        except XError as exc:
            self.state.error = str(exc)
            log.warning("webhook.watchdog_check_failed", error=str(exc))
            return
        state = self.state
        state.checked_at = time.time()
        state.error = None
        self._metrics.webhook_last_check.set(state.checked_at)
        if webhook is None:
            state.webhook_id, state.registered, state.valid = None, False, False
            log.error(
                "webhook.not_registered",
                url=self._url,
                hint="run `twitter-bot webhooks setup`",
            )
        else:
            state.webhook_id, state.registered, state.valid = webhook.id, True, webhook.valid
            if not webhook.valid:
                await self._revalidate(api, webhook.id)
        self._metrics.webhook_valid.set(1 if state.valid else 0)

    async def _revalidate(self, api: WebhookApi, webhook_id: str) -> None:
        log.warning("webhook.invalid", webhook_id=webhook_id, action="triggering a CRC")
        self.state.crc_at = time.time()
        self._metrics.webhook_last_crc.set(self.state.crc_at)
        try:
            valid = await asyncio.to_thread(api.trigger_crc, webhook_id)
        except XError as exc:
            self.state.error = str(exc)
            self._metrics.webhook_crc_triggers.labels("error").inc()
            log.error("webhook.crc_failed", webhook_id=webhook_id, error=str(exc))
            return
        self.state.valid = valid
        self._metrics.webhook_crc_triggers.labels("valid" if valid else "invalid").inc()
        if valid:
            log.info("webhook.revalidated", webhook_id=webhook_id)
        else:
            log.error("webhook.crc_failed", webhook_id=webhook_id, error="X reports invalid")
