"""Settings: the HOCON file parsed once into frozen dataclasses.

Every key of the reference deployment's file keeps its meaning; keys added by
twitter-bot are optional with documented defaults. A wrong value raises
``ConfigError`` naming the key, so the CLI can print one line and exit.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Literal, TypeGuard, TypeVar
from urllib.parse import urlsplit

from pyhocon import ConfigFactory, ConfigParser, ConfigTree
from pyhocon.exceptions import ConfigException, ConfigSubstitutionException
from pyparsing import ParseBaseException

_T = TypeVar("_T")

DmApi = Literal["v1.1", "v2"]
AccountActivityApi = Literal["v1.1", "v2", "xaa"]
QueueType = Literal["classic", "quorum"]


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message names the key.

    One load reports every problem it finds: the first is ``key``/``problem``,
    the rest are in ``others`` and on the following lines of the message.
    """

    def __init__(self, key: str, problem: str, others: Sequence[ConfigError] = ()) -> None:
        self.key = key
        self.problem = problem
        self.others = tuple(others)
        lines = [f"{key}: {problem}", *(f"{o.key}: {o.problem}" for o in self.others)]
        super().__init__("\n".join(lines))

    @property
    def errors(self) -> tuple[ConfigError, ...]:
        """This problem followed by the others found in the same load."""
        return (self, *self.others)


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
    # On shutdown: seconds between readiness turning 503 and closing the listener,
    # then the bound on waiting for in-flight requests.
    shutdown_grace: float = 5.0
    shutdown_timeout: float = 10.0


@dataclass(frozen=True)
class AuthSettings:
    """`chatbots.twitter-bot.auth`: the X app's credentials."""

    consumer_key: str
    consumer_secret: Secret
    bearer_token: Secret | None = None
    default_access_token: Secret | None = None
    default_access_secret: Secret | None = None


@dataclass(frozen=True)
class GapRecoverySettings:
    """`chatbots.twitter-bot.api.gap-recovery`: replay what X sent while the daemon was down."""

    enabled: bool = False
    # Downtime longer than this is replayed on start.
    threshold: float = 600.0
    # Where the last accepted event per bot and the daemon's last sign of life are kept.
    state_file: str | None = None


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
    gap_recovery: GapRecoverySettings = GapRecoverySettings()


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
    # beyond this its conversation is parked (queued again at the head of its shard).
    max_rate_limit_hold: float = 10.0
    mark_read: bool = True
    typing_indicator: bool = True
    prefetch: int = 32
    # In `--role all`: the event-loop lag above which the bridge takes on fewer
    # messages at once, so the webhook sharing the loop answers X promptly (0: off).
    loop_lag_target: float = 0.002
    # After a crash, how long a reply that may already have gone out waits for X's echo
    # of it before it is sent (again). 0: never wait, and the webhook drops the echoes.
    # Chaos, SIGKILL x12: duplicated replies 0, 0, 0 with it, 2, 5, 7 without
    # (docs/performance.md, "Echo check on by default").
    resend_echo_wait: float = 2.0
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
    """One entry of `chatbots.messaging.rabbit.hosts`."""

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
    # Incoming messages are spread over this many queues by conversation; each
    # queue has one active consumer, which keeps a conversation in order.
    shards: int = 8
    # classic, or quorum (replicated; recommended on a cluster).
    queue_type: QueueType = "classic"
    # Quorum queues only: deliveries of one message (crash loops) before it is
    # dead-lettered.
    delivery_limit: int = 20
    # How often a worker checks which shards it is the active consumer of.
    shard_probe_interval: float = 5.0
    # Envelopes published at the same moment to one shard go out as one broker
    # message (classic queues only): two to three times the deliveries per second
    # (docs/performance.md, section 1). Off: one broker message per DM.
    pack_publishes: bool = True


@dataclass(frozen=True)
class SqliteSettings:
    """`chatbots.messaging.sqlite`: the embedded queue used when no RabbitMQ host is set."""

    path: str = "data/twitter-bot-queue.sqlite3"


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
    sqlite: SqliteSettings = SqliteSettings()

    @property
    def uses_rabbitmq(self) -> bool:
        """RabbitMQ when hosts are configured, else the embedded SQLite queue."""
        return bool(self.rabbit.hosts)

    def bot_by_user_id(self, user_id: str) -> BotSettings | None:
        """The bot acting as the X account ``user_id``, if configured."""
        for bot in self.bots:
            if bot.user_id == user_id:
                return bot
        return None


# --- Loading -----------------------------------------------------------------
#
# pyhocon parses and resolves substitutions; everything below turns its tree
# (str, int, float, bool, None, list, ConfigTree, timedelta) into the schema
# above, naming the full key of every wrong value and never echoing a value.

_TWITTER_BOT = "chatbots.twitter-bot"
_RABBIT = "chatbots.messaging.rabbit"
_SQLITE = "chatbots.messaging.sqlite"
_GATEWAY = "chatbots.gateway-api"

# The keys each section accepts; anything else under chatbots.twitter-bot or
# chatbots.messaging.rabbit is refused as a probable typo. chatbots.gateway-api
# is shared with other components of the reference deployment, so it is not checked.
KNOWN_KEYS: Mapping[str, tuple[str, ...]] = {
    _TWITTER_BOT: (
        "auth",
        "api",
        "bots",
        "webhooks-messaging",
        "http",
        "webhook",
        "push-api",
        "logging",
    ),
    f"{_TWITTER_BOT}.auth": (
        "consumer-key",
        "consumer-secret",
        "bearer-token",
        "default-access-token",
        "default-access-secret",
    ),
    f"{_TWITTER_BOT}.api": (
        "env-name",
        "webhook-url",
        "twitter-url",
        "upload-url",
        "dm-api",
        "account-activity",
        "crc-watchdog-interval",
        "gap-recovery",
    ),
    f"{_TWITTER_BOT}.api.gap-recovery": ("enabled", "threshold", "state-file"),
    f"{_TWITTER_BOT}.bots[]": ("access-token", "access-secret", "user-id", "bot-id"),
    f"{_TWITTER_BOT}.webhooks-messaging": (
        "message-timeout",
        "max-attempts",
        "retry-initial-delay",
        "retry-max-delay",
        "max-rate-limit-hold",
        "mark-read",
        "typing-indicator",
        "prefetch",
        "loop-lag-target",
        "resend-echo-wait",
        "media-max-image-bytes",
        "media-max-gif-bytes",
        "media-max-video-bytes",
    ),
    f"{_TWITTER_BOT}.http": ("host", "port", "max-body-size", "shutdown-grace", "shutdown-timeout"),
    f"{_TWITTER_BOT}.webhook": ("path", "dedupe-ttl", "dedupe-max-entries"),
    f"{_TWITTER_BOT}.push-api": ("token",),
    f"{_TWITTER_BOT}.logging": ("level", "format"),
    _GATEWAY: ("url", "token"),
    _RABBIT: (
        "hosts",
        "username",
        "password",
        "virtual-host",
        "queue-prefix",
        "publish-timeout",
        "connect-timeout",
        "heartbeat",
        "shards",
        "queue-type",
        "delivery-limit",
        "shard-probe-interval",
        "pack-publishes",
    ),
    _SQLITE: ("path",),
}
"""Every key the loader reads, by section; ``bots[]`` stands for each bot."""

# The reference file's unfilled placeholders: refused wherever they appear.
_PLACEHOLDERS = frozenset({"HOST:PORT", "USER", "PASSWORD", "http://host:port"})
_DEFAULT_AMQP_PORT = 5672
_MAX_USER_ID = 2**64 - 1

_DIGITS = re.compile(r"[0-9]+")
_SIGNED_DIGITS = re.compile(r"[+-]?[0-9]+")
_AMOUNT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")
_VERSION_SEGMENT = re.compile(r"v?[0-9]+(?:\.[0-9]+)?")
_HOST_PORT = re.compile(
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:/\[\]]+))(?::(?P<port>.*))?"
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARSER_LOCATION = re.compile(r"\(line:\s*\d+,\s*col:\s*\d+\)")


def _unit_table(*groups: tuple[float, str]) -> dict[str, float]:
    return {name: factor for factor, names in groups for name in names.split()}


# HOCON's duration units; a bare number is seconds.
_DURATION_UNITS = _unit_table(
    (1e-9, "ns nano nanos nanosecond nanoseconds"),
    (1e-6, "us micro micros microsecond microseconds"),
    (1e-3, "ms milli millis millisecond milliseconds"),
    (1.0, "s second seconds"),
    (60.0, "m minute minutes"),
    (3600.0, "h hour hours"),
    (86400.0, "d day days"),
    (604800.0, "w week weeks"),
) | {"": 1.0}
# HOCON's size units: single letters and *i/*iB are powers of 1024, kB/MB/GB of 1000.
_SIZE_UNITS = _unit_table(
    (1, "B b byte bytes"),
    (1024, "K k Ki KiB kibibyte kibibytes"),
    (1000, "kB kilobyte kilobytes"),
    (1024**2, "M m Mi MiB mebibyte mebibytes"),
    (1000**2, "MB megabyte megabytes"),
    (1024**3, "G g Gi GiB gibibyte gibibytes"),
    (1000**3, "GB gigabyte gigabytes"),
) | {"": 1}
# dateutil's relativedelta, which pyhocon returns instead of timedelta when installed.
_RELATIVEDELTA_SECONDS = {
    "days": 86400.0,
    "hours": 3600.0,
    "minutes": 60.0,
    "seconds": 1.0,
    "microseconds": 1e-6,
}

