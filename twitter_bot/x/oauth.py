"""OAuth 1.0a HMAC-SHA1 request signing with oauthlib (x-api.md section 8).

Query and form-encoded body parameters are signed; JSON and multipart bodies are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from oauthlib.oauth1 import Client

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class SignedRequest:
    """What to send: the exact URI and body that were signed, plus the headers to add."""

    uri: str
    headers: dict[str, str]
    body: bytes | None = field(default=None, repr=False)


def sign_request(
    method: str,
    uri: str,
    *,
    consumer_key: str,
    consumer_secret: str,
    token: str,
    token_secret: str,
    form: Sequence[tuple[str, str]] | None = None,
) -> SignedRequest:
    """Sign `method uri` (query included) and, when given, a form body that is sent as signed.

    Without `form` the body is left out of the signature, as X expects for JSON and multipart.
    """
    client = Client(
        consumer_key,
        client_secret=consumer_secret,
        resource_owner_key=token,
        resource_owner_secret=token_secret,
    )
    if form is None:
        signed_uri, headers, _ = client.sign(uri, http_method=method)
        return SignedRequest(uri=str(signed_uri), headers=_str_headers(headers))
    body = urlencode(list(form), quote_via=quote)
    signed_uri, headers, _ = client.sign(
        uri, http_method=method, body=body, headers={"Content-Type": FORM_CONTENT_TYPE}
    )
    return SignedRequest(
        uri=str(signed_uri), headers=_str_headers(headers), body=body.encode("ascii")
    )


def _str_headers(headers: Any) -> dict[str, str]:
    return {str(key): str(value) for key, value in headers.items()}
