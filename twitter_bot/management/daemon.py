"""The daemon's side of webhook management: CRC watchdog and gap recovery, when configured.

Both run only on the roles that serve the webhook (``webhook`` and ``all``), each as its
own cleanup context holding one background task and one blocking X client used from
worker threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from twitter_bot.management.clients import api_for
from twitter_bot.management.gap import GapRecovery
from twitter_bot.management.watchdog import CrcWatchdog
from twitter_bot.metrics import Metrics
from twitter_bot.settings import Settings
from twitter_bot.x.management import WebhookApi

# Calls from the daemon are bounded tighter than the CLI's: a stuck call delays shutdown.
DAEMON_TIMEOUT = 15.0

CRC_WATCHDOG = web.AppKey("crc_watchdog", CrcWatchdog)
GAP_RECOVERY = web.AppKey("gap_recovery", GapRecovery)


@dataclass(frozen=True)
class WebhookUpkeep:
    """The background tasks a configuration asks for; either may be absent."""

    watchdog: CrcWatchdog | None = None
    gap_recovery: GapRecovery | None = None

    @classmethod
    def for_role(cls, settings: Settings, metrics: Metrics, role: str) -> WebhookUpkeep:
        api = settings.api
        if role == "worker" or api.webhook_url is None:
            return cls()

        def make_api() -> WebhookApi:
            return api_for(settings, timeout=DAEMON_TIMEOUT)

        watchdog = None
        if api.crc_watchdog_interval is not None:
            watchdog = CrcWatchdog(make_api, api.webhook_url, api.crc_watchdog_interval, metrics)
        gap = None
        if api.gap_recovery.enabled and api.gap_recovery.state_file is not None:
            gap = GapRecovery(
                make_api, api.webhook_url, api.gap_recovery.state_file, api.gap_recovery.threshold
            )
        return cls(watchdog, gap)

    def install(self, app: web.Application) -> None:
        """Add the cleanup contexts (after the broker's: they stop before it closes)."""
        if self.gap_recovery is not None:
            app[GAP_RECOVERY] = self.gap_recovery
            app.cleanup_ctx.append(self.gap_recovery.resource)
        if self.watchdog is not None:
            app[CRC_WATCHDOG] = self.watchdog
            app.cleanup_ctx.append(self.watchdog.resource)

    @property
    def on_accepted(self) -> Callable[[str, float], None] | None:
        """What the webhook handler tells of each queued DM."""
        return self.gap_recovery.record if self.gap_recovery is not None else None

    @property
    def health_details(self) -> Callable[[], dict[str, object]] | None:
        """The ``webhook`` entry of ``/health/ready``, when the watchdog runs."""
        return self.watchdog.details if self.watchdog is not None else None
