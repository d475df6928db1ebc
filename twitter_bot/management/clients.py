"""The X management client for a configuration: which API generation, base URL and credentials."""

from __future__ import annotations

from collections.abc import Callable

import requests

from twitter_bot.settings import BotSettings, Settings
from twitter_bot.x.management import (
    DEFAULT_TIMEOUT,
    AppCredentials,
    UserToken,
    WebhookApi,
    webhook_api,
)


def app_credentials(settings: Settings) -> AppCredentials:
    """The app's consumer key pair, bearer token and owner token, as far as configured."""
    auth = settings.auth
    owner = None
    if auth.default_access_token and auth.default_access_secret:
        owner = UserToken(auth.default_access_token.value, auth.default_access_secret.value)
    return AppCredentials(
        consumer_key=auth.consumer_key,
        consumer_secret=auth.consumer_secret.value,
        bearer_token=auth.bearer_token.value if auth.bearer_token else None,
        owner=owner,
    )


def bot_token(bot: BotSettings) -> UserToken:
    """The bot account's own token: subscriptions are made in its user context."""
    return UserToken(bot.access_token.value, bot.access_secret.value, bot.user_id)


def api_for(
    settings: Settings,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    redact: Callable[[str], str] = lambda text: text,
    session: requests.Session | None = None,
) -> WebhookApi:
    """The management client of ``api.account-activity``, rooted at ``api.twitter-url``."""
    api = settings.api
    return webhook_api(
        api.account_activity,
        api.twitter_base_url,
        app_credentials(settings),
        env_name=api.env_name,
        session=session,
        timeout=timeout,
        redact=redact,
    )


def redactor(secrets: list[str]) -> Callable[[str], str]:
    """A function masking every secret value in a text (error lines never show one)."""
    ordered = sorted({secret for secret in secrets if len(secret) >= 4}, key=len, reverse=True)

    def redact(text: str) -> str:
        for secret in ordered:
            text = text.replace(secret, "[redacted]")
        return text

    return redact
