"""The async X API client: DMs (v1.1 and v2), typing, read receipts, chunked media upload.

It knows nothing of bots, queues or the gateway; every call takes the acting account's
credentials. The aiohttp session belongs to the caller.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from twitter_bot.x.errors import (
    XApiError,
    XMediaProcessingError,
    XTransportError,
    error_from_response,
)
from twitter_bot.x.models import QuickReplyOption, RateLimit, SentDm, XCredentials
from twitter_bot.x.oauth import sign_request
from twitter_bot.x.payloads import (
    PayloadError,
    media_id_of,
    processing_info,
    v2_event_ids,
    v2_message,
    v11_event_id,
    v11_message_event,
)

DEFAULT_TIMEOUT = 10.0
MAX_CHUNK_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_PROCESSING_WAIT = 120.0
MAX_STATUS_POLLS = 200
_REDACTED = "<redacted>"
_VERSION_SUFFIXES = ("1.1/", "2/")

Sleep = Callable[[float], Awaitable[None]]
_T = TypeVar("_T")


@dataclass(frozen=True)
class _Answer:
    """One HTTP answer, read in full."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def rate_limit(self) -> RateLimit:
        return RateLimit.from_headers(self.headers)

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise _unexpected(self, "response body is not JSON") from exc


def _unexpected(answer: _Answer, reason: str) -> XApiError:
    """A 2xx answer we cannot read: not retryable, since X may have acted on the request."""
    return XApiError(
        answer.status, None, f"unexpected answer: {reason}", rate_limit=answer.rate_limit
    )


def normalise_api_base(url: str) -> str:
    """`scheme://host/` with a trailing slash and no trailing "1.1/" or "2/" segment."""
    base = url if url.endswith("/") else f"{url}/"
    for suffix in _VERSION_SUFFIXES:
        if base.endswith(f"/{suffix}"):
            return base[: -len(suffix)]
    return base


