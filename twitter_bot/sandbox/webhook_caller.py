"""X's side of the webhook: signed AAA deliveries and CRC challenges, sent as X sends them."""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from twitter_bot.webhook.signature import SIGNATURE_HEADER, crc_response_token, sign_body

_TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass(frozen=True)
class XAccount:
    """An X account as a delivery's ``users`` map describes it."""

    user_id: str
    name: str
    screen_name: str

    def as_user(self) -> dict[str, Any]:
        return {
            "id": self.user_id,
            "name": self.name,
            "screen_name": self.screen_name,
            "protected": False,
            "verified": False,
        }


def dm_delivery(
    *,
    for_user_id: str,
    event_id: str,
    sender: XAccount,
    recipient: XAccount,
    text: str,
    quick_reply_metadata: str | None = None,
    created_ms: int | None = None,
) -> dict[str, Any]:
    """An Account Activity delivery of one DM (x-api.md §3), as X posts it to the webhook."""
    message_data: dict[str, Any] = {
        "text": text,
        "entities": {"hashtags": [], "symbols": [], "user_mentions": [], "urls": []},
    }
    if quick_reply_metadata is not None:
        message_data["quick_reply_response"] = {
            "type": "options",
            "metadata": quick_reply_metadata,
        }
    event = {
        "type": "message_create",
        "id": event_id,
        "created_timestamp": str(created_ms or int(time.time() * 1000)),
        "message_create": {
            "target": {"recipient_id": recipient.user_id},
            "sender_id": sender.user_id,
            "message_data": message_data,
        },
    }
    return {
        "for_user_id": for_user_id,
        "direct_message_events": [event],
        "users": {
            sender.user_id: sender.as_user(),
            recipient.user_id: recipient.as_user(),
        },
    }


@dataclass(frozen=True)
class WebhookAnswer:
    """How the daemon answered one delivery."""

    status: int | None
    seconds: float
    body: Any
    error: str | None = None

    @property
    def queued(self) -> int:
        """DMs the daemon said it persisted before answering (its 200 body's ``queued``)."""
        if self.status == 200 and isinstance(self.body, dict):
            value = self.body.get("queued")
            if isinstance(value, int):
                return value
        return 0


@dataclass(frozen=True)
class CrcResult:
    """One challenge-response check of the daemon's webhook."""

    ok: bool
    status: int | None
    seconds: float
    at: float
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "status": self.status,
            "ms": round(self.seconds * 1000, 1),
            "at": self.at,
            "detail": self.detail,
        }


class WebhookCaller:
    """Calls the daemon's webhook the way X does, with the app's consumer secret."""

    def __init__(
        self, session: Callable[[], aiohttp.ClientSession], url: str, consumer_secret: str
    ) -> None:
        self._session = session
        self.url = url
        self._secret = consumer_secret

    async def deliver(self, delivery: dict[str, Any]) -> WebhookAnswer:
        """POST a delivery signed over its raw bytes (``x-twitter-webhooks-signature``)."""
        raw = json.dumps(delivery).encode()
        headers = {
            SIGNATURE_HEADER: sign_body(self._secret, raw),
            "Content-Type": "application/json; charset=utf-8",
        }
        started = time.perf_counter()
        try:
            async with self._session().post(
                self.url, data=raw, headers=headers, timeout=_TIMEOUT
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return WebhookAnswer(None, time.perf_counter() - started, None, repr(exc)[:300])
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text[:300]
        return WebhookAnswer(status, time.perf_counter() - started, body)

    async def crc(self) -> CrcResult:
        """``GET webhook?crc_token=…``, checking the ``response_token`` as X does."""
        token = secrets.token_urlsafe(24)
        started = time.perf_counter()
        at = time.time()
        try:
            async with self._session().get(
                self.url,
                params={"crc_token": token, "nonce": secrets.token_hex(8)},
                timeout=_TIMEOUT,
            ) as response:
                status = response.status
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return CrcResult(False, None, time.perf_counter() - started, at, repr(exc)[:300])
        ok, detail = _judge_crc(status, text, crc_response_token(self._secret, token))
        return CrcResult(ok, status, time.perf_counter() - started, at, detail)


def _judge_crc(status: int, text: str, expected: str) -> tuple[bool, str]:
    if status != 200:
        return False, f"HTTP {status}: {text[:200]}"
    try:
        given = json.loads(text).get("response_token")
    except (ValueError, AttributeError):
        return False, "the answer is not a JSON object"
    if not isinstance(given, str) or not hmac.compare_digest(given, expected):
        return False, "wrong response_token"
    return True, "response_token matches"
