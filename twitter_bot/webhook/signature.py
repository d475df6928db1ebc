"""X's webhook cryptography: the CRC answer and the delivery signature (x-api.md §1-2)."""

from __future__ import annotations

import base64
import hashlib
import hmac

SIGNATURE_HEADER = "x-twitter-webhooks-signature"


def _hmac_sha256_b64(secret: str, message: bytes) -> str:
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def crc_response_token(consumer_secret: str, crc_token: str) -> str:
    """The ``response_token`` X expects for a CRC challenge."""
    return "sha256=" + _hmac_sha256_b64(consumer_secret, crc_token.encode())


def sign_body(consumer_secret: str, body: bytes) -> str:
    """The signature header value X sends for ``body`` (also used by tests and the sandbox)."""
    return "sha256=" + _hmac_sha256_b64(consumer_secret, body)


def signature_is_valid(consumer_secret: str, body: bytes, header_value: str | None) -> bool:
    """Check a delivery's signature over the raw body, in constant time."""
    if not header_value:
        return False
    expected = sign_body(consumer_secret, body)
    return hmac.compare_digest(expected.encode(), header_value.strip().encode())
