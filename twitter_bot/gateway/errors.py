"""Gateway failures, split by what the bridge should do about them (gateway-api.md, section 3).

`GatewayPermanentError`: dead-letter at once. `GatewayTransientError`: retry
later, honouring `retry_after` when the gateway gave one. 408, 429 and 5xx are
transient; every other non-2xx answer (the listed 4xx, the other 4xx such as
405/413/415, and 3xx, which is never followed) is permanent: retrying an
answer the platform made on purpose would only loop.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

BODY_EXCERPT_MAX = 500
TRANSIENT_4XX = frozenset({408, 429})

_SECONDS = re.compile(r"\d+(?:\.\d+)?", re.ASCII)


class GatewayError(Exception):
    """A delivery that did not succeed; `status` is None when no HTTP answer came back."""

    def __init__(self, message: str, *, status: int | None = None, body_excerpt: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body_excerpt = body_excerpt[:BODY_EXCERPT_MAX]


class GatewayPermanentError(GatewayError):
    """The gateway refused the message, or answered what can't be understood: don't retry."""


class GatewayTransientError(GatewayError):
    """Timeout, connection failure, 408, 429 or 5xx: retry after `retry_after` s if given."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body_excerpt: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, body_excerpt=body_excerpt)
        self.retry_after = retry_after


def is_transient_status(status: int) -> bool:
    """Whether a non-2xx status is worth retrying."""
    return status in TRANSIENT_4XX or status >= 500


def error_for_status(
    status: int, *, body_excerpt: str = "", retry_after: float | None = None
) -> GatewayError:
    """The error for a non-2xx answer; `retry_after` is kept only on transient ones."""
    message = f"gateway answered HTTP {status}"
    if is_transient_status(status):
        return GatewayTransientError(
            message, status=status, body_excerpt=body_excerpt, retry_after=retry_after
        )
    return GatewayPermanentError(message, status=status, body_excerpt=body_excerpt)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date); None if unusable.

    A date already past gives 0.0.
    """
    if value is None:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, delta)