_DM_APIS: dict[str, DmApi] = {"v1.1": "v1.1", "v2": "v2"}
_ACCOUNT_ACTIVITY_APIS: dict[str, AccountActivityApi] = {"v1.1": "v1.1", "v2": "v2", "xaa": "xaa"}
_LOG_LEVELS = {name: name for name in ("debug", "info", "warning", "error", "critical")} | {
    "warn": "warning"
}
_QUEUE_TYPES: dict[str, QueueType] = {"classic": "classic", "quorum": "quorum"}
_LOG_FORMATS: dict[str, Literal["auto", "json", "console"]] = {
    "auto": "auto",
    "json": "json",
    "console": "console",
}

_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "a number"),
    (float, "a fractional number"),
    (str, "a string"),
    (list, "a list"),
    (dict, "an object"),
    (timedelta, "a duration"),
)


class _Invalid(Exception):
    """A value is wrong; the reader that caught it adds the key."""


def _type_name(value: object) -> str:
    return next(
        (name for kind, name in _TYPE_NAMES if isinstance(value, kind)), type(value).__name__
    )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# --- Converters: one HOCON value -> one typed value, or _Invalid ---------------


def _text(value: object) -> str:
    """A string; a whole number is taken as its decimal text (unquoted HOCON ids)."""
    if _is_int(value):
        return str(value)
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, not {_type_name(value)}")
    if value in _PLACEHOLDERS:
        raise _Invalid("is the reference file's placeholder: it was not filled in")
    return value


def _nonempty(value: object) -> str:
    text = _text(value)
    if not text.strip():
        raise _Invalid("must not be empty")
    return text


def _secret(value: object) -> Secret:
    return Secret(_nonempty(value))


def _optional_secret(value: object) -> Secret | None:
    """A secret that may be left empty (an unset variable in a container), meaning none."""
    text = _text(value)
    return Secret(text) if text.strip() else None


def _whole_number(value: object) -> int:
    if _is_int(value):
        return value
    if isinstance(value, str) and _SIGNED_DIGITS.fullmatch(value.strip()):
        return int(value)
    raise _Invalid(f"must be a whole number, not {_type_name(value)}")


def _integer(low: int, high: int | None = None) -> Callable[[object], int]:
    def convert(value: object) -> int:
        number = _whole_number(value)
        if number < low or (high is not None and number > high):
            raise _Invalid(
                f"must be at least {low}" if high is None else f"must be from {low} to {high}"
            )
        return number

    return convert


_port = _integer(1, 65535)


def _boolean(value: object) -> bool:
    words = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in words:
        return words[value.strip().lower()]
    raise _Invalid("must be true or false")


def _choice(options: Mapping[str, _T]) -> Callable[[object], _T]:
    def convert(value: object) -> _T:
        text = _text(value).strip().lower()
        if text not in options:
            raise _Invalid(f"must be one of {', '.join(options)}")
        return options[text]

    return convert


def _amount(text: str, units: Mapping[str, float], example: str) -> float:
    match = _AMOUNT.fullmatch(text)
    if match is None or match[2] not in units:
        raise _Invalid(f"must be an amount such as {example}")
    return float(match[1]) * units[match[2]]


def _relativedelta_seconds(value: object) -> float:
    if not all(hasattr(value, name) for name in ("years", "months", *_RELATIVEDELTA_SECONDS)):
        raise _Invalid(f"must be a duration such as 15s, not {_type_name(value)}")
    if any(getattr(value, name) for name in ("years", "months")):
        raise _Invalid("must be a fixed duration, not months or years")
    return sum(float(getattr(value, name)) * f for name, f in _RELATIVEDELTA_SECONDS.items())


def _seconds(value: object) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return _amount(value, _DURATION_UNITS, "15s, 250ms, 2m or 1h")
    if isinstance(value, bool | list | dict):
        raise _Invalid(f"must be a duration such as 15s, not {_type_name(value)}")
    return _relativedelta_seconds(value)


def _duration(*, allow_zero: bool = False) -> Callable[[object], float]:
    """Seconds from a HOCON duration (15s), a number of seconds, or a string ("250ms")."""

    def convert(value: object) -> float:
        seconds = _seconds(value)
        if seconds < 0 or (seconds == 0 and not allow_zero):
            raise _Invalid("must not be negative" if allow_zero else "must be positive")
        return seconds

    return convert


def _byte_count(value: object) -> int:
    """Bytes from a number or a HOCON size ("1 MiB", "512KiB", "10 MB", "100k")."""
    if isinstance(value, str):
        number = int(_amount(value, _SIZE_UNITS, '"1 MiB", "512KiB" or "10 MB"'))
    elif _is_int(value):
        number = value
    elif isinstance(value, timedelta) or hasattr(value, "months"):
        raise _Invalid('was read as a duration (HOCON takes 5m for 5 minutes): write "5 MiB"')
    else:
        raise _Invalid(f'must be a size such as "1 MiB", not {_type_name(value)}')
    if number <= 0:
        raise _Invalid("must be positive")
    return number


