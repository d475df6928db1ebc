"""``twitter-bot webhooks …`` against a local X for every API generation, with real CRCs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import BOT_A_USER_ID, BOT_B_USER_ID
from tests.fakes.fake_x_management import XaaSubscription
from tests.management.conftest import OWNER_USER_ID, ManagementEnv, assert_one_line_error
from twitter_bot.settings import Secret

BOTS = {BOT_A_USER_ID, BOT_B_USER_ID}


def subscribe_principals(env: ManagementEnv) -> list[str | None]:
    """Who signed each accepted subscription request."""
    pattern = {
        "v1.1": r"/1\.1/account_activity/all/DEFAULT/subscriptions\.json",
        "v2": r"/2/account_activity/webhooks/\d+/subscriptions/all",
        "xaa": r"/2/activity/subscriptions",
    }[env.generation]
    return [call.principal for call in env.fake.calls_to("POST", pattern) if call.status < 400]


# --- setup -----------------------------------------------------------------------------


async def test_setup_from_empty_registers_runs_the_crc_and_subscribes_every_bot(
    env: ManagementEnv,
) -> None:
    result = await env.run("setup")

    assert result.code == 0, result.err
    webhook = env.webhook()
    assert webhook.valid
    assert webhook.version == env.version
    # X really asked our daemon: one CRC GET, answered correctly.
    assert [(c.url.split("?")[0], c.failure) for c in env.fake.crc_checks] == [
        (env.webhook_url, None)
    ]
    assert env.fake.subscribed(webhook.id) == BOTS
    # v1.1 registers with the app owner's token, v2 with the bearer token; each account
    # is subscribed in its own user context.
    [register] = [c for c in env.fake.mutations() if c.method == "POST"][:1]
    assert register.principal == (OWNER_USER_ID if env.generation == "v1.1" else "app")
    assert sorted(subscribe_principals(env)) == sorted(BOTS)
    assert f"changed: registered webhook {webhook.id} for {env.webhook_url}" in result.out
    assert f"changed: account {BOT_A_USER_ID} (bot-a) subscribed" in result.out
    assert f"changed: account {BOT_B_USER_ID} (bot-b) subscribed" in result.out
    assert result.out.strip().endswith("setup: 3 change(s)")
    if env.generation == "xaa":
        for subscription in env.fake.xaa_subscriptions.values():
            assert subscription.event_type == "dm.received"
            assert subscription.direction == "inbound"
            assert subscription.webhook_id == webhook.id


async def test_setup_again_changes_nothing(env: ManagementEnv) -> None:
    assert (await env.run("setup")).code == 0
    mutations = len(env.fake.mutations())
    webhooks = {w.id: (w.url, w.valid) for w in env.fake.webhooks.values()}

    again = await env.run("setup")

    assert again.code == 0, again.err
    assert len(env.fake.mutations()) == mutations
    assert {w.id: (w.url, w.valid) for w in env.fake.webhooks.values()} == webhooks
    assert "changed:" not in again.out
    assert again.out.strip().endswith("setup: nothing to change")
    # It still had X check the webhook, which the daemon answered.
    assert len(env.fake.crc_checks) == 2
    assert f"account {BOT_A_USER_ID} (bot-a): subscribed" in again.out


async def test_setup_revalidates_an_invalid_webhook(env: ManagementEnv) -> None:
    assert (await env.run("setup")).code == 0
    env.fake.invalidate(env.webhook().id)

    result = await env.run("setup")

    assert result.code == 0, result.err
    assert env.webhook().valid
    assert f"changed: webhook {env.webhook().id} re-validated" in result.out
    assert result.out.strip().endswith("setup: 1 change(s)")


async def test_setup_replace_after_the_url_changed(env: ManagementEnv) -> None:
    old_url = "https://old-host.example.com/webhooks"
    old = env.fake.add_webhook(old_url, version=env.version, env="DEFAULT")
    if env.version == "1.1":
        env.fake.v11_subscriptions["DEFAULT"] = set(BOTS)
    else:
        env.fake.v2_subscriptions[old.id] = set(BOTS)

    refused = await env.run("setup")

    assert_one_line_error(refused, env.settings, old.id, old_url, "--replace")
    assert refused.code == 1
    assert env.fake.mutations() == []

    replaced = await env.run("setup", "--replace")

    assert replaced.code == 0, replaced.err
    assert old.id not in env.fake.webhooks
    webhook = env.webhook()
    assert list(env.fake.webhooks) == [webhook.id]
    assert env.fake.subscribed(webhook.id) == BOTS
    assert f"changed: deleted webhook {old.id} for {old_url}" in replaced.out
    assert replaced.out.strip().endswith("setup: 4 change(s)")
    assert (await env.run("setup")).out.strip().endswith("setup: nothing to change")


# --- status ----------------------------------------------------------------------------


async def test_status_exit_codes(env: ManagementEnv) -> None:
    empty = await env.run("status")
    assert empty.code == 1
    assert "webhooks: none registered" in empty.out
    assert f"missing: {BOT_A_USER_ID} (bot-a) is not subscribed" in empty.out
    assert "status: 3 problem(s)" in empty.out

    assert (await env.run("setup")).code == 0
    healthy = await env.run("status")
    assert healthy.code == 0, healthy.out
    webhook = env.webhook()
    assert f"webhook {webhook.id}: {env.webhook_url} valid [configured]" in healthy.out
    assert f"subscribed: {BOT_B_USER_ID} (bot-b)" in healthy.out
    assert healthy.out.strip().endswith("status: OK")

    env.fake.invalidate(webhook.id)
    invalid = await env.run("status")
    assert invalid.code == 1
    assert "INVALID" in invalid.out
    assert f"webhook {webhook.id} is invalid" in invalid.out

    assert (await env.run("crc")).code == 0
    assert (await env.run("status")).code == 0

    assert (await env.run("unsubscribe", "--bot", BOT_B_USER_ID)).code == 0
    missing = await env.run("status")
    assert missing.code == 1
    assert f"missing: {BOT_B_USER_ID} (bot-b) is not subscribed" in missing.out
    assert missing.out.strip().splitlines()[-2] == (
        f"status: 1 problem(s): {BOT_B_USER_ID} not subscribed"
    )


async def test_status_names_subscribed_accounts_that_are_not_configured_bots(
    env: ManagementEnv,
) -> None:
    assert (await env.run("setup")).code == 0
    stranger = "999000999"
    if env.version == "1.1":
        env.fake.v11_subscriptions["DEFAULT"].add(stranger)
    elif env.generation == "v2":
        env.fake.v2_subscriptions[env.webhook().id].add(stranger)
    else:
        env.fake.xaa_subscriptions["1"] = XaaSubscription(
            "1", "dm.received", stranger, "inbound", env.webhook().id, "other-app"
        )

    result = await env.run("status")

    assert result.code == 0
    assert f"subscribed: {stranger} (not a configured bot)" in result.out


# --- single steps ----------------------------------------------------------------------


async def test_each_single_step(env: ManagementEnv) -> None:
    registered = await env.run("register")
    assert registered.code == 0, registered.err
    webhook = env.webhook()
    assert webhook.valid and env.fake.subscribed(webhook.id) == set()

    listed = await env.run("list")
    assert listed.out.strip() == f"webhook {webhook.id}: {env.webhook_url} valid [configured]"

    one = await env.run("subscribe", "--bot", BOT_A_USER_ID)
    assert one.code == 0, one.err
    assert env.fake.subscribed(webhook.id) == {BOT_A_USER_ID}
    assert subscribe_principals(env) == [BOT_A_USER_ID]
    assert (await env.run("subscriptions")).out.strip() == f"subscribed: {BOT_A_USER_ID} (bot-a)"

    rest = await env.run("subscribe")
    assert f"account {BOT_A_USER_ID} (bot-a): subscribed" in rest.out
    assert "subscribe: 1 account(s) subscribed" in rest.out
    assert env.fake.subscribed(webhook.id) == BOTS

    gone = await env.run("unsubscribe", "--bot", BOT_A_USER_ID)
    assert gone.code == 0, gone.err
    assert env.fake.subscribed(webhook.id) == {BOT_B_USER_ID}
    assert (await env.run("unsubscribe", "--bot", BOT_A_USER_ID)).out.startswith(
        f"account {BOT_A_USER_ID} (bot-a): not subscribed"
    )

    env.fake.invalidate(webhook.id)
    crc = await env.run("crc")
    assert crc.code == 0, crc.err
    assert crc.out.strip() == f"webhook {webhook.id}: CRC passed, valid"
    assert env.webhook().valid
    [put] = env.fake.calls_to("PUT", r".*/webhooks/\d+(\.json)?")
    assert put.principal == (OWNER_USER_ID if env.version == "1.1" else "app")

    deleted = await env.run("delete")
    assert deleted.code == 0, deleted.err
    assert deleted.out.strip() == f"changed: deleted webhook {webhook.id}"
    assert env.fake.webhooks == {}
    assert (await env.run("list")).out.strip() == "no webhooks registered"


async def test_steps_on_a_missing_webhook_say_so(env: ManagementEnv) -> None:
    for action in ("crc", "delete", "subscribe", "subscriptions"):
        result = await env.run(action)
        assert_one_line_error(result, env.settings, f"{env.webhook_url} is not registered")
        assert result.code == 1


async def test_subscribe_an_unknown_bot_is_a_usage_error(env: ManagementEnv) -> None:
    result = await env.run("subscribe", "--bot", "42")

    assert_one_line_error(result, env.settings, "--bot 42")
    assert result.code == 2


# --- lookup and replay -----------------------------------------------------------------


@pytest.mark.parametrize("generation", ["v2"], indirect=True)
async def test_lookup_prints_the_user_id(env: ManagementEnv) -> None:
    env.fake.usernames["harris_0ff"] = (BOT_B_USER_ID, "Harris_0ff")

    found = await env.run("lookup", "@Harris_0ff")
    missing = await env.run("lookup", "nobody_here")

    assert found.code == 0, found.err
    assert found.out.strip() == f"@Harris_0ff: user-id {BOT_B_USER_ID} (The Harris_0ff)"
    [call] = env.fake.calls_to("GET", r"/2/users/by/username/.*")[:1]
    assert call.principal == "app" and call.path == "/2/users/by/username/Harris_0ff"
    assert_one_line_error(missing, env.settings, "Could not find user", "check the username")
    assert missing.code == 1


def minutes_ago(minutes: int) -> datetime:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=minutes)


@pytest.mark.parametrize("generation", ["v2", "xaa"], indirect=True)
async def test_replay_request_shape(env: ManagementEnv) -> None:
    assert (await env.run("setup")).code == 0
    start, end = minutes_ago(120), minutes_ago(60)

    result = await env.run(
        "replay", "--from", start.strftime("%Y%m%d%H%M"), "--to", end.isoformat()
    )

    assert result.code == 0, result.err
    [replay] = env.fake.replays
    assert {k: replay[k] for k in ("webhook_id", "from_date", "to_date")} == {
        "webhook_id": env.webhook().id,
        "from_date": start.strftime("%Y%m%d%H%M"),
        "to_date": end.strftime("%Y%m%d%H%M"),
    }
    [call] = env.fake.calls_to("POST", "/2/webhooks/replay")
    assert call.principal == "app"
    assert set(call.json) == {"webhook_id", "from_date", "to_date"}
    assert f"replay job {replay['job_id']}:" in result.out


@pytest.mark.parametrize("generation", ["v2"], indirect=True)
@pytest.mark.parametrize(
    ("window", "needle"),
    [
        (("--from", "{old}"), "more than 5 days ago"),
        (("--from", "{recent}", "--to", "{future}"), "--to is in the future"),
        (("--from", "{recent}", "--to", "{older}"), "--from must be before --to"),
        (("--from", "yesterday"), "--from 'yesterday': write yyyymmddhhmm"),
    ],
)
async def test_replay_refuses_windows_x_would_refuse(
    env: ManagementEnv, window: tuple[str, ...], needle: str
) -> None:
    times = {
        "old": minutes_ago(6 * 24 * 60).strftime("%Y%m%d%H%M"),
        "recent": minutes_ago(30).strftime("%Y%m%d%H%M"),
        "older": minutes_ago(40).strftime("%Y%m%d%H%M"),
        "future": (minutes_ago(0) + timedelta(hours=1)).strftime("%Y%m%d%H%M"),
    }
    result = await env.run("replay", *(part.format(**times) for part in window))

    assert_one_line_error(result, env.settings, needle)
    assert result.code == 2
    assert env.fake.calls == []


@pytest.mark.parametrize("generation", ["v1.1"], indirect=True)
async def test_replay_needs_the_v2_api(env: ManagementEnv) -> None:
    result = await env.run("replay", "--from", minutes_ago(30).strftime("%Y%m%d%H%M"))

    assert_one_line_error(result, env.settings, "account-activity to v2 or xaa")
    assert result.code == 2


# --- X's errors ------------------------------------------------------------------------


async def test_register_when_the_crc_answer_is_wrong_is_one_line(env: ManagementEnv) -> None:
    # A daemon with another consumer secret answers X's CRC with a wrong response_token.
    wrong = env.with_auth(consumer_secret=Secret("not-the-apps-consumer-secret"))
    url = await env.serve_daemon(wrong)
    settings = env.with_api(webhook_url=url)

    result = await env.run("register", settings=settings)

    expected = "code 214" if env.version == "1.1" else "CrcValidationFailed"
    assert_one_line_error(
        result,
        settings,
        "X refused to register the webhook (HTTP 400",
        expected,
        "Invalid CRC token",
        "What to do: X could not validate",
        "explicit port or is not https://",
        "maximum number of webhooks",
    )
    assert result.code == 1
    assert env.fake.webhooks == {}
    assert env.fake.crc_checks[-1].failure is not None


@pytest.mark.parametrize("generation", ["v1.1"], indirect=True)
async def test_too_many_webhooks_is_code_214_with_the_causes(env: ManagementEnv) -> None:
    env.fake.add_webhook("https://other.example.com/webhooks", version="1.1", env="DEFAULT")

    result = await env.run("register")

    assert_one_line_error(
        result, env.settings, "code 214", "Too many resources already created", "--replace"
    )


@pytest.mark.parametrize("generation", ["v1.1"], indirect=True)
async def test_no_such_webhook_is_code_34(env: ManagementEnv) -> None:
    for action in ("delete", "crc"):
        result = await env.run(action, "--id", "123456")
        assert_one_line_error(
            result,
            env.settings,
            "(HTTP 404, code 34): Sorry, that page does not exist",
            "no such webhook or subscription",
            "api.env-name",
        )
        assert result.code == 1


async def test_a_refused_bearer_token_is_one_line_naming_it(env: ManagementEnv) -> None:
    settings = env.with_auth(bearer_token=Secret("wrong-bearer-token"))

    result = await env.run("list", settings=settings)

    code = ", code 89" if env.version == "1.1" else ""
    assert_one_line_error(
        result,
        settings,
        f"X refused to list the webhooks (HTTP 401{code})",
        "X did not accept the credentials: check chatbots.twitter-bot.auth.bearer-token",
    )
    assert result.code == 1


@pytest.mark.parametrize("generation", ["v1.1"], indirect=True)
async def test_a_refused_owner_token_is_code_32_naming_it(env: ManagementEnv) -> None:
    settings = env.with_auth(default_access_secret=Secret("wrong-owner-secret"))

    result = await env.run("register", settings=settings)

    assert_one_line_error(
        result,
        settings,
        "X refused to register the webhook (HTTP 401, code 32): Could not authenticate you",
        "default-access-token",
    )
    assert result.code == 1


async def test_a_bots_refused_token_names_that_bot(env: ManagementEnv) -> None:
    assert (await env.run("register")).code == 0
    bot_a, bot_b = env.settings.bots
    settings = replace(
        env.settings, bots=(bot_a, replace(bot_b, access_secret=Secret("wrong-bot-secret")))
    )

    result = await env.run("subscribe", settings=settings)

    assert_one_line_error(
        result,
        settings,
        "X refused to subscribe the account (HTTP 401",
        f"chatbots.twitter-bot.bots[1].access-token and access-secret (user-id {BOT_B_USER_ID})",
    )
    # What happened before the failure is reported on stdout.
    assert f"changed: account {BOT_A_USER_ID} (bot-a) subscribed" in result.out


@pytest.mark.parametrize("generation", ["v2"], indirect=True)
async def test_x_unreachable_is_one_line_and_exit_3(env: ManagementEnv) -> None:
    from tests.support.daemon import free_port

    settings = env.with_api(twitter_base_url=f"http://127.0.0.1:{free_port()}/")

    result = await env.run("status", settings=settings)

    assert_one_line_error(result, settings, "could not reach X at", "api.twitter-url")
    assert result.code == 3


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"bearer_token": None}, "chatbots.twitter-bot.auth.bearer-token is not set"),
        (
            {"default_access_token": None, "default_access_secret": None},
            "default-access-token and default-access-secret are not set",
        ),
    ],
)
@pytest.mark.parametrize("generation", ["v1.1"], indirect=True)
async def test_a_missing_credential_names_its_key_and_exits_2(
    env: ManagementEnv, change: dict[str, Any], key: str
) -> None:
    settings = env.with_auth(**change)

    result = await env.run("setup", settings=settings)

    assert_one_line_error(result, settings, key)
    assert result.code == 2


async def test_a_missing_webhook_url_names_its_key(env: ManagementEnv) -> None:
    settings = env.with_api(webhook_url=None)
    for action in ("setup", "status", "register"):
        result = await env.run(action, settings=settings)
        assert_one_line_error(result, settings, "chatbots.twitter-bot.api.webhook-url is not set")
        assert result.code == 2
    assert env.fake.calls == []
