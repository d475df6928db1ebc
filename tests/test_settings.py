"""Settings: the reference deployment's file loads, conf/application.conf reads its
environment, and every wrong value is refused naming its key without leaking secrets."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from twitter_bot.settings import (
    KNOWN_KEYS,
    BrokerHost,
    ConfigError,
    Secret,
    Settings,
    load_settings,
    parse_settings,
    render_summary,
)

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "spec" / "reference-application.conf"
APPLICATION_CONF = REPO / "conf" / "application.conf"
DOCS = REPO / "README.md"

# The reference file's placeholders and what a deployment would put there.
FILLED = {
    '"HOST:PORT"': '"rabbit.internal:5672"',
    '"USER"': '"bridge"',
    '"PASSWORD"': '"rabbit-pass-Qz81vX"',
    '"http://host:port"': '"http://gateway.internal:8080"',
}

ENV_VARS = (
    "TWITTER_CONSUMER_KEY",
    "TWITTER_CONSUMER_SECRET",
    "TWITTER_BEARER_TOKEN",
    "TWITTER_ACCESS_TOKEN",
    "TWITTER_ACCESS_SECRET",
    "TWITTER_ENV_NAME",
    "TWITTER_WEBHOOK_URL",
    "TWITTER_API_URL",
    "TWITTER_UPLOAD_URL",
    "TWITTER_DM_API",
    "BOT_USER_ID",
    "BOT_ID",
    "BOT_ACCESS_TOKEN",
    "BOT_ACCESS_SECRET",
    "GATEWAY_URL",
    "GATEWAY_TOKEN",
    "PUSH_API_TOKEN",
    "RABBITMQ_HOSTS",
    "RABBITMQ_USERNAME",
    "RABBITMQ_PASSWORD",
    "RABBITMQ_VHOST",
    "HTTP_PORT",
    "LOG_LEVEL",
    "LOG_FORMAT",
)

TW = "chatbots.twitter-bot"
WM = f"{TW}.webhooks-messaging"
RABBIT = "chatbots.messaging.rabbit"


def filled_reference() -> str:
    text = REFERENCE.read_text(encoding="utf-8")
    for placeholder, value in FILLED.items():
        assert text.count(placeholder) == 1, f"the reference no longer holds {placeholder}"
        text = text.replace(placeholder, value)
    return text


def with_override(hocon: str) -> Settings:
    """The filled reference with ``hocon`` appended: later keys win in HOCON."""
    return parse_settings(f"{filled_reference()}\n{hocon}\n")


def bots(*entries: dict[str, object]) -> str:
    return f"{TW}.bots: {json.dumps(list(entries))}"


def bot(**changes: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "access-token": "bot-token-Hq2",
        "access-secret": "bot-secret-Lw7",
        "user-id": 1230981029831098231,
        "bot-id": "project-1",
    }
    entry.update({key.replace("_", "-"): value for key, value in changes.items()})
    return {key: value for key, value in entry.items() if value is not None}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --- The reference deployment's file ---------------------------------------------


def test_reference_file_loads_once_its_placeholders_are_filled() -> None:
    settings = parse_settings(filled_reference())

    assert settings.auth.consumer_key == "AAA888aaaaabbbbb123aaa"
    assert settings.auth.consumer_secret == Secret("AAA888aaaaabbbbb123aaaAAA888aaaaabbbbb123aaa")
    assert settings.auth.bearer_token is not None
    assert settings.auth.default_access_token == Secret(
        "654897879875-sdad1231231ADASDWAWDAS1123asdasd"
    )
    assert settings.auth.default_access_secret == Secret("asd888pqweknqiwnei123123")
    assert settings.api.env_name == "DEFAULT"
    assert settings.api.webhook_url == "http://twitter-bot.public-domain.com/webhooks"
    assert settings.api.twitter_base_url == "https://api.twitter.com/"
    [only] = settings.bots
    assert only.user_id == "1230981029831098231"
    assert only.bot_id == "aaaabbbb-4444-5555-6666-ccccddddeeee"
    assert only.access_token == Secret("56479874asdawdawdSDADASdasdasdWA")
    assert only.access_secret == Secret("Iasd123123JKLSDOASDsdasadawqeweq1312312asd")
    assert settings.bot_by_user_id("1230981029831098231") is only
    assert settings.messaging.message_timeout == 15.0
    assert settings.gateway.url == "http://gateway.internal:8080"
    assert settings.rabbit.hosts == (BrokerHost("rabbit.internal", 5672),)
    assert settings.rabbit.username == "bridge"
    assert settings.rabbit.password == Secret("rabbit-pass-Qz81vX")


def test_reference_file_gets_the_defaults_of_added_keys() -> None:
    settings = parse_settings(filled_reference())

    assert settings.api.upload_url == "https://upload.twitter.com/1.1/"
    assert settings.api.dm_api == "v1.1"
    assert settings.api.account_activity == "v1.1"
    assert settings.api.crc_watchdog_interval is None
    assert settings.http.host == "0.0.0.0"
    assert settings.http.port == 5756
    assert settings.http.max_body_size == 1024 * 1024
    assert settings.webhook.path == "/webhooks"
    assert settings.webhook.dedupe_ttl == 3600.0
    assert settings.messaging.max_attempts == 10
    assert settings.messaging.mark_read is True
    assert settings.messaging.media_max_image_bytes == 5 * 1024 * 1024
    assert settings.push_api.token is None
    assert settings.gateway.token is None
    assert settings.logging.level == "info"
    assert settings.logging.format == "auto"
    assert settings.rabbit.virtual_host == "/"
    assert settings.rabbit.queue_prefix == "twitter-bot"
    assert settings.rabbit.publish_timeout == 2.0
    assert settings.rabbit.heartbeat == 30


def test_reference_file_loads_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "application.conf"
    path.write_text(filled_reference(), encoding="utf-8")

    assert load_settings(path).bots[0].user_id == "1230981029831098231"


def test_unfilled_reference_is_refused_naming_its_placeholders() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(REFERENCE)

    keys = [error.key for error in caught.value.errors]
    assert f"{RABBIT}.hosts[0]" in keys
    assert "chatbots.gateway-api.url" in keys
    assert f"{RABBIT}.hosts[0]" in str(caught.value)
    assert all("not filled in" in error.problem for error in caught.value.errors)


@pytest.mark.parametrize(
    ("placeholder", "key"),
    [
        (f'{RABBIT}.hosts: ["HOST:PORT"]', f"{RABBIT}.hosts[0]"),
        (f'{RABBIT}.hosts: "HOST:PORT"', f"{RABBIT}.hosts[0]"),
        (f'{RABBIT}.username: "USER"', f"{RABBIT}.username"),
        (f'{RABBIT}.password: "PASSWORD"', f"{RABBIT}.password"),
        ('chatbots.gateway-api.url: "http://host:port"', "chatbots.gateway-api.url"),
    ],
)
def test_each_placeholder_is_refused(placeholder: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        with_override(placeholder)

    assert caught.value.key == key
    assert "placeholder" in caught.value.problem
    assert "not filled in" in caught.value.problem


# --- conf/application.conf and its environment ------------------------------------


def test_application_conf_defaults_start_a_local_daemon(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(APPLICATION_CONF)

    assert settings.rabbit.hosts == (BrokerHost("127.0.0.1", 5672),)
    assert settings.rabbit.username == "guest"
    assert settings.rabbit.password == Secret("guest")
    assert settings.rabbit.virtual_host == "/"
    assert settings.gateway.url == "http://127.0.0.1:8080"
    assert settings.gateway.token is None
    [demo] = settings.bots
    assert demo.user_id == "1230981029831098231"
    assert demo.bot_id == "demo-bot"
    assert demo.access_token == Secret("dev-access-token")
    assert settings.api.twitter_base_url == "https://api.twitter.com/"
    assert settings.api.webhook_url is None
    assert settings.push_api.token is None
    assert settings.http.port == 5756
    assert settings.messaging.message_timeout == 15.0


def test_application_conf_reads_every_variable(clean_env: pytest.MonkeyPatch) -> None:
    values = {
        "TWITTER_CONSUMER_KEY": "ck-prod",
        "TWITTER_CONSUMER_SECRET": "cs-prod",
        "TWITTER_BEARER_TOKEN": "bt-prod",
        "TWITTER_ACCESS_TOKEN": "at-prod",
        "TWITTER_ACCESS_SECRET": "as-prod",
        "TWITTER_ENV_NAME": "prod",
        "TWITTER_WEBHOOK_URL": "https://bot.example.com/webhooks",
        "TWITTER_API_URL": "http://127.0.0.1:8081/fake/1.1/",
        "TWITTER_UPLOAD_URL": "http://127.0.0.1:8081/upload/1.1",
        "TWITTER_DM_API": "v2",
        "BOT_USER_ID": "987654321987654321",
        "BOT_ID": "prod-bot",
        "BOT_ACCESS_TOKEN": "bot-at-prod",
        "BOT_ACCESS_SECRET": "bot-as-prod",
        "GATEWAY_URL": "https://gateway.example.com",
        "GATEWAY_TOKEN": "gw-prod",
        "PUSH_API_TOKEN": "push-prod",
        "RABBITMQ_HOSTS": "a:1,b:2",
        "RABBITMQ_USERNAME": "bridge",
        "RABBITMQ_PASSWORD": "rmq-prod",
        "RABBITMQ_VHOST": "chatbots",
        "HTTP_PORT": "8088",
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": "json",
    }
    assert set(values) == set(ENV_VARS)
    for name, value in values.items():
        clean_env.setenv(name, value)

    settings = load_settings(APPLICATION_CONF)

    assert settings.auth.consumer_key == "ck-prod"
    assert settings.auth.consumer_secret == Secret("cs-prod")
    assert settings.auth.bearer_token == Secret("bt-prod")
    assert settings.auth.default_access_token == Secret("at-prod")
    assert settings.auth.default_access_secret == Secret("as-prod")
    assert settings.api.env_name == "prod"
    assert settings.api.webhook_url == "https://bot.example.com/webhooks"
    assert settings.api.twitter_base_url == "http://127.0.0.1:8081/fake/"
    assert settings.api.upload_url == "http://127.0.0.1:8081/upload/1.1/"
    assert settings.api.dm_api == "v2"
    [only] = settings.bots
    assert (only.user_id, only.bot_id) == ("987654321987654321", "prod-bot")
    assert (only.access_token, only.access_secret) == (Secret("bot-at-prod"), Secret("bot-as-prod"))
    assert settings.gateway.url == "https://gateway.example.com"
    assert settings.gateway.token == Secret("gw-prod")
    assert settings.push_api.token == Secret("push-prod")
    assert settings.rabbit.hosts == (BrokerHost("a", 1), BrokerHost("b", 2))
    assert settings.rabbit.username == "bridge"
    assert settings.rabbit.password == Secret("rmq-prod")
    assert settings.rabbit.virtual_host == "chatbots"
    assert settings.http.port == 8088
    assert settings.logging.level == "debug"
    assert settings.logging.format == "json"


def test_env_argument_wins_over_the_process_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("RABBITMQ_HOSTS", "from-process:5672")
    clean_env.setenv("BOT_ID", "from-process")

    settings = load_settings(
        APPLICATION_CONF, env={"RABBITMQ_HOSTS": "a:1, b:2", "BOT_USER_ID": "42"}
    )

    assert settings.rabbit.hosts == (BrokerHost("a", 1), BrokerHost("b", 2))
    assert settings.bots[0].user_id == "42"
    assert settings.bots[0].bot_id == "from-process"


def test_empty_optional_secret_variable_means_not_set(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("GATEWAY_TOKEN", "")
    clean_env.setenv("PUSH_API_TOKEN", " ")
    clean_env.setenv("TWITTER_WEBHOOK_URL", "")

    settings = load_settings(APPLICATION_CONF)

    assert settings.gateway.token is None
    assert settings.push_api.token is None
    assert settings.api.webhook_url is None


def test_empty_required_secret_variable_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TWITTER_CONSUMER_SECRET", "")

    with pytest.raises(ConfigError) as caught:
        load_settings(APPLICATION_CONF)

    assert caught.value.key == f"{TW}.auth.consumer-secret"


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("HTTP_PORT", "http", f"{TW}.http.port"),
        ("BOT_USER_ID", "@demo", f"{TW}.bots[0].user-id"),
        ("RABBITMQ_HOSTS", "a:1,b:x", f"{RABBIT}.hosts[1]"),
        ("RABBITMQ_HOSTS", " , ", f"{RABBIT}.hosts"),
        ("TWITTER_DM_API", "v3", f"{TW}.api.dm-api"),
        ("GATEWAY_URL", "gateway:8080", "chatbots.gateway-api.url"),
    ],
)
def test_wrong_variable_names_its_key(
    clean_env: pytest.MonkeyPatch, variable: str, value: str, key: str
) -> None:
    clean_env.setenv(variable, value)

    with pytest.raises(ConfigError) as caught:
        load_settings(APPLICATION_CONF)

    assert caught.value.key == key


def test_more_bots_come_from_an_included_file(tmp_path: Path) -> None:
    (tmp_path / "bots.conf").write_text(bots(bot(), bot(user_id="42", bot_id="other")))
    main = tmp_path / "application.conf"
    main.write_text(f'{filled_reference()}\ninclude "bots.conf"\n', encoding="utf-8")

    settings = load_settings(main)

    assert [b.user_id for b in settings.bots] == ["1230981029831098231", "42"]


# --- Values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "base_url"),
    [
        ('"https://api.twitter.com/1.1/"', "https://api.twitter.com/"),
        ('"https://api.twitter.com/1.1"', "https://api.twitter.com/"),
        ('"https://api.twitter.com/"', "https://api.twitter.com/"),
        ('"https://api.twitter.com"', "https://api.twitter.com/"),
        ('"https://api.x.com/2/"', "https://api.x.com/"),
        ('"http://127.0.0.1:8080/fake/1.1/"', "http://127.0.0.1:8080/fake/"),
        ('"http://127.0.0.1:8080/fake/2"', "http://127.0.0.1:8080/fake/"),
        ('"http://127.0.0.1:8080/fake/"', "http://127.0.0.1:8080/fake/"),
    ],
)
def test_twitter_url_becomes_a_base_without_version(written: str, base_url: str) -> None:
    settings = with_override(f"{TW}.api.twitter-url: {written}")

    assert settings.api.twitter_base_url == base_url


@pytest.mark.parametrize(
    ("written", "upload_url"),
    [
        ('"https://upload.x.com/1.1"', "https://upload.x.com/1.1/"),
        ('"http://127.0.0.1:9000/upload/"', "http://127.0.0.1:9000/upload/"),
    ],
)
def test_upload_url_keeps_a_trailing_slash(written: str, upload_url: str) -> None:
    assert with_override(f"{TW}.api.upload-url: {written}").api.upload_url == upload_url


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("15s", 15.0),
        ("500ms", 0.5),
        ("1m", 60.0),
        ("2 minutes", 120.0),
        ("1h", 3600.0),
        ('"250ms"', 0.25),
        ('"2m"', 120.0),
        ('"1.5s"', 1.5),
        ('"15"', 15.0),
        ("3", 3.0),
        ("1.5", 1.5),
    ],
)
def test_durations(written: str, seconds: float) -> None:
    settings = with_override(f"{WM}.message-timeout: {written}")

    assert settings.messaging.message_timeout == pytest.approx(seconds)


def test_duration_from_dateutil_relativedelta() -> None:
    """With dateutil installed, pyhocon returns relativedelta for every duration."""
    from twitter_bot.settings import _duration

    @dataclass
    class FakeRelativeDelta:
        years: int = 0
        months: int = 0
        days: int = 0
        hours: int = 0
        minutes: int = 1
        seconds: int = 30
        microseconds: int = 500_000

    assert _duration()(FakeRelativeDelta()) == pytest.approx(90.5)


@pytest.mark.parametrize(
    ("written", "size"),
    [
        ("1 MiB", 1024 * 1024),
        ("512KiB", 512 * 1024),
        ('"10 MB"', 10_000_000),
        ("100k", 100 * 1024),
        ("5M", 5 * 1024 * 1024),
        ("2kB", 2000),
        ("2048", 2048),
        ('"2048"', 2048),
    ],
)
def test_sizes(written: str, size: int) -> None:
    settings = with_override(f"{WM}.media-max-image-bytes: {written}")

    assert settings.messaging.media_max_image_bytes == size


@pytest.mark.parametrize("written", ['"1230981029831098231"', "1230981029831098231"])
def test_user_id_keeps_every_digit(written: str) -> None:
    settings = with_override(f"{TW}.bots: [{{{_bot_fields()}, user-id: {written}}}]")

    assert settings.bots[0].user_id == "1230981029831098231"


def _bot_fields() -> str:
    return 'access-token: "t", access-secret: "s", bot-id: "b"'


def test_several_bots_may_share_a_bot_id() -> None:
    settings = with_override(bots(bot(), bot(user_id="42")))

    assert [(b.user_id, b.bot_id) for b in settings.bots] == [
        ("1230981029831098231", "project-1"),
        ("42", "project-1"),
    ]


def test_added_keys_are_read() -> None:
    settings = with_override(
        f"""
        {TW}.http {{ host: "127.0.0.1", port: 8000, max-body-size: 2 MiB }}
        {TW}.api {{ dm-api: v2, account-activity: xaa, crc-watchdog-interval: 30m }}
        {TW}.webhook {{ path: "/x/webhooks", dedupe-ttl: 10m, dedupe-max-entries: 50 }}
        {TW}.webhooks-messaging {{
          max-attempts: 3, retry-initial-delay: 500ms, retry-max-delay: 1m,
          max-rate-limit-hold: 0s, mark-read: false, typing-indicator: "off", prefetch: 4
          media-max-gif-bytes: 1 MiB, media-max-video-bytes: 2 MiB
        }}
        {TW}.push-api.token: "push-tok"
        {TW}.logging {{ level: warning, format: console }}
        chatbots.gateway-api.token: "gw-tok"
        {RABBIT} {{
          hosts: ["r1", "[::1]:5673"], virtual-host: "vh", queue-prefix: "tb",
          publish-timeout: 1s, connect-timeout: 3s, heartbeat: 1m, shards: 2
        }}
        """
    )

    assert (settings.http.host, settings.http.port, settings.http.max_body_size) == (
        "127.0.0.1",
        8000,
        2 * 1024 * 1024,
    )
    assert settings.api.dm_api == "v2"
    assert settings.api.account_activity == "xaa"
    assert settings.api.crc_watchdog_interval == 1800.0
    assert settings.webhook.path == "/x/webhooks"
    assert settings.webhook.dedupe_ttl == 600.0
    assert settings.webhook.dedupe_max_entries == 50
    messaging = settings.messaging
    assert (messaging.max_attempts, messaging.retry_initial_delay) == (3, 0.5)
    assert (messaging.retry_max_delay, messaging.max_rate_limit_hold) == (60.0, 0.0)
    assert (messaging.mark_read, messaging.typing_indicator, messaging.prefetch) == (
        False,
        False,
        4,
    )
    assert messaging.media_max_gif_bytes == 1024 * 1024
    assert messaging.media_max_video_bytes == 2 * 1024 * 1024
    assert settings.push_api.token == Secret("push-tok")
    assert settings.gateway.token == Secret("gw-tok")
    assert (settings.logging.level, settings.logging.format) == ("warning", "console")
    rabbit = settings.rabbit
    assert rabbit.hosts == (BrokerHost("r1", 5672), BrokerHost("::1", 5673))
    assert (rabbit.virtual_host, rabbit.queue_prefix) == ("vh", "tb")
    assert (rabbit.publish_timeout, rabbit.connect_timeout) == (1.0, 3.0)
    assert (rabbit.heartbeat, rabbit.shards) == (60, 2)


# --- Refusals name their key --------------------------------------------------------

WRONG_VALUES = [
    # wrong types
    (f'{TW}.http.port: "abc"', f"{TW}.http.port"),
    (f"{TW}.http.port: 8080.5", f"{TW}.http.port"),
    (f"{TW}.http.port: 0", f"{TW}.http.port"),
    (f"{TW}.http.port: 65536", f"{TW}.http.port"),
    (f"{WM}.mark-read: maybe", f"{WM}.mark-read"),
    (f"{WM}.mark-read: 1", f"{WM}.mark-read"),
    (f"{TW}.auth.consumer-key: [a, b]", f"{TW}.auth.consumer-key"),
    (f"{TW}.auth.consumer-secret: {{value: x}}", f"{TW}.auth.consumer-secret"),
    (f"{WM}.prefetch: 0", f"{WM}.prefetch"),
    (f"{WM}.max-attempts: true", f"{WM}.max-attempts"),
    (f'{TW}.auth: "x"', f"{TW}.auth"),
    # missing or empty required values
    (f"{TW}.auth.consumer-key: null", f"{TW}.auth.consumer-key"),
    (f'{TW}.auth.consumer-key: ""', f"{TW}.auth.consumer-key"),
    (f"{TW}.auth.consumer-secret: null", f"{TW}.auth.consumer-secret"),
    (f'{TW}.auth.consumer-secret: ""', f"{TW}.auth.consumer-secret"),
    (f"{TW}.auth.default-access-secret: null", f"{TW}.auth.default-access-secret"),
    (f"{TW}.bots: null", f"{TW}.bots"),
    (f"{TW}.bots: []", f"{TW}.bots"),
    (f"{TW}.bots: {{user-id: 1}}", f"{TW}.bots"),
    (f"{TW}.bots: [1]", f"{TW}.bots[0]"),
    (bots(bot(user_id=None)), f"{TW}.bots[0].user-id"),
    (bots(bot(bot_id=None)), f"{TW}.bots[0].bot-id"),
    (bots(bot(), bot(access_token=None)), f"{TW}.bots[1].access-token"),
    (bots(bot(access_secret="")), f"{TW}.bots[0].access-secret"),
    ("chatbots.gateway-api.url: null", "chatbots.gateway-api.url"),
    (f"{RABBIT}.hosts: []", f"{RABBIT}.hosts"),
    (f"{RABBIT}.hosts: []", f"{RABBIT}.hosts"),
    (f'{RABBIT}.password: ""', f"{RABBIT}.password"),
    (f'{RABBIT}.username: ""', f"{RABBIT}.username"),
    # user ids
    (bots(bot(), bot(user_id=1.5e18)), f"{TW}.bots[1].user-id"),
    (bots(bot(user_id=-5)), f"{TW}.bots[0].user-id"),
    (bots(bot(user_id=0)), f"{TW}.bots[0].user-id"),
    (bots(bot(user_id="0")), f"{TW}.bots[0].user-id"),
    (bots(bot(user_id="12a")), f"{TW}.bots[0].user-id"),
    (bots(bot(user_id=" 12")), f"{TW}.bots[0].user-id"),
    (bots(bot(user_id=True)), f"{TW}.bots[0].user-id"),
    (bots(bot(user_id=2**64)), f"{TW}.bots[0].user-id"),
    (bots(bot(), bot(user_id="1230981029831098231", bot_id="x")), f"{TW}.bots[1].user-id"),
    # URLs
    (f'{TW}.api.webhook-url: "ftp://bot.example.com/webhooks"', f"{TW}.api.webhook-url"),
    (f'{TW}.api.webhook-url: "bot.example.com/webhooks"', f"{TW}.api.webhook-url"),
    (f'{TW}.api.webhook-url: "https://"', f"{TW}.api.webhook-url"),
    (f'{TW}.api.twitter-url: "api.twitter.com"', f"{TW}.api.twitter-url"),
    (f'{TW}.api.twitter-url: "https://api.twitter.com/1.1/?x=1"', f"{TW}.api.twitter-url"),
    (f'{TW}.api.upload-url: "https:///1.1/"', f"{TW}.api.upload-url"),
    (f'{TW}.api.upload-url: "https://upload.x.com:99999/"', f"{TW}.api.upload-url"),
    ('chatbots.gateway-api.url: "gateway.internal:8080"', "chatbots.gateway-api.url"),
    ('chatbots.gateway-api.url: "http://gate way"', "chatbots.gateway-api.url"),
    # durations and sizes
    (f"{WM}.message-timeout: soon", f"{WM}.message-timeout"),
    (f'{WM}.message-timeout: "15 fortnights"', f"{WM}.message-timeout"),
    (f"{WM}.message-timeout: -5", f"{WM}.message-timeout"),
    (f"{WM}.message-timeout: 0s", f"{WM}.message-timeout"),
    (f"{WM}.message-timeout: [15s]", f"{WM}.message-timeout"),
    (f"{TW}.api.crc-watchdog-interval: sometimes", f"{TW}.api.crc-watchdog-interval"),
    (f"{WM}.retry-max-delay: 100ms", f"{WM}.retry-max-delay"),
    (f"{WM}.media-max-gif-bytes: lots", f"{WM}.media-max-gif-bytes"),
    (f"{WM}.media-max-gif-bytes: 5 XB", f"{WM}.media-max-gif-bytes"),
    (f"{WM}.media-max-gif-bytes: 5m", f"{WM}.media-max-gif-bytes"),
    (f"{WM}.media-max-gif-bytes: 0", f"{WM}.media-max-gif-bytes"),
    (f"{TW}.http.max-body-size: 1.5e6", f"{TW}.http.max-body-size"),
    (f"{RABBIT}.heartbeat: 2d", f"{RABBIT}.heartbeat"),
    # broker hosts
    (f'{RABBIT}.hosts: ["rabbit:abc"]', f"{RABBIT}.hosts[0]"),
    (f'{RABBIT}.hosts: ["rabbit:70000"]', f"{RABBIT}.hosts[0]"),
    (f'{RABBIT}.hosts: ["a:5672", "b:0"]', f"{RABBIT}.hosts[1]"),
    (f'{RABBIT}.hosts: ["a:5672", "b:"]', f"{RABBIT}.hosts[1]"),
    (f'{RABBIT}.hosts: ["a:b:c"]', f"{RABBIT}.hosts[0]"),
    (f"{RABBIT}.hosts: [5672]", f"{RABBIT}.hosts[0]"),
    (f'{RABBIT}.hosts: "a:1,b:two"', f"{RABBIT}.hosts[1]"),
    (f"{RABBIT}.hosts: {{a: 1}}", f"{RABBIT}.hosts"),
    (f'{RABBIT}.queue-prefix: "amq.bot"', f"{RABBIT}.queue-prefix"),
    (f"{RABBIT}.shards: 0", f"{RABBIT}.shards"),
    # choices
    (f"{TW}.api.dm-api: v3", f"{TW}.api.dm-api"),
    (f"{TW}.api.account-activity: enterprise", f"{TW}.api.account-activity"),
    (f"{TW}.logging.format: xml", f"{TW}.logging.format"),
    (f"{TW}.logging.level: loud", f"{TW}.logging.level"),
    (f'{TW}.webhook.path: "webhooks"', f"{TW}.webhook.path"),
    # unknown keys (typos)
    (f'{TW}.auth.consumer-secrt: "x"', f"{TW}.auth.consumer-secrt"),
    (f"{TW}.htp.port: 1", f"{TW}.htp"),
    (f"{WM}.message-timeot: 1s", f"{WM}.message-timeot"),
    (f'{RABBIT}.hostz: ["a:1"]', f"{RABBIT}.hostz"),
    (bots(bot(userid=1)), f"{TW}.bots[0].userid"),
]


@pytest.mark.parametrize(("hocon", "key"), WRONG_VALUES)
def test_wrong_value_names_its_key(hocon: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        with_override(hocon)

    assert caught.value.key == key, str(caught.value)
    assert caught.value.others == ()
    assert str(caught.value) == f"{key}: {caught.value.problem}"


def test_unknown_key_suggests_the_known_one() -> None:
    with pytest.raises(ConfigError) as caught:
        with_override(f'{TW}.auth.consumer-secrt: "x"')

    assert "consumer-secret" in caught.value.problem


def test_every_problem_of_a_load_is_reported() -> None:
    with pytest.raises(ConfigError) as caught:
        with_override(
            f"""
            {TW}.http.port: "http"
            {TW}.logging.format: xml
            {bots(bot(user_id="x"), bot(bot_id=None))}
            {RABBIT}.hosts: []
            """
        )

    assert [error.key for error in caught.value.errors] == [
        f"{TW}.bots[0].user-id",
        f"{TW}.bots[1].bot-id",
        f"{TW}.http.port",
        f"{TW}.logging.format",
        f"{RABBIT}.hosts",
    ]
    assert len(str(caught.value).splitlines()) == 5


def test_other_components_keys_outside_our_sections_are_ignored() -> None:
    settings = with_override(
        """
        chatbots.facebook-bot.token: "x"
        chatbots.gateway-api.timeout: 5s
        chatbots.messaging.kafka.hosts: ["k:9092"]
        """
    )

    assert settings.gateway.url == "http://gateway.internal:8080"


# --- Files and syntax ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("chatbots { twitter-bot {\n  auth {\n", "line"),
        ("chatbots.twitter-bot.bots: [1, 2\n", "line"),
        (
            "chatbots.gateway-api.url: ${GATEWAY_URL_THAT_IS_NOT_SET}\n",
            "GATEWAY_URL_THAT_IS_NOT_SET",
        ),
        ("[1, 2]\n", "top level"),
        ('a: {b: 1}\na: [1] {c: "x"}\n', "line: 2"),
    ],
)
def test_unparsable_text_is_a_config_error(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, source="app.conf")

    assert caught.value.key == "app.conf"
    assert expected in caught.value.problem


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"

    with pytest.raises(ConfigError) as caught:
        load_settings(missing)

    assert caught.value.key == str(missing)
    assert "cannot read" in caught.value.problem


def test_directory_and_binary_files_are_config_errors(tmp_path: Path) -> None:
    binary = tmp_path / "binary.conf"
    binary.write_bytes(b"\xff\xfe\x00bad")

    for path in (tmp_path, binary):
        with pytest.raises(ConfigError):
            load_settings(path)


def test_missing_required_include_is_a_config_error(tmp_path: Path) -> None:
    main = tmp_path / "application.conf"
    main.write_text('include required("absent.conf")\n', encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_settings(main)

    assert "absent.conf" in caught.value.problem


# --- Secrets never leak -------------------------------------------------------------------

SECRETS = {
    "consumer-secret": "cs-Zr81mQpW4tYk",
    "bearer-token": "bt-Hn52vLxA9cEe",
    "default-access-token": "dat-Pq63wBn7uJr",
    "default-access-secret": "das-Ux47kMe2oFh",
    "bot-token": "bat-Kd38sRf5gTy",
    "bot-secret": "bas-Wm29cVb6nQz",
    "push": "push-Yt71jLa3xDs",
    "gateway": "gw-Ri85hNo4pMc",
    "rabbit": "rmq-Eg16fTk8wAv",
}

SECRET_CONFIG = f"""
chatbots.twitter-bot {{
  auth {{
    consumer-key: "public-consumer-key"
    consumer-secret: "{SECRETS["consumer-secret"]}"
    bearer-token: "{SECRETS["bearer-token"]}"
    default-access-token: "{SECRETS["default-access-token"]}"
    default-access-secret: "{SECRETS["default-access-secret"]}"
  }}
  api.webhook-url: "https://bot.example.com/webhooks"
  bots: [{{
    access-token: "{SECRETS["bot-token"]}"
    access-secret: "{SECRETS["bot-secret"]}"
    user-id: 1230981029831098231
    bot-id: "project"
  }}]
  push-api.token: "{SECRETS["push"]}"
}}
chatbots.gateway-api {{ url: "https://gw.example.com", token: "{SECRETS["gateway"]}" }}
chatbots.messaging.rabbit {{ hosts: ["r:5672"], username: "u", password: "{SECRETS["rabbit"]}" }}
"""


def assert_no_secret_in(text: str) -> None:
    """No secret, nor any 6-character piece of one, appears in ``text``."""
    for secret in SECRETS.values():
        pieces = {secret[i : i + 6] for i in range(len(secret) - 5)}
        leaked = [piece for piece in pieces if piece in text]
        assert not leaked, f"{leaked} of a secret in {text!r}"


def test_secret_config_loads() -> None:
    settings = parse_settings(SECRET_CONFIG)

    assert settings.push_api.token == Secret(SECRETS["push"])
    assert settings.rabbit.password == Secret(SECRETS["rabbit"])


def test_repr_and_summary_hold_no_secret() -> None:
    settings = parse_settings(SECRET_CONFIG)
    summary = render_summary(settings)

    assert_no_secret_in(repr(settings))
    assert_no_secret_in(str(settings))
    assert_no_secret_in(summary)
    for needle in (
        "1230981029831098231",
        "project",
        "https://bot.example.com/webhooks",
        "https://api.twitter.com/",
        "https://upload.twitter.com/1.1/",
        "https://gw.example.com",
        "r:5672",
        "virtual-host: /",
        "username: u",
        "0.0.0.0:5756",
        "dm-api: v1.1",
        "account-activity: v1.1",
        "consumer-key: public-consumer-key",
        "consumer-secret: set",
        "push-api token: set",
    ):
        assert needle in summary


def test_summary_masks_credentials_in_urls() -> None:
    settings = parse_settings(
        SECRET_CONFIG
        + f'\nchatbots.gateway-api.url: "https://user:{SECRETS["gateway"]}@gw.example.com/"'
    )

    summary = render_summary(settings)

    assert_no_secret_in(summary)
    assert "https://****@gw.example.com/" in summary


def test_summary_of_unset_secrets() -> None:
    settings = parse_settings(SECRET_CONFIG + "\nchatbots.twitter-bot.push-api.token: null")

    assert "push-api token: not set" in render_summary(settings)


@pytest.mark.parametrize(
    "hocon",
    [
        f'chatbots.twitter-bot.auth.consumer-secret: ["{SECRETS["consumer-secret"]}"]',
        f'chatbots.twitter-bot.auth.consumer-key: {{k: "{SECRETS["consumer-secret"]}"}}',
        f'chatbots.twitter-bot.auth.consumer-secrt: "{SECRETS["consumer-secret"]}"',
        f'chatbots.twitter-bot.bots: [{{access-token: "{SECRETS["bot-token"]}"}}]',
        f'chatbots.twitter-bot.bots: [{{user-id: "{SECRETS["bot-token"]}"}}]',
        f'chatbots.twitter-bot.http.port: "{SECRETS["rabbit"]}"',
        f'chatbots.twitter-bot.webhooks-messaging.message-timeout: "{SECRETS["rabbit"]}"',
        f'chatbots.twitter-bot.webhooks-messaging.media-max-gif-bytes: "{SECRETS["rabbit"]}"',
        f'chatbots.twitter-bot.api.dm-api: "{SECRETS["rabbit"]}"',
        f'chatbots.gateway-api.url: "{SECRETS["gateway"]}"',
        f'chatbots.gateway-api.url: "http://x:{SECRETS["gateway"]}"',
        f'chatbots.messaging.rabbit.hosts: "{SECRETS["rabbit"]}:x"',
        f'chatbots.messaging.rabbit.password: ["{SECRETS["rabbit"]}"]',
        f'chatbots.messaging.rabbit.password: [1] {{a: "{SECRETS["rabbit"]}"}}',
        f'chatbots.messaging.rabbit.password: "{SECRETS["rabbit"]}" }}',
        f'chatbots.messaging.rabbit.password: "{SECRETS["rabbit"]}',
    ],
)
def test_config_errors_hold_no_secret(hocon: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(f"{SECRET_CONFIG}\n{hocon}\n")

    assert_no_secret_in(str(caught.value))


# --- Documentation ----------------------------------------------------------------------


def test_docs_describe_every_key_and_variable() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    keys = {f"{section}.{name}" for section, names in KNOWN_KEYS.items() for name in names}
    conf_lines = APPLICATION_CONF.read_text(encoding="utf-8").splitlines()
    settings_lines = "\n".join(line for line in conf_lines if not line.lstrip().startswith("#"))
    variables = set(re.findall(r"\$\{\?(\w+)\}", settings_lines))

    assert variables == set(ENV_VARS)
    assert not [key for key in sorted(keys) if f"`{key}`" not in docs]
    assert not [name for name in sorted(variables) if f"`{name}`" not in docs]


def test_without_rabbit_hosts_the_embedded_sqlite_queue_is_used() -> None:
    hosts_line = '    hosts: ["rabbit.internal:5672"]\n'
    assert hosts_line in filled_reference()
    without_hosts = filled_reference().replace(hosts_line, "")
    settings = parse_settings(without_hosts)
    assert not settings.uses_rabbitmq
    assert settings.sqlite.path == "data/twitter-bot-queue.sqlite3"
    assert "embedded SQLite at data/twitter-bot-queue.sqlite3" in render_summary(settings)
    moved = parse_settings(without_hosts + '\nchatbots.messaging.sqlite.path: "/var/lib/tb/q.db"')
    assert moved.sqlite.path == "/var/lib/tb/q.db"
    assert with_override(f'{RABBIT}.hosts: ["r1:5672"]').uses_rabbitmq


def test_null_rabbit_hosts_is_an_error_never_a_silent_switch_to_sqlite() -> None:
    with pytest.raises(ConfigError) as caught:
        with_override(f"{RABBIT}.hosts: null")
    assert caught.value.key == f"{RABBIT}.hosts"
    assert "leave the key out" in caught.value.problem


def test_an_include_overriding_a_rabbit_sibling_fails_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pyhocon nulls `hosts: [...]` + `hosts: ${?RABBITMQ_HOSTS}` (variable unset) when a
    # later file sets a key beside it; that must not quietly select the local queue.
    monkeypatch.delenv("RABBITMQ_HOSTS", raising=False)
    (tmp_path / "application.conf").write_text(APPLICATION_CONF.read_text(encoding="utf-8"))
    site = tmp_path / "site.conf"
    site.write_text('include "application.conf"\nchatbots.messaging.rabbit.queue-type: quorum\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(site)
    assert caught.value.key == f"{RABBIT}.hosts"
    monkeypatch.setenv("RABBITMQ_HOSTS", "rabbit-1:5672,rabbit-2:5672")
    settings = load_settings(site)
    assert settings.rabbit.queue_type == "quorum"
    assert [h.host for h in settings.rabbit.hosts] == ["rabbit-1", "rabbit-2"]
