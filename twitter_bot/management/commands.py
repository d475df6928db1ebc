"""The ``twitter-bot webhooks`` commands: make X's registered state match the configuration.

Each command takes a ``Context`` and returns its exit code. What a command changes is
printed as it happens (lines starting ``changed:``), so a run stopped by an error still
tells what it did. X's errors propagate as ``ManagementError``; a command that cannot go
on raises ``Refused`` (exit 1) or ``UsageError`` (exit 2), each shown as one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

from twitter_bot.management.clients import bot_token
from twitter_bot.settings import BotSettings, Settings
from twitter_bot.x.management import MAX_REPLAY_AGE, Webhook, WebhookApi, find_webhook

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2

API = "chatbots.twitter-bot.api"
_REPLAY_DIGITS = re.compile(r"[0-9]{12}")


class UsageError(Exception):
    """The command cannot run as asked (a missing key, a wrong argument): exit 2."""


class Refused(Exception):
    """The command stopped because of X's state; nothing more was changed: exit 1."""


@dataclass
class Context:
    """What every command works with."""

    settings: Settings
    api: WebhookApi
    out: TextIO

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def webhook_url(self) -> str:
        url = self.settings.api.webhook_url
        if url is None:
            raise UsageError(f"{API}.webhook-url is not set: it is the URL X calls")
        return url

    def bots(self, user_id: str | None) -> tuple[BotSettings, ...]:
        """Every configured bot, or the one with ``user_id``."""
        if user_id is None:
            return self.settings.bots
        bot = self.settings.bot_by_user_id(user_id)
        if bot is None:
            raise UsageError(
                f"--bot {user_id}: no bot has this user-id in chatbots.twitter-bot.bots"
            )
        return (bot,)

    def webhook_id(self, explicit: str | None) -> str:
        """``explicit``, else the id of the webhook registered for ``api.webhook-url``."""
        if explicit is not None:
            return explicit
        url = self.webhook_url()
        webhook = find_webhook(self.api.list_webhooks(), url)
        if webhook is None:
            raise Refused(
                f"{url} is not registered: `twitter-bot webhooks setup` registers it "
                "(`twitter-bot webhooks list` shows what is)"
            )
        return webhook.id

    def label(self, user_id: str) -> str:
        bot = self.settings.bot_by_user_id(user_id)
        return f"{user_id} ({bot.bot_id})" if bot else f"{user_id} (not a configured bot)"


def _webhook_line(webhook: Webhook, configured_url: str | None) -> str:
    state = "valid" if webhook.valid else "INVALID (X's last CRC failed: no events)"
    mine = configured_url is not None and find_webhook([webhook], configured_url) is not None
    return f"webhook {webhook.id}: {webhook.url} {state}{' [configured]' if mine else ''}"


# --- setup and status ------------------------------------------------------------------


def setup(ctx: Context, replace: bool) -> int:
    """Register the webhook, have X run a CRC, subscribe every bot; change only what differs."""
    url = ctx.webhook_url()
    webhooks = ctx.api.list_webhooks()
    mine = find_webhook(webhooks, url)
    stale = [webhook for webhook in webhooks if webhook is not mine]
    if stale and not replace:
        if mine is None:
            raise Refused(
                f"webhook {stale[0].id} is registered for {stale[0].url}, not {url}: "
                "`twitter-bot webhooks setup --replace` deletes it and registers the new URL"
            )
        for webhook in stale:
            ctx.say(f"note: webhook {webhook.id} for {webhook.url} is not in the configuration")
    changes = 0
    for webhook in stale if replace else []:
        ctx.api.delete_webhook(webhook.id)
        ctx.say(f"changed: deleted webhook {webhook.id} for {webhook.url}")
        changes += 1
    if mine is None:
        mine = ctx.api.register_webhook(url)
        ctx.say(f"changed: registered webhook {mine.id} for {url} (X's CRC passed)")
        changes += 1
    else:
        changes += _crc(ctx, mine)
    changes += _subscribe(ctx, mine.id, ctx.settings.bots)
    ctx.say(f"setup: {changes} change(s)" if changes else "setup: nothing to change")
    return EXIT_OK


