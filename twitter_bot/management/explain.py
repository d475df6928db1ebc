"""X's management errors as one line for an operator: X's code and message, then what to do.

The advice names the configuration key of the credential that was refused and, for the
errors everyone meets (214 on register, 34, 401), their usual causes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from twitter_bot.settings import Settings
from twitter_bot.x.errors import AUTH_CODES, XApiError, XAuthError, XRateLimited, XTransportError
from twitter_bot.x.management import (
    LOOKUP,
    REGISTER,
    TRIGGER_CRC,
    CredentialMissing,
    ManagementError,
)

EXIT_PROBLEM = 1
EXIT_UNREACHABLE = 3

AUTH = "chatbots.twitter-bot.auth"
API = "chatbots.twitter-bot.api"
CRC_NOT_ANSWERED = (
    "the daemon did not answer X's CRC GET in time or with the right response_token "
    "(is it running and reachable at that URL from the internet, with this app's "
    "consumer-secret?)"
)
CODE_CLOCK_SKEW = 135
CODE_NO_ACCESS = 220
CODE_CRC = 214
CODE_NOT_FOUND = 34


def credential_keys(error: ManagementError | CredentialMissing, settings: Settings) -> str:
    """The configuration keys of the credential a call used."""
    if error.credential == "bearer":
        return f"{AUTH}.bearer-token (the app's bearer token)"
    if error.credential == "owner":
        return (
            f"{AUTH}.consumer-key, consumer-secret, default-access-token and "
            "default-access-secret (the app owner's token, with Read, Write and Direct "
            "Messages permission)"
        )
    user_id = error.user_id if isinstance(error, ManagementError) else None
    index = next((i for i, bot in enumerate(settings.bots) if bot.user_id == user_id), None)
    which = f"bots[{index}]" if index is not None else "bots[]"
    return (
        f"chatbots.twitter-bot.{which}.access-token and access-secret (user-id {user_id}) "
        f"with {AUTH}.consumer-key and consumer-secret: the token must be that account's "
        "and allow Direct Messages"
    )


def missing_credential(error: CredentialMissing) -> str:
    """The line for a call whose credential is not configured (exit 2)."""
    if error.credential == "bearer":
        return f"{AUTH}.bearer-token is not set: X needs the app's bearer token to {error.action}"
    if error.credential == "owner":
        return (
            f"{AUTH}.default-access-token and default-access-secret are not set: the v1.1 API "
            f"needs the app owner's token to {error.action}"
        )
    return f"no access token for the account: X needs it to {error.action}"


def explain(error: ManagementError, settings: Settings) -> tuple[str, int]:
    """One line (no newline, no secret) and the exit code for a failed call."""
    cause = error.cause
    if isinstance(cause, XTransportError):
        line = (
            f"could not reach X at {settings.api.twitter_base_url} to {error.action} "
            f"({cause}): check the network, any proxy, and {API}.twitter-url"
        )
        return line, EXIT_UNREACHABLE
    code = f", code {cause.code}" if cause.code is not None else ""
    message = " ".join(cause.message.split()).rstrip(".")
    advice = _advice(error, cause, settings)
    line = (
        f"X refused to {error.action} (HTTP {cause.status}{code}): {message}. What to do: {advice}"
    )
    return line, EXIT_PROBLEM


_Rule = Callable[[ManagementError, XApiError, Settings], str | None]


def _advice(error: ManagementError, cause: XApiError, settings: Settings) -> str:
    rules: tuple[_Rule, ...] = (_clock, _auth, _rate_limit, _crc, _not_found, _forbidden, _server)
    for rule in rules:
        advice = rule(error, cause, settings)
        if advice is not None:
            return advice
    return "check the configuration and the command; X's message says what it refused"


def _clock(error: ManagementError, cause: XApiError, settings: Settings) -> str | None:
    if cause.code != CODE_CLOCK_SKEW:
        return None
    return "this machine's clock is off by more than 5 minutes: synchronise it (NTP)"


def _auth(error: ManagementError, cause: XApiError, settings: Settings) -> str | None:
    if not isinstance(cause, XAuthError) and cause.code not in AUTH_CODES:
        return None
    return f"X did not accept the credentials: check {credential_keys(error, settings)}"


def _rate_limit(error: ManagementError, cause: XApiError, settings: Settings) -> str | None:
    if not isinstance(cause, XRateLimited):
        return None
    if cause.reset_at is None:
        return "rate limited: try again in 15 minutes"
    reset = datetime.fromtimestamp(cause.reset_at, UTC).strftime("%H:%M UTC")
    return f"rate limited: try again after {reset}"


def _crc(error: ManagementError, cause: XApiError, settings: Settings) -> str | None:
    if error.action == REGISTER and cause.status in (400, 403):
        too_many = (
            "the app already has its maximum number of webhooks (`twitter-bot webhooks list` "
            "shows them; `twitter-bot webhooks setup --replace` replaces a stale one)"
        )
        if "too many" in cause.message.lower():
            return too_many
        return (
            f"X could not validate {settings.api.webhook_url}: {CRC_NOT_ANSWERED}; or the URL "
            f"has an explicit port or is not https://; or {too_many}"
        )
    if error.action == TRIGGER_CRC and (cause.code == CODE_CRC or cause.status == 400):
        return f"{CRC_NOT_ANSWERED}; X delivers no events until a CRC passes"
    return None


def _not_found(error: ManagementError, cause: XApiError, settings: Settings) -> str | None:
    if cause.code != CODE_NOT_FOUND and cause.status != 404:
        return None
    if error.action == LOOKUP:
        return "check the username (without the @ it works too)"
    env = f"; check that {API}.env-name is the environment's label" if cause.code else ""
    return (
        "no such webhook or subscription: `twitter-bot webhooks list` and `twitter-bot "
        f"webhooks status` show what is registered{env}"
    )


def _forbidden(error: ManagementError, cause: XApiError, settings: Settings) -> str | None:
    if cause.status != 403 and cause.code != CODE_NO_ACCESS:
        return None
    return (
        f"the app or token may not do this: check {credential_keys(error, settings)}; the app "
        "needs Read, Write and Direct Messages permission and Account Activity access on "
        "its X API tier"
    )


def _server(error: ManagementError, cause: XApiError, settings: Settings) -> str | None:
    if cause.status < 500:
        return None
    return "X is having problems: try again in a few minutes"
