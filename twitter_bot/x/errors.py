"""The typed errors of the X client, and the mapping from X's answers to them.

Callers decide on retries from the class and `retryable`, never from status codes
(x-api.md section 7).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from twitter_bot.x.models import RateLimit, header_int

BODY_EXCERPT_CHARS = 500

AUTH_CODES = frozenset({32, 89, 135, 215})
RATE_LIMIT_CODES = frozenset({88})
FORBIDDEN_CODES = frozenset({93, 150, 151, 226, 326, 349, 354})
MEDIA_CODES = frozenset({324, 325})
SERVER_CODES = frozenset({130, 131})
USAGE_CAP_TITLE = "UsageCapExceeded"

# X's 24-hour DM caps answer 429 with these alongside the 15-minute window headers.
_DAILY_LIMIT_PREFIXES = ("x-user-limit-24hour", "x-app-limit-24hour")


class XError(Exception):
    """Root of every error the X client raises."""

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later without changes."""
        return False


class XApiError(XError):
    """X answered with an error: status, X's code (v1.1) and message, rate limit headers."""

    def __init__(
        self,
        status: int,
        code: int | None,
        message: str,
        *,
        body_excerpt: str = "",
        rate_limit: RateLimit | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.body_excerpt = body_excerpt[:BODY_EXCERPT_CHARS]
        self.rate_limit = rate_limit or RateLimit()
        super().__init__(self._describe())

    def _describe(self) -> str:
        code = f" code {self.code}" if self.code is not None else ""
        return f"X API HTTP {self.status}{code}: {self.message}"


class XRateLimited(XApiError):
    """429: wait until `reset_at` (epoch s) or `retry_after` (s); a usage cap is not retryable."""

    def __init__(
        self,
        status: int,
        code: int | None,
        message: str,
        *,
        body_excerpt: str = "",
        rate_limit: RateLimit | None = None,
        reset_at: int | None = None,
        retry_after: float | None = None,
        usage_cap_exceeded: bool = False,
    ) -> None:
        super().__init__(status, code, message, body_excerpt=body_excerpt, rate_limit=rate_limit)
        self.reset_at = reset_at if reset_at is not None else self.rate_limit.reset_at
        self.retry_after = retry_after
        self.usage_cap_exceeded = usage_cap_exceeded

    @property
    def retryable(self) -> bool:
        return not self.usage_cap_exceeded


class XAuthError(XApiError):
    """401, or codes 32/89/135/215: bad or revoked token, wrong keys, clock skew."""


class XForbidden(XApiError):
    """403: this account may not DM this user, or is locked or flagged; do not retry."""


class XBadMedia(XApiError):
    """The media id was refused (324/325) or processing failed; re-upload at most once."""


class XMediaProcessingError(XBadMedia):
    """Media processing ended in state "failed", or did not finish within the allowed wait."""

    def __init__(self, message: str, *, code: int | None = None, timed_out: bool = False) -> None:
        super().__init__(200, code, message)
        self.timed_out = timed_out

    @property
    def retryable(self) -> bool:
        return self.timed_out


class XServerError(XApiError):
    """5xx or codes 130/131: X is over capacity or failed internally; retry with backoff."""

    @property
    def retryable(self) -> bool:
        return True


class XBadRequest(XApiError):
    """Any other 4xx: the request itself is wrong and will fail again."""


class XTransportError(XError):
    """No usable answer: connection refused or reset, DNS failure, timeout."""

    @property
    def retryable(self) -> bool:
        return True


_Rule = tuple[Callable[[int, int | None], bool], type[XApiError]]

# First match wins; codes are checked with the status because X pairs them loosely.
_RULES: tuple[_Rule, ...] = (
    (lambda status, code: status in (420, 429) or code in RATE_LIMIT_CODES, XRateLimited),
    (lambda status, code: status == 401 or code in AUTH_CODES, XAuthError),
    (lambda status, code: status == 403 or code in FORBIDDEN_CODES, XForbidden),
    (lambda status, code: code in MEDIA_CODES, XBadMedia),
    (lambda status, code: status >= 500 or code in SERVER_CODES, XServerError),
    (lambda status, code: 400 <= status < 500, XBadRequest),
)


def error_class(status: int, code: int | None) -> type[XApiError]:
    """The error class for an HTTP status and X error code, per x-api.md section 7."""
    return next((cls for matches, cls in _RULES if matches(status, code)), XApiError)


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    redact: Callable[[str], str] = lambda text: text,
) -> XApiError:
    """Build the typed error for a failed answer; `redact` scrubs secrets from all text."""
    code, message, title = parse_error_body(body)
    rate_limit = RateLimit.from_headers(headers)
    excerpt = redact(body.decode("utf-8", "replace")[:BODY_EXCERPT_CHARS])
    cls = error_class(status, code)
    if cls is XRateLimited:
        return XRateLimited(
            status,
            code,
            redact(message),
            body_excerpt=excerpt,
            rate_limit=rate_limit,
            reset_at=_rate_limited_reset(headers, rate_limit),
            retry_after=parse_retry_after(headers.get("Retry-After")),
            usage_cap_exceeded=title == USAGE_CAP_TITLE,
        )
    return cls(status, code, redact(message), body_excerpt=excerpt, rate_limit=rate_limit)


def parse_error_body(body: bytes) -> tuple[int | None, str, str | None]:
    """(code, message, title) from a v1.1 `errors` list, a v2 problem or anything else."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        text = body.decode("utf-8", "replace").strip()
        return None, text[:200] or "no error details", None
    title = data.get("title") if isinstance(data.get("title"), str) else None
    code, message = _first_v11_error(data.get("errors"))
    if message is None:
        message = _problem_message(data)
    return code, message, title


def _first_v11_error(errors: Any) -> tuple[int | None, str | None]:
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None, None
    first = errors[0]
    raw_code = first.get("code")
    code = int(raw_code) if isinstance(raw_code, int | str) and str(raw_code).isdigit() else None
    message = first.get("message")
    return code, str(message) if message is not None else None


def _problem_message(data: dict[str, Any]) -> str:
    parts = [str(data[key]) for key in ("title", "detail") if data.get(key)]
    if not parts and isinstance(data.get("error"), str):
        parts.append(data["error"])
    return ": ".join(parts) or "no error details"


def _rate_limited_reset(headers: Mapping[str, str], rate_limit: RateLimit) -> int | None:
    """The reset of whichever window is exhausted; the 24-hour caps win over the 15-minute one."""
    resets = [
        header_int(headers, f"{prefix}-reset")
        for prefix in _DAILY_LIMIT_PREFIXES
        if header_int(headers, f"{prefix}-remaining") == 0
    ]
    exhausted = [reset for reset in resets if reset is not None]
    return max(exhausted) if exhausted else rate_limit.reset_at


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
