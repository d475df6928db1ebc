"""The section 7 classification table and header parsing, without a server."""

from __future__ import annotations

import json

import pytest

from twitter_bot.x import (
    RateLimit,
    XApiError,
    XAuthError,
    XBadMedia,
    XBadRequest,
    XCredentials,
    XForbidden,
    XRateLimited,
    XServerError,
    error_class,
    error_from_response,
    normalise_api_base,
)
from twitter_bot.x.errors import parse_retry_after


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (401, 32, XAuthError),
        (401, 89, XAuthError),
        (401, 135, XAuthError),
        (400, 215, XAuthError),
        (401, None, XAuthError),
        (429, 88, XRateLimited),
        (429, None, XRateLimited),
        (420, None, XRateLimited),
        *[(403, code, XForbidden) for code in (93, 150, 151, 349, 226, 326, 354)],
        (403, None, XForbidden),
        (400, 324, XBadMedia),
        (400, 325, XBadMedia),
        (503, 130, XServerError),
        (500, 131, XServerError),
        (502, None, XServerError),
        (400, 214, XBadRequest),
        (404, 34, XBadRequest),
        (302, None, XApiError),
    ],
)
def test_classification_table(status: int, code: int | None, expected: type[XApiError]) -> None:
    assert error_class(status, code) is expected


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (XAuthError(401, 89, "m"), False),
        (XForbidden(403, 349, "m"), False),
        (XBadMedia(400, 324, "m"), False),
        (XBadRequest(400, 214, "m"), False),
        (XServerError(503, 130, "m"), True),
        (XRateLimited(429, 88, "m"), True),
        (XRateLimited(429, None, "m", usage_cap_exceeded=True), False),
        (XApiError(302, None, "m"), False),
    ],
)
def test_retryable(error: XApiError, retryable: bool) -> None:
    assert error.retryable is retryable


def test_v2_problem_message_and_usage_cap() -> None:
    body = json.dumps(
        {"title": "UsageCapExceeded", "detail": "Monthly cap", "type": "about:blank", "status": 429}
    ).encode()

    error = error_from_response(429, {"x-rate-limit-reset": "17"}, body)

    assert isinstance(error, XRateLimited)
    assert error.usage_cap_exceeded
    assert error.reset_at == 17
    assert error.message == "UsageCapExceeded: Monthly cap"
    assert str(error) == "X API HTTP 429: UsageCapExceeded: Monthly cap"


def test_rate_limit_headers_tolerate_garbage() -> None:
    assert RateLimit.from_headers({"x-rate-limit-limit": "15", "x-rate-limit-remaining": "x"}) == (
        RateLimit(limit=15, remaining=None, reset_at=None)
    )


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://api.twitter.com/",
        "https://api.twitter.com",
        "https://api.twitter.com/1.1/",
        "https://api.twitter.com/2/",
    ],
)
def test_api_base_is_normalised(url: str) -> None:
    assert normalise_api_base(url) == "https://api.twitter.com/"


def test_credentials_repr_hides_token_and_secret() -> None:
    creds = XCredentials("4337869213-abcdefgh", "very-secret-value")

    assert "abcdefgh" not in repr(creds)
    assert "very-secret-value" not in repr(creds)
    assert creds.user_id_hint == "4337869213"