def _crc(ctx: Context, webhook: Webhook) -> int:
    """Have X check the webhook now; 1 when that made it valid again."""
    if not ctx.api.trigger_crc(webhook.id):
        raise Refused(
            f"webhook {webhook.id}: X's CRC failed, so it gets no events: is the daemon "
            f"running and reachable at {webhook.url}, with this app's consumer-secret?"
        )
    if webhook.valid:
        ctx.say(f"webhook {webhook.id} for {webhook.url}: registered, CRC passed")
        return 0
    ctx.say(f"changed: webhook {webhook.id} re-validated (X's CRC passed)")
    return 1


def _subscribe(ctx: Context, webhook_id: str, bots: tuple[BotSettings, ...]) -> int:
    subscribed = {s.user_id for s in ctx.api.list_subscriptions(webhook_id)}
    changes = 0
    for bot in bots:
        if bot.user_id in subscribed:
            ctx.say(f"account {ctx.label(bot.user_id)}: subscribed")
            continue
        ctx.api.subscribe(webhook_id, bot_token(bot))
        ctx.say(f"changed: account {ctx.label(bot.user_id)} subscribed")
        changes += 1
    return changes


def status(ctx: Context) -> int:
    """Webhooks, subscribed accounts and missing bots; 1 when anything is missing or invalid."""
    url = ctx.webhook_url()
    env = f", environment {ctx.api.env_name}" if ctx.api.generation == "v1.1" else ""
    ctx.say(f"api: {ctx.api.generation}{env}; webhook-url: {url}")
    webhooks = ctx.api.list_webhooks()
    mine = find_webhook(webhooks, url)
    if not webhooks:
        ctx.say("webhooks: none registered")
    for webhook in webhooks:
        ctx.say(_webhook_line(webhook, url))
    problems: list[str] = []
    if mine is None:
        problems.append(f"{url} is not registered")
    elif not mine.valid:
        problems.append(f"webhook {mine.id} is invalid")
    subscribed = [] if mine is None else ctx.api.list_subscriptions(mine.id)
    for subscription in subscribed:
        ctx.say(f"subscribed: {ctx.label(subscription.user_id)}")
    subscribed_ids = {s.user_id for s in subscribed}
    for bot in ctx.settings.bots:
        if bot.user_id not in subscribed_ids:
            ctx.say(f"missing: {ctx.label(bot.user_id)} is not subscribed")
            problems.append(f"{bot.user_id} not subscribed")
    if problems:
        ctx.say(f"status: {len(problems)} problem(s): {'; '.join(problems)}")
        ctx.say("run `twitter-bot webhooks setup` to fix them")
        return EXIT_PROBLEM
    ctx.say("status: OK")
    return EXIT_OK


# --- single steps ----------------------------------------------------------------------


def register(ctx: Context) -> int:
    """Register ``api.webhook-url`` (X runs a CRC against it first)."""
    webhook = ctx.api.register_webhook(ctx.webhook_url())
    ctx.say(f"changed: registered webhook {webhook.id} for {webhook.url} (X's CRC passed)")
    return EXIT_OK


def list_webhooks(ctx: Context) -> int:
    """Print the registered webhooks, marking the configured one."""
    webhooks = ctx.api.list_webhooks()
    if not webhooks:
        ctx.say("no webhooks registered")
    for webhook in webhooks:
        ctx.say(_webhook_line(webhook, ctx.settings.api.webhook_url))
    return EXIT_OK


def crc(ctx: Context, webhook_id: str | None) -> int:
    """Have X run a CRC now; a failed one stops with exit 1."""
    webhook_id = ctx.webhook_id(webhook_id)
    if not ctx.api.trigger_crc(webhook_id):
        raise Refused(
            f"webhook {webhook_id}: X's CRC failed, so it gets no events: is the daemon "
            "running and reachable at the webhook URL, with this app's consumer-secret?"
        )
    ctx.say(f"webhook {webhook_id}: CRC passed, valid")
    return EXIT_OK