def _heartbeat(value: object) -> int:
    seconds = round(_duration(allow_zero=True)(value))
    if seconds > 65535:
        raise _Invalid("must be at most 65535 seconds")
    return seconds


def _user_id(value: object) -> str:
    """An X user id as its exact decimal text: a float would have lost digits."""
    if isinstance(value, float):
        raise _Invalid("must be a whole number written without a fraction or exponent")
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    elif _is_int(value):
        number = value
    else:
        raise _Invalid(f"must be a positive whole number, not {_type_name(value)}")
    if not 0 < number <= _MAX_USER_ID:
        raise _Invalid("must be a positive whole number of at most 64 bits")
    return str(number)


def _url(value: object) -> str:
    """An http(s) URL with a host, kept as written."""
    text = _nonempty(value)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise _Invalid("must be an http:// or https:// URL with a valid host and port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise _Invalid("must be an http:// or https:// URL with a host")
    if any(char.isspace() for char in text):
        raise _Invalid("must not contain spaces")
    return text


def _optional_url(value: object) -> str | None:
    return _url(value) if _text(value).strip() else None


def _upload_url(value: object) -> str:
    text = _url(value)
    return text if text.endswith("/") else f"{text}/"


def _api_base(value: object) -> str:
    """scheme://host[:port]/[prefix/] with a trailing version segment ("1.1", "2") removed."""
    parts = urlsplit(_url(value))
    if parts.query or parts.fragment:
        raise _Invalid("must not have a query or fragment")
    segments = [segment for segment in parts.path.split("/") if segment]
    if segments and _VERSION_SEGMENT.fullmatch(segments[-1]):
        segments.pop()
    return f"{parts.scheme}://{parts.netloc}/" + "".join(f"{s}/" for s in segments)


def _url_path(value: object) -> str:
    text = _nonempty(value)
    if not text.startswith("/") or any(c.isspace() or c in "?#" for c in text):
        raise _Invalid("must be a URL path starting with /")
    return text


def _queue_prefix(value: object) -> str:
    text = _nonempty(value)
    if text.startswith("amq.") or len(text) > 200 or any(c.isspace() for c in text):
        raise _Invalid("must be at most 200 characters, without spaces, not starting with amq.")
    return text


def _broker_host(value: object) -> BrokerHost:
    if not isinstance(value, str):
        raise _Invalid(f"must be a HOST:PORT string, not {_type_name(value)}")
    match = _HOST_PORT.fullmatch(_nonempty(value).strip())
    if match is None:
        raise _Invalid("must be HOST:PORT or HOST")
    host = match["ipv6"] or match["host"]
    if match["port"] is None:
        return BrokerHost(host, _DEFAULT_AMQP_PORT)
    try:
        return BrokerHost(host, _port(match["port"]))
    except _Invalid:
        raise _Invalid("must be HOST:PORT with a port from 1 to 65535") from None


# --- Reading sections ----------------------------------------------------------


class _Node:
    """One HOCON object and its dotted path: typed reads whose errors name the full key."""

    def __init__(self, tree: Mapping[str, object], path: str) -> None:
        self.tree = tree
        self.path = path

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def convert(self, name: str, value: object, convert: Callable[[object], _T]) -> _T:
        try:
            return convert(value)
        except _Invalid as exc:
            raise ConfigError(self.key(name), str(exc)) from None

    def get(self, name: str, convert: Callable[[object], _T], default: _T) -> _T:
        value = self.tree.get(name)
        return default if value is None else self.convert(name, value, convert)

    def require(self, name: str, convert: Callable[[object], _T]) -> _T:
        value = self.tree.get(name)
        if value is None:
            raise ConfigError(self.key(name), "is required")
        return self.convert(name, value, convert)

    def child(self, name: str) -> _Node:
        value = self.tree.get(name)
        if value is None:
            return _Node({}, self.key(name))
        if not isinstance(value, Mapping):
            raise ConfigError(self.key(name), f"must be an object, not {_type_name(value)}")
        return _Node(value, self.key(name))

    def reject_unknown(self, known: Collection[str]) -> None:
        for name in self.tree:
            if name not in known:
                close = difflib.get_close_matches(name, list(known), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ConfigError(self.key(name), f"unknown key{hint}")


class _Errors:
    """Collects the errors of independent sections, so one load reports them all."""

    def __init__(self) -> None:
        self.found: list[ConfigError] = []

    def run(self, read: Callable[[], _T]) -> _T | None:
        try:
            return read()
        except ConfigError as exc:
            self.found.extend(exc.errors)
            return None

    def raise_if_any(self) -> None:
        if self.found:
            first, *rest = self.found
            raise ConfigError(first.key, first.problem, rest)


def _present(value: _T | None) -> _T:
    if value is None:
        raise AssertionError("a section failed without reporting an error")
    return value


def _read_auth(twitter: _Node) -> AuthSettings:
    node = twitter.child("auth")
    node.reject_unknown(KNOWN_KEYS[node.path])
    consumer_key = node.require("consumer-key", _nonempty)
    consumer_secret = node.require("consumer-secret", _secret)
    access_token = node.get("default-access-token", _optional_secret, None)
    access_secret = node.get("default-access-secret", _optional_secret, None)
    if (access_token is None) != (access_secret is None):
        missing = "default-access-token" if access_token is None else "default-access-secret"
        raise ConfigError(node.key(missing), "is required with its pair: set both or neither")
    return AuthSettings(
        consumer_key=consumer_key,
        consumer_secret=consumer_secret,
        bearer_token=node.get("bearer-token", _optional_secret, None),
        default_access_token=access_token,
        default_access_secret=access_secret,
    )


def _read_api(twitter: _Node) -> ApiSettings:
    node = twitter.child("api")
    node.reject_unknown(KNOWN_KEYS[node.path])
    default = ApiSettings()
    return ApiSettings(
        env_name=node.get("env-name", _nonempty, default.env_name),
        webhook_url=node.get("webhook-url", _optional_url, None),
        twitter_base_url=node.get("twitter-url", _api_base, default.twitter_base_url),
        upload_url=node.get("upload-url", _upload_url, default.upload_url),
        dm_api=node.get("dm-api", _choice(_DM_APIS), default.dm_api),
        account_activity=node.get(
            "account-activity", _choice(_ACCOUNT_ACTIVITY_APIS), default.account_activity
        ),
        crc_watchdog_interval=node.get("crc-watchdog-interval", _duration(), None),
        gap_recovery=_read_gap_recovery(node),
    )


def _optional_text(value: object) -> str | None:
    text = _text(value).strip()
    return text or None


def _read_gap_recovery(api: _Node) -> GapRecoverySettings:
    node = api.child("gap-recovery")
    node.reject_unknown(KNOWN_KEYS[node.path])
    default = GapRecoverySettings()
    settings = GapRecoverySettings(
        enabled=node.get("enabled", _boolean, default.enabled),
        threshold=node.get("threshold", _duration(), default.threshold),
        state_file=node.get("state-file", _optional_text, None),
    )
    if settings.enabled and settings.state_file is None:
        raise ConfigError(node.key("state-file"), "is required when gap recovery is enabled")
    return settings


def _management_needs(auth: AuthSettings, api: ApiSettings) -> None:
    """The daemon's own calls to X (CRC watchdog, gap replay) need these keys: checked at load."""
    found: dict[str, str] = {}
    watchdog = api.crc_watchdog_interval is not None
    gap = api.gap_recovery.enabled
    feature = "api.crc-watchdog-interval" if watchdog else "api.gap-recovery.enabled"
    if (watchdog or gap) and api.webhook_url is None:
        found[f"{_TWITTER_BOT}.api.webhook-url"] = f"is required with {feature}"
    if (watchdog or gap) and auth.bearer_token is None:
        found[f"{_TWITTER_BOT}.auth.bearer-token"] = f"is required with {feature}"
    if watchdog and api.account_activity == "v1.1" and auth.default_access_token is None:
        found[f"{_TWITTER_BOT}.auth.default-access-token"] = (
            "is required with api.crc-watchdog-interval on account-activity v1.1 "
            "(X's v1.1 CRC trigger is signed with the app owner's token)"
        )
    if gap and api.account_activity == "v1.1":
        found[f"{_TWITTER_BOT}.api.gap-recovery.enabled"] = (
            "needs account-activity v2 or xaa: X replays events only to v2 webhooks"
        )
    if found:
        first, *rest = (ConfigError(key, problem) for key, problem in found.items())
        raise ConfigError(first.key, first.problem, rest)


def _read_bot(list_key: str, index: int, item: object) -> BotSettings:
    path = f"{list_key}[{index}]"
    if not isinstance(item, Mapping):
        raise ConfigError(path, f"must be an object, not {_type_name(item)}")
    node = _Node(item, path)
    node.reject_unknown(KNOWN_KEYS[f"{list_key}[]"])
    return BotSettings(
        access_token=node.require("access-token", _secret),
        access_secret=node.require("access-secret", _secret),
        user_id=node.require("user-id", _user_id),
        bot_id=node.require("bot-id", _nonempty),
    )


def _bot_items(twitter: _Node) -> list[object]:
    key = twitter.key("bots")
    items = twitter.tree.get("bots")
    if items is None:
        raise ConfigError(key, "is required: a list with one object per bot")
    if not isinstance(items, list):
        raise ConfigError(key, f"must be a list of objects, not {_type_name(items)}")
    if not items:
        raise ConfigError(key, "must configure at least one bot")
    return items


def _read_bots(twitter: _Node) -> tuple[BotSettings, ...]:
    """Every bot; several may share a bot-id (one project, several accounts), not a user-id."""
    key = twitter.key("bots")
    errors = _Errors()
    bots: list[BotSettings] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(_bot_items(twitter)):
        bot = errors.run(partial(_read_bot, key, index, item))
        if bot is None:
            continue
        first = first_index.setdefault(bot.user_id, index)
        if first != index:
            problem = f"repeats bots[{first}].user-id: an X account can belong to one bot only"
            errors.found.append(ConfigError(f"{key}[{index}].user-id", problem))
        bots.append(bot)
    errors.raise_if_any()
    return tuple(bots)


def _read_messaging(twitter: _Node) -> MessagingSettings:
    node = twitter.child("webhooks-messaging")
    node.reject_unknown(KNOWN_KEYS[node.path])
    default = MessagingSettings()
    settings = MessagingSettings(
        message_timeout=node.get("message-timeout", _duration(), default.message_timeout),
        max_attempts=node.get("max-attempts", _integer(1), default.max_attempts),
        retry_initial_delay=node.get(
            "retry-initial-delay", _duration(), default.retry_initial_delay
        ),
        retry_max_delay=node.get("retry-max-delay", _duration(), default.retry_max_delay),
        max_rate_limit_hold=node.get(
            "max-rate-limit-hold", _duration(allow_zero=True), default.max_rate_limit_hold
        ),
        mark_read=node.get("mark-read", _boolean, default.mark_read),
        typing_indicator=node.get("typing-indicator", _boolean, default.typing_indicator),
        prefetch=node.get("prefetch", _integer(1, 65535), default.prefetch),
        loop_lag_target=node.get(
            "loop-lag-target", _duration(allow_zero=True), default.loop_lag_target
        ),
        resend_echo_wait=node.get(
            "resend-echo-wait", _duration(allow_zero=True), default.resend_echo_wait
        ),
        media_max_image_bytes=node.get(
            "media-max-image-bytes", _byte_count, default.media_max_image_bytes
        ),
        media_max_gif_bytes=node.get(
            "media-max-gif-bytes", _byte_count, default.media_max_gif_bytes
        ),
        media_max_video_bytes=node.get(
            "media-max-video-bytes", _byte_count, default.media_max_video_bytes
        ),
    )
    if settings.retry_max_delay < settings.retry_initial_delay:
        raise ConfigError(node.key("retry-max-delay"), "must not be less than retry-initial-delay")
    return settings


def _read_http(twitter: _Node) -> HttpSettings:
    node = twitter.child("http")
    node.reject_unknown(KNOWN_KEYS[node.path])
    default = HttpSettings()
    return HttpSettings(
        host=node.get("host", _nonempty, default.host),
        port=node.get("port", _port, default.port),
        max_body_size=node.get("max-body-size", _byte_count, default.max_body_size),
        shutdown_grace=node.get(
            "shutdown-grace", _duration(allow_zero=True), default.shutdown_grace
        ),
        shutdown_timeout=node.get("shutdown-timeout", _duration(), default.shutdown_timeout),
    )


def _read_webhook(twitter: _Node) -> WebhookSettings:
    node = twitter.child("webhook")
    node.reject_unknown(KNOWN_KEYS[node.path])
    default = WebhookSettings()
    return WebhookSettings(
        path=node.get("path", _url_path, default.path),
        dedupe_ttl=node.get("dedupe-ttl", _duration(), default.dedupe_ttl),
        dedupe_max_entries=node.get("dedupe-max-entries", _integer(1), default.dedupe_max_entries),
    )


def _read_push_api(twitter: _Node) -> PushApiSettings:
    node = twitter.child("push-api")
    node.reject_unknown(KNOWN_KEYS[node.path])
    return PushApiSettings(token=node.get("token", _optional_secret, None))


def _read_logging(twitter: _Node) -> LoggingSettings:
    node = twitter.child("logging")
    node.reject_unknown(KNOWN_KEYS[node.path])
    default = LoggingSettings()
    return LoggingSettings(
        level=node.get("level", _choice(_LOG_LEVELS), default.level),
        format=node.get("format", _choice(_LOG_FORMATS), default.format),
    )


def _read_gateway(chatbots: _Node) -> GatewaySettings:
    node = chatbots.child("gateway-api")
    return GatewaySettings(
        url=node.require("url", _url),
        token=node.get("token", _optional_secret, None),
    )


def _broker_hosts(node: _Node) -> tuple[BrokerHost, ...]:
    """A HOCON list, or a comma-separated string (what a ${?VAR} override yields)."""
    key = node.key("hosts")
    if "hosts" not in node.tree:
        return ()  # no broker: the embedded SQLite queue (chatbots.messaging.sqlite)
    value = node.tree["hosts"]
    if value is None:
        # Never fall back to the local queue silently: a null here is a mistake, or
        # pyhocon nulling an unset ${?VAR} override (see README, Configuration).
        raise ConfigError(
            key,
            "is null: set HOST:PORT, or leave the key out to use the embedded SQLite queue",
        )
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list):
        raise ConfigError(key, f"must be a list of HOST:PORT, not {_type_name(value)}")
    if not value:
        raise ConfigError(key, "must name at least one HOST:PORT")
    return tuple(node.convert(f"hosts[{i}]", item, _broker_host) for i, item in enumerate(value))


def _read_rabbit(chatbots: _Node) -> RabbitSettings:
    node = chatbots.child("messaging").child("rabbit")
    node.reject_unknown(KNOWN_KEYS[node.path])
    default = RabbitSettings(hosts=())
    return RabbitSettings(
        hosts=_broker_hosts(node),
        username=node.get("username", _nonempty, default.username),
        password=node.get("password", _secret, default.password),
        virtual_host=node.get("virtual-host", _nonempty, default.virtual_host),
        queue_prefix=node.get("queue-prefix", _queue_prefix, default.queue_prefix),
        publish_timeout=node.get("publish-timeout", _duration(), default.publish_timeout),
        connect_timeout=node.get("connect-timeout", _duration(), default.connect_timeout),
        heartbeat=node.get("heartbeat", _heartbeat, default.heartbeat),
        shards=node.get("shards", _integer(1, 1024), default.shards),
        queue_type=node.get("queue-type", _choice(_QUEUE_TYPES), default.queue_type),
        delivery_limit=node.get("delivery-limit", _integer(1, 10_000), default.delivery_limit),
        shard_probe_interval=node.get(
            "shard-probe-interval", _duration(), default.shard_probe_interval
        ),
        pack_publishes=node.get("pack-publishes", _boolean, default.pack_publishes),
    )


def _read_sqlite(chatbots: _Node) -> SqliteSettings:
    node = chatbots.child("messaging").child("sqlite")
    node.reject_unknown(KNOWN_KEYS[node.path])
    return SqliteSettings(path=node.get("path", _nonempty, SqliteSettings().path))


def _read_settings(root: Mapping[str, object]) -> Settings:
    chatbots = _Node(root, "").child("chatbots")
    twitter = chatbots.child("twitter-bot")
    errors = _Errors()
    errors.run(partial(twitter.reject_unknown, KNOWN_KEYS[_TWITTER_BOT]))
    auth = errors.run(partial(_read_auth, twitter))
    api = errors.run(partial(_read_api, twitter))
    bots = errors.run(partial(_read_bots, twitter))
    messaging = errors.run(partial(_read_messaging, twitter))
    http = errors.run(partial(_read_http, twitter))
    webhook = errors.run(partial(_read_webhook, twitter))
    push_api = errors.run(partial(_read_push_api, twitter))
    logging = errors.run(partial(_read_logging, twitter))
    gateway = errors.run(partial(_read_gateway, chatbots))
    rabbit = errors.run(partial(_read_rabbit, chatbots))
    sqlite = errors.run(partial(_read_sqlite, chatbots))
    if auth is not None and api is not None:
        errors.run(partial(_management_needs, auth, api))
    errors.raise_if_any()
    return Settings(
        auth=_present(auth),
        api=_present(api),
        bots=_present(bots),
        gateway=_present(gateway),
        rabbit=_present(rabbit),
        http=_present(http),
        webhook=_present(webhook),
        messaging=_present(messaging),
        push_api=_present(push_api),
        logging=_present(logging),
        sqlite=_present(sqlite),
    )


# --- Parsing -------------------------------------------------------------------


def _parse_failure(source: str, exc: Exception) -> ConfigError:
    """pyhocon's complaint as a ConfigError: its location, never the file's values."""
    if isinstance(exc, ParseBaseException):
        message = exc.msg if len(exc.msg) <= 60 else "unexpected input"
        return ConfigError(
            source, f"syntax error at line {exc.lineno}, column {exc.col}: {message}"
        )
    if isinstance(exc, ConfigSubstitutionException):
        return ConfigError(source, str(exc))
    if isinstance(exc, OSError):
        return ConfigError(source, f"cannot read included file {exc.filename}: {exc.strerror}")
    location = _PARSER_LOCATION.search(str(exc))
    where = f" {location.group()}" if location else ""
    if isinstance(exc, ConfigException):
        return ConfigError(source, f"values of different types cannot be merged{where}")
    return ConfigError(source, f"cannot be parsed ({type(exc).__name__}){where}")


def _plain(value: object) -> object:
    """pyhocon's tree as plain dicts and lists: ConfigTree.get reads dotted paths, not keys."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _parse_hocon(
    text: str, env: Mapping[str, str], source: str, basedir: str | None
) -> Mapping[str, object]:
    try:
        tree = ConfigFactory.parse_string(text, basedir=basedir, resolve=False)
        if not isinstance(tree, ConfigTree):
            raise ConfigError(source, "must hold an object at the top level, not a list")
        # HOCON looks a ${?VAR} up in the config before the process environment,
        # so root keys named after the variables in ``env`` take precedence.
        for name, value in env.items():
            if _ENV_NAME.fullmatch(name) and name not in tree:
                tree.put(name, value)
        ConfigParser.resolve_substitutions(tree)
    except ConfigError:
        raise
    except Exception as exc:  # pyhocon and pyparsing raise many kinds; all mean "bad file".
        raise _parse_failure(source, exc) from None
    return {str(key): _plain(value) for key, value in tree.items()}


def parse_settings(
    text: str,
    env: Mapping[str, str] | None = None,
    *,
    source: str = "<string>",
    basedir: str | Path | None = None,
) -> Settings:
    """Settings from HOCON text.

    ``${?VAR}`` is resolved from ``env`` first, then from ``os.environ``;
    ``source`` names the text in syntax errors and ``basedir`` anchors ``include``.
    """
    root = _parse_hocon(text, env or {}, source, None if basedir is None else str(basedir))
    return _read_settings(root)


def load_settings(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the HOCON file at ``path``; any problem is a ConfigError."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(file), f"cannot read the file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(file), "is not UTF-8 text") from None
    return parse_settings(text, env, source=str(file), basedir=file.parent)


# --- Summary -------------------------------------------------------------------


def _shown(secret: Secret | None) -> str:
    return "set" if secret else "not set"


def _shown_seconds(seconds: float | None) -> str:
    return "off" if seconds is None else f"{seconds:g}s"


def _shown_gap_recovery(gap: GapRecoverySettings) -> str:
    if not gap.enabled:
        return "off"
    return f"on, threshold {gap.threshold:g}s, state file {gap.state_file}"


def _public_url(url: str | None) -> str:
    """The URL with any user:password@ masked."""
    if url is None:
        return "not set"
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"****@{host}").geturl() if at and userinfo else url


def render_summary(settings: Settings) -> str:
    """What ``twitter-bot check-config`` prints: the settings that matter, secrets as set/unset."""
    auth, api, rabbit, http = settings.auth, settings.api, settings.rabbit, settings.http
    lines = [
        "auth:",
        f"  consumer-key: {auth.consumer_key}",
        f"  consumer-secret: {_shown(auth.consumer_secret)}",
        f"  bearer-token: {_shown(auth.bearer_token)}",
        f"  default-access-token: {_shown(auth.default_access_token)}",
        f"  default-access-secret: {_shown(auth.default_access_secret)}",
        "api:",
        f"  env-name: {api.env_name}",
        f"  webhook-url: {_public_url(api.webhook_url)}",
        f"  twitter base url: {_public_url(api.twitter_base_url)}",
        f"  upload-url: {_public_url(api.upload_url)}",
        f"  dm-api: {api.dm_api}",
        f"  account-activity: {api.account_activity}",
        f"  crc-watchdog-interval: {_shown_seconds(api.crc_watchdog_interval)}",
        f"  gap-recovery: {_shown_gap_recovery(api.gap_recovery)}",
        f"bots ({len(settings.bots)}):",
        *(
            f"  - user-id: {bot.user_id}, bot-id: {bot.bot_id}, "
            f"access-token: {_shown(bot.access_token)}, "
            f"access-secret: {_shown(bot.access_secret)}"
            for bot in settings.bots
        ),
        "gateway:",
        f"  url: {_public_url(settings.gateway.url)}",
        f"  token: {_shown(settings.gateway.token)}",
        f"push-api token: {_shown(settings.push_api.token)}",
        *(
            [
                "rabbit:",
                f"  hosts: {', '.join(f'{h.host}:{h.port}' for h in rabbit.hosts)}",
                f"  virtual-host: {rabbit.virtual_host}",
                f"  username: {rabbit.username}",
                f"  password: {_shown(rabbit.password)}",
                f"  queue-prefix: {rabbit.queue_prefix}",
                f"  queue-type: {rabbit.queue_type}, shards: {rabbit.shards}",
            ]
            if settings.uses_rabbitmq
            else [f"queue: embedded SQLite at {settings.sqlite.path} (no rabbit hosts set)"]
        ),
        f"http: {http.host}:{http.port}, webhook path {settings.webhook.path}",
        f"logging: {settings.logging.level}, {settings.logging.format}",
    ]
    return "\n".join(lines)
