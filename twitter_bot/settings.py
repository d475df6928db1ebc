"""Settings: the HOCON file parsed once into frozen dataclasses.

Every key of the reference deployment's file keeps its meaning; keys added by
twitter-bot are optional with documented defaults. A wrong value raises
``ConfigError`` naming the key, so the CLI can print one line and exit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DmApi = Literal["v1.1", "v2"]
AccountActivityApi = Literal["v1.1", "v2", "xaa"]


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Secret:
    """A secret string whose repr and str never show the value."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self.value)


@dataclass(frozen=True)
class HttpSettings:
    """`chatbots.twitter-bot.http`: where the daemon listens."""

    host: str = "0.0.0.0"
    port: int = 5756
    max_body_size: int = 1024 * 1024


@dataclass(frozen=True)
class AuthSettings:
    """`chatbots.twitter-bot.auth`: the X app's credentials."""

    consumer_key: str
    consumer_secret: Secret
    bearer_token: Secret | None = None
    default_access_token: Secret | None = None
    default_access_secret: Secret | None = None


@dataclass(frozen=True)
class ApiSettings:
    """`chatbots.twitter-bot.api`: X endpoints and API generations."""

    env_name: str = "DEFAULT"
    webhook_url: str | None = None
    # Normalised: scheme://host/ with any trailing version segment ("1.1/", "2/") removed.
    twitter_base_url: str = "https://api.twitter.com/"
    upload_url: str = "https://upload.twitter.com/1.1/"
    dm_api: DmApi = "v1.1"
    account_activity: AccountActivityApi = "v1.1"
    crc_watchdog_interval: float | None = None


@dataclass(frozen=True)
class BotSettings:
    """One entry of `chatbots.twitter-bot.bots`."""

    user_id: str
    bot_id: str
    access_token: Secret
    access_secret: Secret


@dataclass(frozen=True)
class WebhookSettings:
    """`chatbots.twitter-bot.webhook`: how deliveries are accepted."""

    path: str = "/webhooks"
    # How long an accepted event id is remembered to drop X's duplicate deliveries.
    dedupe_ttl: float = 3600.0
    dedupe_max_entries: int = 100_000


@dataclass(frozen=True)
class MessagingSettings:
    """`chatbots.twitter-bot.webhooks-messaging`: how queued DMs are bridged."""

    message_timeout: float = 15.0
    max_attempts: int = 10
    retry_initial_delay: float = 1.0
    retry_max_delay: float = 300.0
    # The longest a message is held unacked while its bot is rate limited;
    # beyond this it is parked in the delay queue instead.
    max_rate_limit_hold: float = 10.0
    mark_read: bool = True
    typing_indicator: bool = True
    prefetch: int = 32
    media_max_image_bytes: int = 5 * 1024 * 1024
    media_max_gif_bytes: int = 15 * 1024 * 1024
    media_max_video_bytes: int = 25 * 1024 * 1024


@dataclass(frozen=True)
class PushApiSettings:
    """`chatbots.twitter-bot.push-api`: the gateway's push endpoint, off without a token."""

    token: Secret | None = None


@dataclass(frozen=True)
class LoggingSettings:
    """`chatbots.twitter-bot.logging`."""

    level: str = "info"
    # auto: console when stderr is a terminal, else JSON lines.
    format: Literal["auto", "json", "console"] = "auto"


@dataclass(frozen=True)
class GatewaySettings:
    """`chatbots.gateway-api`: the bot platform."""

    url: str
    token: Secret | None = None


@dataclass(frozen=True)
class BrokerHost:
    host: str
    port: int = 5672


@dataclass(frozen=True)
class RabbitSettings:
    """`chatbots.messaging.rabbit`."""

    hosts: tuple[BrokerHost, ...]
    username: str = "guest"
    password: Secret = Secret("guest")
    virtual_host: str = "/"
    # All queue and exchange names start with this prefix.
    queue_prefix: str = "twitter-bot"
    # The webhook answers 503 when a publish is not confirmed within this bound
    # (X gives up on a delivery after about 3 s).
    publish_timeout: float = 2.0
    connect_timeout: float = 5.0
    heartbeat: int = 30


@dataclass(frozen=True)
class Settings:
    """The whole configuration."""

    auth: AuthSettings
    api: ApiSettings
    bots: tuple[BotSettings, ...]
    gateway: GatewaySettings
    rabbit: RabbitSettings
    http: HttpSettings = HttpSettings()
    webhook: WebhookSettings = WebhookSettings()
    messaging: MessagingSettings = MessagingSettings()
    push_api: PushApiSettings = PushApiSettings()
    logging: LoggingSettings = LoggingSettings()

    def bot_by_user_id(self, user_id: str) -> BotSettings | None:
        for bot in self.bots:
            if bot.user_id == user_id:
                return bot
        return None
