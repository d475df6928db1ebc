"""The X (Twitter) API client: OAuth 1.0a signed DMs, typing, read receipts, media upload.

Knows nothing of bots, queues or the gateway; callers pass each account's credentials.
"""

from twitter_bot.x.client import MAX_CHUNK_BYTES, XClient, normalise_api_base
from twitter_bot.x.errors import (
    XApiError,
    XAuthError,
    XBadMedia,
    XBadRequest,
    XError,
    XForbidden,
    XMediaProcessingError,
    XRateLimited,
    XServerError,
    XTransportError,
    error_class,
    error_from_response,
)
from twitter_bot.x.models import QuickReplyOption, RateLimit, SentDm, XCredentials
from twitter_bot.x.oauth import SignedRequest, sign_request

__all__ = [
    "MAX_CHUNK_BYTES",
    "QuickReplyOption",
    "RateLimit",
    "SentDm",
    "SignedRequest",
    "XApiError",
    "XAuthError",
    "XBadMedia",
    "XBadRequest",
    "XClient",
    "XCredentials",
    "XError",
    "XForbidden",
    "XMediaProcessingError",
    "XRateLimited",
    "XServerError",
    "XTransportError",
    "error_class",
    "error_from_response",
    "normalise_api_base",
    "sign_request",
]
