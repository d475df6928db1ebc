"""Status classification and Retry-After parsing (section 3)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from twitter_bot.gateway import (
    GatewayError,
    GatewayPermanentError,
    GatewayTransientError,
    error_for_status,
    parse_retry_after,
)

NOW = datetime(2026, 11, 21, 19, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422, 405, 413, 415, 301, 307])
def test_permanent_statuses(status: int) -> None:
    error = error_for_status(status, body_excerpt="nope", retry_after=3.0)

    assert type(error) is GatewayPermanentError
    assert (error.status, error.body_excerpt) == (status, "nope")


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_transient_statuses(status: int) -> None:
    error = error_for_status(status, retry_after=3.0)

    assert type(error) is GatewayTransientError
    assert error.retry_after == 3.0


def test_body_excerpt_is_capped() -> None:
    assert len(GatewayError("x", body_excerpt="a" * 2000).body_excerpt) == 500


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("Sat, 21 Nov 2026 19:01:30 GMT", 90.0),
        ("Sat, 21 Nov 2026 18:00:00 GMT", 0.0),
        (None, None),
        ("", None),
        ("-5", None),
        ("soon", None),
        ("inf", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected
