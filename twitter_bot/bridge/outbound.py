"""Turns a bot's replies into DMs to one X user (gateway-api.md section 2, x-api.md 6-7).

`XReplySender` knows nothing of queues or the gateway client: it sends a list of
replies in order under the bot's own credentials, reports progress after each one,
and stops at the first X error with `ReplySendError`, so the caller can resume
(`start_at`) or dead-letter from where it stopped.

Judgement calls, so the behaviour is predictable:

- A text over 10,000 characters is split on whitespace (a word longer than that is
  cut hard); quick replies ride on the last DM. A failed chunk makes the whole reply
  count as unsent, so a retry may repeat the chunks already out.
- v1.1 quick replies become native options. X wants every option to have a
  description or none to; when only some have one, all descriptions are dropped
  (an empty description is not a safe stand-in), the labels and payloads kept.
- v2 has no quick replies: a numbered list is appended to the text (its own DM if
  it does not fit) and remembered in `OfferedOptions` once that DM is out. A text
  without options leaves the remembered list alone: the user may still answer it.
- A media file that can't be fetched (error status, too big, timeout, bad
  redirect, empty) is skipped with a warning and its caption sent alone. A media
  id X refuses when sending (324/325) is uploaded again once from the same bytes.
- Typing indicators and read receipts use the v1.1 endpoints whatever `dm_api`
  says (v2 has none). A typing indicator in a reply list is best-effort: its
  failure is logged and the real replies still go out.
"""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import hdrs
from yarl import URL

from twitter_bot.bridge.options import OfferedOption, OfferedOptions
from twitter_bot.gateway.replies import MediaKind, MediaReply, QuickReply, Reply, TextReply
from twitter_bot.metrics import Metrics
from twitter_bot.settings import BotSettings, DmApi, MessagingSettings
from twitter_bot.x import (
    MAX_CHUNK_BYTES,
    QuickReplyOption,
    SentDm,
    XBadMedia,
    XClient,
    XCredentials,
    XError,
)

log = structlog.get_logger(__name__)

MAX_DM_CHARS = 10_000
MAX_REDIRECTS = 5
_STREAM_CHUNK = 64 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MEDIA_CATEGORIES: dict[MediaKind, str] = {
    "image": "dm_image",
    "gif": "dm_gif",
    "video": "dm_video",
}
_FALLBACK_TYPES: dict[MediaKind, str] = {
    "image": "image/jpeg",
    "gif": "image/gif",
    "video": "video/mp4",
}

OnSent = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class MediaLimits:
    """The largest file, in bytes, the bridge downloads for each media kind."""

    image: int
    gif: int
    video: int

    @classmethod
    def from_settings(cls, messaging: MessagingSettings) -> MediaLimits:
        """The limits configured under `webhooks-messaging`."""
        return cls(
            image=messaging.media_max_image_bytes,
            gif=messaging.media_max_gif_bytes,
            video=messaging.media_max_video_bytes,
        )

    def for_kind(self, kind: MediaKind) -> int:
        """The limit for one kind of media."""
        limits: dict[MediaKind, int] = {"image": self.image, "gif": self.gif, "video": self.video}
        return limits[kind]


class ReplySendError(Exception):
    """Sending stopped at replies[sent]; the replies before it are out.

    `cause` is the X error; `cause.retryable` tells the caller whether to retry
    from `sent` later or to dead-letter.
    """

    def __init__(self, sent: int, cause: XError) -> None:
        super().__init__(f"reply {sent} not sent: {cause}")
        self.sent = sent
        self.cause = cause

    @property
    def retryable(self) -> bool:
        """Whether the same replies may go out later (the cause's verdict)."""
        return self.cause.retryable


