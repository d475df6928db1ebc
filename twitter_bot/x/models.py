"""Values the X client takes and returns: credentials, quick replies, results, rate limits.

Ids are strings end to end: X ids exceed 2**53 and must never pass through a float.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

RATE_LIMIT_HEADER = "x-rate-limit-limit"
RATE_REMAINING_HEADER = "x-rate-limit-remaining"
RATE_RESET_HEADER = "x-rate-limit-reset"


@dataclass(frozen=True)
class XCredentials:
    """A user-context access token and secret (one bot account); repr never shows them."""

    token: str = field(repr=False)
    secret: str = field(repr=False)

    @property
    def user_id_hint(self) -> str | None:
        """The numeric token prefix before "-": conventionally the account's user id."""
        prefix, dash, _ = self.token.partition("-")
        return prefix if dash and prefix.isdigit() else None

    def __repr__(self) -> str:
        return f"XCredentials(user_id_hint={self.user_id_hint!r}, token=<redacted>)"


@dataclass(frozen=True)
class QuickReplyOption:
    """One v1.1 quick-reply option; `metadata` comes back when the user taps it."""

    label: str
    description: str | None
    metadata: str


@dataclass(frozen=True)
class RateLimit:
    """The x-rate-limit-* headers of one answer; None where a header was absent or bad."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: int | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimit:
        """Parse the standard 15-minute window headers (case-insensitive mapping)."""
        return cls(
            limit=header_int(headers, RATE_LIMIT_HEADER),
            remaining=header_int(headers, RATE_REMAINING_HEADER),
            reset_at=header_int(headers, RATE_RESET_HEADER),
        )


@dataclass(frozen=True)
class SentDm:
    """A DM X accepted: its event id (v1.1 event.id, v2 data.dm_event_id)."""

    event_id: str
    rate_limit: RateLimit
    conversation_id: str | None = None


def header_int(headers: Mapping[str, str], name: str) -> int | None:
    """An integer header value, or None when missing or not an integer."""
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        return None
