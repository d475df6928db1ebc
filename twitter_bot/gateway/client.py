"""HTTP client delivering a user's message to the bot platform (gateway-api.md, sections 1-3).

It returns the bot's replies or raises a typed error saying whether to retry;
the retry itself belongs to the caller. A 2xx whose body is not
`{"messages": [...]}` is a platform bug: permanent, so it is dead-lettered with
the body excerpt instead of looping. A 2xx with an empty body (204, or 202 when
the bot will answer through the push API) means no replies.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import aiohttp
import structlog
from multidict import CIMultiDictProxy
from yarl import URL

from twitter_bot.gateway.errors import (
    GatewayError,
    GatewayPermanentError,
    GatewayTransientError,
    error_for_status,
    parse_retry_after,
)
from twitter_bot.gateway.messages import UserMessage
from twitter_bot.gateway.replies import Reply, parse_replies

log = structlog.get_logger(__name__)

REDACTED = "[redacted]"


class GatewayClient:
    """Posts `UserMessage`s to the gateway and turns its answer into replies or errors.

    The session belongs to the caller (made in the app's cleanup_ctx) and must
    have no base_url. `timeout` bounds the whole call, body included.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        token: str | None,
        timeout: float,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._session = session
        self._base = URL(base_url)
        self._token = token or None
        self._timeout = timeout

    def message_url(self, bot_id: str, conversation_id: str) -> URL:
        """`{base}/v1/bots/{bot-id}/conversations/{conversation-id}/messages`, segments quoted."""
        path = (
            f"{self._base.raw_path.rstrip('/')}/v1/bots/{_segment(bot_id)}"
            f"/conversations/{_segment(conversation_id)}/messages"
        )
        return self._base.with_path(path, encoded=True)

    async def deliver(self, message: UserMessage) -> list[Reply]:
        """Deliver one message; the bot's valid replies in order, invalid ones logged and skipped.

        Raises GatewayPermanentError or GatewayTransientError.
        """
        status, headers, body = await self._post(message)
        if not 200 <= status < 300:
            raise self._error_for(status, headers, body)
        replies = self._replies(message, status, body)
        log.debug(
            "gateway.delivered",
            bot_id=message.bot_id,
            message_id=message.message_id,
            status=status,
            replies=len(replies),
        )
        return replies

    async def _post(self, message: UserMessage) -> tuple[int, CIMultiDictProxy[str], bytes]:
        url = self.message_url(message.bot_id, message.conversation_id)
        data = json.dumps(message.to_json(), ensure_ascii=False).encode()
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._session.post(
                    url, data=data, headers=self._headers(message), allow_redirects=False
                ) as response,
            ):
                return response.status, response.headers, await response.read()
        except TimeoutError as exc:
            raise GatewayTransientError(
                f"gateway did not answer within {self._timeout:g} s"
            ) from exc
        except aiohttp.InvalidURL as exc:
            raise GatewayPermanentError(f"invalid gateway URL: {exc}") from exc
        except aiohttp.ClientError as exc:
            reason = self._redact(f"{type(exc).__name__}: {exc}")
            raise GatewayTransientError(f"gateway unreachable: {reason}") from exc

    def _headers(self, message: UserMessage) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": message.message_id,
            "X-Request-Id": message.message_id,
        }
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _error_for(self, status: int, headers: CIMultiDictProxy[str], body: bytes) -> GatewayError:
        return error_for_status(
            status,
            body_excerpt=self._excerpt(body),
            retry_after=parse_retry_after(headers.get("Retry-After")),
        )

    def _replies(self, message: UserMessage, status: int, body: bytes) -> list[Reply]:
        if status == 204 or not body.strip():
            return []
        try:
            parsed = parse_replies(json.loads(body))
        except ValueError as exc:
            raise GatewayPermanentError(
                f"gateway answered HTTP {status} with a malformed body: {exc}",
                status=status,
                body_excerpt=self._excerpt(body),
            ) from exc
        for skipped in parsed.skipped:
            log.warning(
                "gateway.reply_skipped",
                bot_id=message.bot_id,
                message_id=message.message_id,
                index=skipped.index,
                reason=skipped.reason,
            )
        return parsed.replies

    def _excerpt(self, body: bytes) -> str:
        return self._redact(body.decode("utf-8", errors="replace"))

    def _redact(self, text: str) -> str:
        return text.replace(self._token, REDACTED) if self._token else text


def _segment(value: str) -> str:
    return quote(value, safe="")