class _DownloadFailed(Exception):
    """A media file could not be fetched; `reason` is safe to log (no URL, no query)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Download:
    data: bytes
    media_type: str


@dataclass(frozen=True)
class _Target:
    """Who sends what to whom: the context of one reply, for sending and logging."""

    bot: BotSettings
    creds: XCredentials
    recipient_id: str
    conversation_id: str
    index: int
    kind: str


class XReplySender:
    """Sends bot replies as DMs to one recipient at a time, in order, as the bot."""

    def __init__(
        self,
        x: XClient,
        downloads: aiohttp.ClientSession,
        *,
        dm_api: DmApi,
        limits: MediaLimits,
        options: OfferedOptions,
        download_timeout: float = 30.0,
        upload_chunk_size: int = MAX_CHUNK_BYTES,
        metrics: Metrics | None = None,
    ) -> None:
        self._x = x
        self._downloads = downloads
        self._dm_api = dm_api
        self._metrics = metrics
        self._limits = limits
        self._options = options
        self._download_timeout = download_timeout
        self._upload_chunk_size = upload_chunk_size

    async def send_replies(
        self,
        bot: BotSettings,
        recipient_id: str,
        conversation_id: str,
        replies: Sequence[Reply],
        *,
        start_at: int = 0,
        on_sent: OnSent | None = None,
    ) -> int:
        """Send replies[start_at:] in order; `on_sent(i + 1)` follows each reply i sent.

        Returns len(replies). Raises ReplySendError at the first X error; anything
        else (a bug, a failing `on_sent`) propagates unchanged.
        """
        if not 0 <= start_at <= len(replies):
            raise ValueError(f"start_at {start_at} outside 0..{len(replies)}")
        creds = _credentials(bot)
        for index in range(start_at, len(replies)):
            reply = replies[index]
            target = _Target(bot, creds, recipient_id, conversation_id, index, _kind_of(reply))
            try:
                await self._send_one(target, reply)
            except XError as exc:
                raise ReplySendError(index, exc) from exc
            if on_sent is not None:
                await on_sent(index + 1)
        return len(replies)

    async def mark_read(self, bot: BotSettings, recipient_id: str, last_read_event_id: str) -> None:
        """Mark the conversation read up to an event (v1.1); raises XError."""
        await self._x.mark_read(_credentials(bot), recipient_id, last_read_event_id)

    async def typing(self, bot: BotSettings, recipient_id: str) -> None:
        """Show the typing indicator to the recipient (v1.1); raises XError."""
        await self._x.indicate_typing(_credentials(bot), recipient_id)

    async def _send_one(self, target: _Target, reply: Reply) -> None:
        if isinstance(reply, TextReply):
            await self._send_text(target, reply)
        elif isinstance(reply, MediaReply):
            await self._send_media(target, reply)
        else:
            await self._send_typing(target)

    async def _send_text(self, target: _Target, reply: TextReply) -> None:
        if self._dm_api == "v1.1":
            chunks = split_text(reply.text)
            native = native_options(reply.quick_replies)
            for number, chunk in enumerate(chunks, start=1):
                last = number == len(chunks)
                await self._send_dm(target, chunk, options=native if last else ())
            return
        for chunk in with_numbered_list(reply.text, reply.quick_replies):
            await self._send_dm(target, chunk)
        if reply.quick_replies:
            self._options.remember(
                target.conversation_id,
                [OfferedOption(option.label, option.payload) for option in reply.quick_replies],
            )

    async def _send_typing(self, target: _Target) -> None:
        try:
            await self._x.indicate_typing(target.creds, target.recipient_id)
        except XError as exc:
            log.warning(
                "bridge.typing_failed",
                bot_id=target.bot.bot_id,
                conversation_id=target.conversation_id,
                reply_index=target.index,
                error=type(exc).__name__,
                retryable=exc.retryable,
            )

    async def _send_media(self, target: _Target, reply: MediaReply) -> None:
        chunks = split_text(reply.text or "")
        try:
            download = await self._download(reply.url, reply.kind)
        except _DownloadFailed as failed:
            log.warning(
                "bridge.media_download_failed",
                bot_id=target.bot.bot_id,
                conversation_id=target.conversation_id,
                reply_index=target.index,
                kind=reply.kind,
                host=_host(reply.url),
                reason=failed.reason,
            )
            if reply.text:
                for chunk in chunks:
                    await self._send_dm(target, chunk)
            return
        await self._send_with_media(target, reply.kind, download, chunks[0])
        for chunk in chunks[1:]:
            await self._send_dm(target, chunk)

    async def _send_with_media(
        self, target: _Target, kind: MediaKind, download: _Download, text: str
    ) -> None:
        """Upload and send; a media id refused on sending is uploaded once more."""
        media_id = await self._upload(target, kind, download)
        try:
            await self._send_dm(target, text, media_id=media_id)
        except XBadMedia as exc:
            log.info(
                "bridge.media_reupload",
                bot_id=target.bot.bot_id,
                conversation_id=target.conversation_id,
                reply_index=target.index,
                code=exc.code,
            )
            media_id = await self._upload(target, kind, download)
            await self._send_dm(target, text, media_id=media_id)

    async def _upload(self, target: _Target, kind: MediaKind, download: _Download) -> str:
        return await self._x.upload_media(
            target.creds,
            download.data,
            download.media_type,
            _MEDIA_CATEGORIES[kind],
            chunk_size=self._upload_chunk_size,
        )

    async def _send_dm(
        self,
        target: _Target,
        text: str,
        *,
        options: Sequence[QuickReplyOption] = (),
        media_id: str | None = None,
    ) -> SentDm:
        try:
            if self._dm_api == "v1.1":
                sent = await self._x.send_dm_v11(
                    target.creds,
                    target.recipient_id,
                    text,
                    quick_reply_options=options or None,
                    media_id=media_id,
                )
            else:
                sent = await self._x.send_dm_v2(
                    target.creds, target.recipient_id, text, media_id=media_id
                )
        except XError as exc:
            self._count_dm(target, "failed", getattr(exc, "code", None))
            raise
        self._count_dm(target, "sent", None)
        log.info(
            "bridge.dm_sent",
            bot_id=target.bot.bot_id,
            conversation_id=target.conversation_id,
            reply_index=target.index,
            kind=target.kind,
            event_id=sent.event_id,
            dm_api=self._dm_api,
        )
        return sent

    def _count_dm(self, target: _Target, outcome: str, code: int | None) -> None:
        if self._metrics is not None:
            self._metrics.dms.labels(target.bot.bot_id, outcome, str(code or "")).inc()

    async def _download(self, url: str, kind: MediaKind) -> _Download:
        """Fetch a media file within the time and size limits, or raise _DownloadFailed."""
        try:
            async with asyncio.timeout(self._download_timeout):
                return await self._fetch(url, kind)
        except TimeoutError as exc:
            raise _DownloadFailed(f"timed out after {self._download_timeout:g} s") from exc
        except aiohttp.ClientError as exc:
            raise _DownloadFailed(f"network error: {type(exc).__name__}") from exc

    async def _fetch(self, url: str, kind: MediaKind) -> _Download:
        """Follow at most MAX_REDIRECTS redirects, each to an http(s) URL, then read."""
        current = _http_url(url)
        for _ in range(MAX_REDIRECTS + 1):
            async with self._downloads.get(current, allow_redirects=False) as response:
                if response.status not in _REDIRECT_STATUSES:
                    return await _read_media(response, current, kind, self._limits.for_kind(kind))
                current = _redirect_target(current, response.headers.get(hdrs.LOCATION))
        raise _DownloadFailed(f"more than {MAX_REDIRECTS} redirects")


def split_text(text: str, limit: int = MAX_DM_CHARS) -> list[str]:
    """Cut a text into chunks of at most `limit` characters at whitespace.

    The whitespace at a cut is dropped; a single word longer than `limit` is cut
    hard. Always returns at least one chunk (the text itself when short enough).
    """
    chunks: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = next((i for i in range(limit, 0, -1) if rest[i].isspace()), limit)
        chunk = rest[:cut].rstrip()
        if not chunk:
            cut, chunk = limit, rest[:limit]
        chunks.append(chunk)
        rest = rest[cut:].lstrip()
    if rest or not chunks:
        chunks.append(rest)
    return chunks


def single_dm_text(reply: Reply, dm_api: DmApi) -> str | None:
    """The text of the one DM ``reply`` goes out as, or None when it is not one text DM.

    A text split over several DMs, media and typing are None, and so is a v2 text with
    options (its DM is followed by remembering them, which a skipped send would not do).
    """
    if not isinstance(reply, TextReply) or (dm_api == "v2" and reply.quick_replies):
        return None
    chunks = split_text(reply.text)
    return chunks[0] if len(chunks) == 1 else None


def native_options(quick_replies: Sequence[QuickReply]) -> tuple[QuickReplyOption, ...]:
    """v1.1 quick-reply options; descriptions kept only when every option has one."""
    all_described = all(option.description for option in quick_replies)
    return tuple(
        QuickReplyOption(
            option.label, option.description if all_described else None, option.payload
        )
        for option in quick_replies
    )


def numbered_list(quick_replies: Sequence[QuickReply]) -> str:
    """The v2 stand-in for quick replies: "1. Label" or "1. Label — description" lines."""
    return "\n".join(
        f"{number}. {option.label}" + (f" — {option.description}" if option.description else "")
        for number, option in enumerate(quick_replies, start=1)
    )


def with_numbered_list(text: str, quick_replies: Sequence[QuickReply]) -> list[str]:
    """The DMs of a v2 text reply: the text's chunks, the numbered list after the last.

    The list joins the last chunk when both fit in one DM, else it is a DM of its own.
    """
    chunks = split_text(text)
    if not quick_replies:
        return chunks
    block = numbered_list(quick_replies)
    joined = f"{chunks[-1]}\n\n{block}"
    if len(joined) <= MAX_DM_CHARS:
        chunks[-1] = joined
    else:
        chunks.extend(split_text(block))
    return chunks


def _credentials(bot: BotSettings) -> XCredentials:
    return XCredentials(bot.access_token.value, bot.access_secret.value)


def _kind_of(reply: Reply) -> str:
    if isinstance(reply, TextReply):
        return "text"
    if isinstance(reply, MediaReply):
        return reply.kind
    return "typing"


def _host(url: str) -> str | None:
    """The host alone: a URL's path and query may carry signed tokens, never logged."""
    try:
        return URL(url).host
    except (TypeError, ValueError):
        return None