def delete(ctx: Context, webhook_id: str | None) -> int:
    """Delete the configured webhook, or ``webhook_id``."""
    webhook_id = ctx.webhook_id(webhook_id)
    ctx.api.delete_webhook(webhook_id)
    ctx.say(f"changed: deleted webhook {webhook_id}")
    return EXIT_OK


def subscribe(ctx: Context, user_id: str | None) -> int:
    """Subscribe every bot (or one) not yet subscribed, each with its own token."""
    bots = ctx.bots(user_id)
    changes = _subscribe(ctx, ctx.webhook_id(None), bots)
    ctx.say(f"subscribe: {changes} account(s) subscribed")
    return EXIT_OK


def unsubscribe(ctx: Context, user_id: str | None) -> int:
    """Unsubscribe every bot (or one) that is subscribed."""
    bots = ctx.bots(user_id)
    webhook_id = ctx.webhook_id(None)
    current = {s.user_id: s for s in ctx.api.list_subscriptions(webhook_id)}
    changes = 0
    for bot in bots:
        subscription = current.get(bot.user_id)
        if subscription is None:
            ctx.say(f"account {ctx.label(bot.user_id)}: not subscribed")
            continue
        ctx.api.unsubscribe(webhook_id, subscription)
        ctx.say(f"changed: account {ctx.label(bot.user_id)} unsubscribed")
        changes += 1
    ctx.say(f"unsubscribe: {changes} account(s) unsubscribed")
    return EXIT_OK


def subscriptions(ctx: Context) -> int:
    """Print the accounts subscribed to the configured webhook."""
    found = ctx.api.list_subscriptions(ctx.webhook_id(None))
    if not found:
        ctx.say("no subscriptions")
    for subscription in found:
        ctx.say(f"subscribed: {ctx.label(subscription.user_id)}")
    return EXIT_OK


def lookup(ctx: Context, username: str) -> int:
    """Print the user id of ``username``, for ``bots[].user-id``."""
    user = ctx.api.lookup_user(username)
    ctx.say(f"@{user.username}: user-id {user.id} ({user.name})")
    return EXIT_OK


# --- replay ----------------------------------------------------------------------------


def parse_time(text: str, option: str, now: datetime) -> datetime:
    """``now``, ``yyyymmddhhmm`` or ISO 8601; UTC unless an offset is given; whole minutes."""
    value = text.strip()
    try:
        if value.lower() == "now":
            moment = now
        elif _REPLAY_DIGITS.fullmatch(value):
            moment = datetime.strptime(value, "%Y%m%d%H%M")
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option} {text!r}: write yyyymmddhhmm, ISO 8601 such as 2025-04-24T20:00Z "
            "(UTC unless an offset is given) or now"
        ) from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(second=0, microsecond=0)


def replay_window(start: datetime, end: datetime, now: datetime) -> None:
    """Refuse a window X would refuse: empty, in the future, or older than it keeps."""
    if start >= end:
        raise UsageError("--from must be before --to (whole minutes, UTC)")
    if end > now:
        raise UsageError("--to is in the future")
    if start < now - MAX_REPLAY_AGE:
        days = MAX_REPLAY_AGE // timedelta(days=1)
        raise UsageError(f"--from is more than {days} days ago: X replays at most {days} days")


def replay(ctx: Context, start_text: str, end_text: str, webhook_id: str | None) -> int:
    """Ask X to redeliver a window's events; the webhook's dedupe drops what already came."""
    if ctx.api.generation == "v1.1":
        raise UsageError(
            f"replay needs X's v2 webhooks: set {API}.account-activity to v2 or xaa "
            "(the v1.1 premium API has no replay)"
        )
    now = datetime.now(UTC)
    start = parse_time(start_text, "--from", now)
    end = parse_time(end_text, "--to", now)
    replay_window(start, end, now)
    webhook_id = ctx.webhook_id(webhook_id)
    job = ctx.api.replay(webhook_id, start, end)
    ctx.say(
        f"replay job {job.job_id}: X redelivers the events from {start:%Y-%m-%d %H:%M} to "
        f"{end:%Y-%m-%d %H:%M} UTC to webhook {webhook_id}; the webhook drops events it "
        "accepted within webhook.dedupe-ttl as duplicates"
    )
    return EXIT_OK
