"""Which advice each kind of refusal gets, always on one line."""

from __future__ import annotations

import pytest

from tests.conftest import make_settings
from twitter_bot.management.explain import explain
from twitter_bot.x.errors import XApiError, XRateLimited, XTransportError, error_class
from twitter_bot.x.management import LIST_WEBHOOKS, SUBSCRIBE, ManagementError


def refusal(status: int, code: int | None, message: str = "nope") -> XApiError:
    return error_class(status, code)(status, code, message)


@pytest.mark.parametrize(
    ("cause", "needle"),
    [
        (refusal(401, 135, "Timestamp out of bounds."), "clock is off"),
        (refusal(403, 220), "Read, Write and Direct Messages"),
        (refusal(503, 130, "Over capacity"), "try again in a few minutes"),
        (XRateLimited(429, 88, "Rate limit exceeded", reset_at=1_700_000_000), "after 22:13 UTC"),
        (refusal(400, None, "first line\nsecond line"), "first line second line"),
    ],
)
def test_advice_by_kind(cause: XApiError, needle: str) -> None:
    settings = make_settings("/")
    line, code = explain(ManagementError(LIST_WEBHOOKS, "bearer", cause), settings)

    assert needle in line
    assert "\n" not in line
    assert code == 1


def test_unreachable_is_exit_3_and_a_bot_credential_names_the_bot() -> None:
    settings = make_settings("/")
    bot = settings.bots[1]

    down, code = explain(
        ManagementError(LIST_WEBHOOKS, "bearer", XTransportError("ConnectionError: refused")),
        settings,
    )
    refused, _ = explain(
        ManagementError(SUBSCRIBE, "account", refusal(401, 89), user_id=bot.user_id), settings
    )

    assert code == 3 and down.startswith("could not reach X at https://api.twitter.com/")
    assert (
        f"chatbots.twitter-bot.bots[1].access-token and access-secret (user-id {bot.user_id})"
        in refused
    )