class XClient:
    """Signs and sends X API calls as the account whose `XCredentials` are given."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        consumer_key: str,
        consumer_secret: str,
        api_base_url: str,
        upload_url: str,
        timeout: float = DEFAULT_TIMEOUT,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._session = session
        self._consumer_key = consumer_key
        self._consumer_secret = consumer_secret
        self._api = normalise_api_base(api_base_url)
        self._upload = upload_url if upload_url.endswith("/") else f"{upload_url}/"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"XClient(api_base_url={self._api!r}, upload_url={self._upload!r})"

    async def send_dm_v11(
        self,
        creds: XCredentials,
        recipient_id: str,
        text: str,
        *,
        quick_reply_options: Sequence[QuickReplyOption] | None = None,
        media_id: str | None = None,
    ) -> SentDm:
        """Send a DM with the v1.1 events API; quick replies and one media id are optional."""
        body = v11_message_event(recipient_id, text, quick_reply_options, media_id)
        answer = await self._call(
            creds, "POST", f"{self._api}1.1/direct_messages/events/new.json", json_body=body
        )
        event_id = self._read(answer, v11_event_id)
        return SentDm(event_id=event_id, rate_limit=answer.rate_limit)

    async def send_dm_v2(
        self,
        creds: XCredentials,
        participant_id: str,
        text: str,
        *,
        media_id: str | None = None,
    ) -> SentDm:
        """Send a DM with the v2 API (no quick replies there)."""
        url = f"{self._api}2/dm_conversations/with/{quote(participant_id, safe='')}/messages"
        answer = await self._call(creds, "POST", url, json_body=v2_message(text, media_id))
        event_id, conversation_id = self._read(answer, v2_event_ids)
        return SentDm(event_id, answer.rate_limit, conversation_id)

    async def indicate_typing(self, creds: XCredentials, recipient_id: str) -> RateLimit:
        """Show the typing indicator to `recipient_id` (v1.1, form-encoded, 204)."""
        answer = await self._call(
            creds,
            "POST",
            f"{self._api}1.1/direct_messages/indicate_typing.json",
            form=[("recipient_id", recipient_id)],
        )
        return answer.rate_limit

    async def mark_read(
        self, creds: XCredentials, recipient_id: str, last_read_event_id: str
    ) -> RateLimit:
        """Mark the conversation with `recipient_id` read up to an event (v1.1, 204)."""
        answer = await self._call(
            creds,
            "POST",
            f"{self._api}1.1/direct_messages/mark_read.json",
            form=[("last_read_event_id", last_read_event_id), ("recipient_id", recipient_id)],
        )
        return answer.rate_limit

    async def upload_media(
        self,
        creds: XCredentials,
        data: bytes,
        media_type: str,
        media_category: str,
        *,
        chunk_size: int = MAX_CHUNK_BYTES,
        max_processing_wait: float = DEFAULT_MAX_PROCESSING_WAIT,
    ) -> str:
        """Chunked upload (INIT, APPEND..., FINALIZE, STATUS) for DMs; returns the media id.

        The id may only be used by the same account, within 24 hours.
        """
        if not data:
            raise ValueError("no media data to upload")
        if not 0 < chunk_size <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_size must be in 1..{MAX_CHUNK_BYTES}")
        media_id = await self._media_init(creds, len(data), media_type, media_category)
        for index, offset in enumerate(range(0, len(data), chunk_size)):
            await self._media_append(creds, media_id, index, data[offset : offset + chunk_size])
        info = await self._media_finalize(creds, media_id)
        await self._await_processing(creds, media_id, info, max_processing_wait)
        return media_id

    async def _media_init(
        self, creds: XCredentials, total_bytes: int, media_type: str, media_category: str
    ) -> str:
        form = [
            ("command", "INIT"),
            ("total_bytes", str(total_bytes)),
            ("media_type", media_type),
            ("media_category", media_category),
            ("shared", "true"),
        ]
        answer = await self._call(creds, "POST", self._upload_endpoint, form=form)
        return self._read(answer, media_id_of)

    async def _media_append(
        self, creds: XCredentials, media_id: str, segment_index: int, chunk: bytes
    ) -> None:
        multipart = aiohttp.FormData()
        multipart.add_field("command", "APPEND")
        multipart.add_field("media_id", media_id)
        multipart.add_field("segment_index", str(segment_index))
        # A BytesIO, not bytes: aiohttp warns (ResourceWarning) on large raw byte fields.
        multipart.add_field(
            "media", io.BytesIO(chunk), filename="blob", content_type="application/octet-stream"
        )
        await self._call(creds, "POST", self._upload_endpoint, multipart=multipart)

    async def _media_finalize(self, creds: XCredentials, media_id: str) -> dict[str, Any] | None:
        form = [("command", "FINALIZE"), ("media_id", media_id)]
        answer = await self._call(creds, "POST", self._upload_endpoint, form=form)
        return processing_info(answer.json())

    async def _media_status(self, creds: XCredentials, media_id: str) -> dict[str, Any] | None:
        query = [("command", "STATUS"), ("media_id", media_id)]
        answer = await self._call(creds, "GET", self._upload_endpoint, query=query)
        return processing_info(answer.json())

    async def _await_processing(
        self,
        creds: XCredentials,
        media_id: str,
        info: dict[str, Any] | None,
        max_wait: float,
    ) -> None:
        """Poll STATUS after each `check_after_secs` until succeeded, failed or out of time."""
        waited = 0.0
        for _ in range(MAX_STATUS_POLLS):
            delay = _processing_delay(info)
            if delay is None:
                return
            if waited + delay > max_wait:
                break
            await self._sleep(delay)
            waited += delay
            info = await self._media_status(creds, media_id)
        raise XMediaProcessingError(
            f"media {media_id} still processing after {waited:.0f} s", timed_out=True
        )

    @property
    def _upload_endpoint(self) -> str:
        return f"{self._upload}media/upload.json"

    def _read(self, answer: _Answer, parse: Callable[[Any], _T]) -> _T:
        try:
            return parse(answer.json())
        except PayloadError as exc:
            raise _unexpected(answer, str(exc)) from exc

    async def _call(
        self,
        creds: XCredentials,
        method: str,
        url: str,
        *,
        query: Sequence[tuple[str, str]] | None = None,
        form: Sequence[tuple[str, str]] | None = None,
        json_body: Mapping[str, Any] | None = None,
        multipart: aiohttp.FormData | None = None,
    ) -> _Answer:
        """Sign, send and read one call; raise the typed error for anything but 2xx."""
        uri = f"{url}?{urlencode(query, quote_via=quote)}" if query else url
        signed = sign_request(
            method,
            uri,
            consumer_key=self._consumer_key,
            consumer_secret=self._consumer_secret,
            token=creds.token,
            token_secret=creds.secret,
            form=form,
        )
        headers = dict(signed.headers)
        data: bytes | aiohttp.FormData | None = signed.body
        if json_body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(json_body).encode("utf-8")
        elif multipart is not None:
            data = multipart
        answer = await self._send(creds, method, signed.uri, headers, data)
        if not 200 <= answer.status < 300:
            raise error_from_response(
                answer.status, answer.headers, answer.body, self._redactor(creds)
            )
        return answer

    async def _send(
        self,
        creds: XCredentials,
        method: str,
        uri: str,
        headers: dict[str, str],
        data: bytes | aiohttp.FormData | None,
    ) -> _Answer:
        try:
            async with self._session.request(
                method, URL(uri, encoded=True), headers=headers, data=data, timeout=self._timeout
            ) as response:
                body = await response.read()
                return _Answer(response.status, response.headers, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            path = URL(uri, encoded=True).path
            detail = self._redactor(creds)(f"{method} {path}: {type(exc).__name__}: {exc}")
            raise XTransportError(detail) from exc

    def _redactor(self, creds: XCredentials) -> Callable[[str], str]:
        secrets = [s for s in (self._consumer_secret, creds.secret, creds.token) if len(s) >= 4]

        def redact(text: str) -> str:
            for secret in secrets:
                text = text.replace(secret, _REDACTED)
            return text

        return redact


def _processing_failed(error: Any) -> XMediaProcessingError:
    details: dict[str, Any] = error if isinstance(error, dict) else {}
    code = details.get("code")
    message = details.get("message") or details.get("name") or "media processing failed"
    return XMediaProcessingError(str(message), code=code if isinstance(code, int) else None)


def _processing_delay(info: dict[str, Any] | None) -> float | None:
    """Seconds to wait before the next STATUS, or None when processing succeeded."""
    if info is None:
        return None
    state = info.get("state")
    if state == "succeeded":
        return None
    if state == "failed":
        raise _processing_failed(info.get("error"))
    delay = info.get("check_after_secs", 1)
    return max(0.0, float(delay)) if isinstance(delay, int | float) else 1.0