def _http_url(url: str) -> URL:
    try:
        parsed = URL(url)
    except (TypeError, ValueError) as exc:
        raise _DownloadFailed("malformed URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise _DownloadFailed("not an http(s) URL")
    return parsed


def _redirect_target(current: URL, location: str | None) -> URL:
    if not location:
        raise _DownloadFailed("redirect without a Location")
    try:
        joined = current.join(URL(location))
    except (TypeError, ValueError) as exc:
        raise _DownloadFailed("malformed redirect Location") from exc
    if joined.scheme not in ("http", "https") or not joined.host:
        raise _DownloadFailed("redirect to a non-http(s) URL")
    return joined


async def _read_media(
    response: aiohttp.ClientResponse, url: URL, kind: MediaKind, limit: int
) -> _Download:
    """The body of a 2xx answer, refused past `limit` bytes (declared or streamed)."""
    if not 200 <= response.status < 300:
        raise _DownloadFailed(f"HTTP {response.status}")
    too_big = f"larger than {limit} bytes"
    if response.content_length is not None and response.content_length > limit:
        raise _DownloadFailed(too_big)
    data = bytearray()
    async for chunk in response.content.iter_chunked(_STREAM_CHUNK):
        data += chunk
        if len(data) > limit:
            raise _DownloadFailed(too_big)
    if not data:
        raise _DownloadFailed("empty body")
    return _Download(bytes(data), _media_type(response, url, kind))


def _media_type(response: aiohttp.ClientResponse, url: URL, kind: MediaKind) -> str:
    """The answer's image/ or video/ Content-Type, else a guess from the URL's extension.

    With neither, the kind's most common type (image/jpeg, image/gif, video/mp4).
    """
    if hdrs.CONTENT_TYPE in response.headers and response.content_type.startswith(
        ("image/", "video/")
    ):
        return response.content_type
    guessed, _ = mimetypes.guess_type(url.path)
    if guessed and guessed.startswith(("image/", "video/")):
        return guessed
    return _FALLBACK_TYPES[kind]
