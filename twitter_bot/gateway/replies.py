"""The bot's replies (gateway-api.md, section 2): typed values and a validating parser.

The same parser reads the gateway's answer, where a bad message is skipped and
the rest kept (`parse_replies`), and the push endpoint's body, where the first
violation is refused with the field it concerns (`parse_replies_strict`).
Unknown fields are ignored; an optional string that is empty counts as absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

TEXT_MAX = 10_000
QUICK_REPLIES_MAX = 20
LABEL_MAX = 36
DESCRIPTION_MAX = 72
PAYLOAD_MAX = 1_000

MediaKind = Literal["image", "gif", "video"]
_MEDIA_KINDS: dict[str, MediaKind] = {"image": "image", "gif": "gif", "video": "video"}


@dataclass(frozen=True, slots=True)
class QuickReply:
    """One option offered under a text reply; `payload` comes back when the user picks it."""

    label: str
    description: str | None
    payload: str


@dataclass(frozen=True, slots=True)
class TextReply:
    """A text DM, optionally with quick-reply options."""

    text: str
    quick_replies: tuple[QuickReply, ...] = ()


@dataclass(frozen=True, slots=True)
class MediaReply:
    """A DM carrying a file the bridge downloads from `url`, with an optional caption."""

    kind: MediaKind
    url: str
    text: str | None = None
    alt_text: str | None = None


@dataclass(frozen=True, slots=True)
class TypingReply:
    """A typing indicator."""


Reply = TextReply | MediaReply | TypingReply


@dataclass(frozen=True, slots=True)
class ReplyViolation:
    """What is wrong and where, e.g. `messages[2].quick_replies[0].label`."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class InvalidRepliesError(ValueError):
    """A replies body that can't be accepted; `violation` names the field."""

    def __init__(self, violation: ReplyViolation) -> None:
        super().__init__(str(violation))
        self.violation = violation

    @property
    def field(self) -> str:
        """The JSON-pointer-like path of the offending value."""
        return self.violation.field


@dataclass(frozen=True, slots=True)
class SkippedReply:
    """A message left out of the answer: its index in `messages` and why (naming the field)."""

    index: int
    reason: str


@dataclass(frozen=True, slots=True)
class ParsedReplies:
    """The valid replies in order, and the messages skipped."""

    replies: list[Reply]
    skipped: list[SkippedReply]


def parse_replies(body: Any) -> ParsedReplies:
    """Parse a gateway answer leniently: invalid messages are skipped, the rest kept in order.

    Raises InvalidRepliesError when the body itself is not `{"messages": [...]}`.
    """
    replies: list[Reply] = []
    skipped: list[SkippedReply] = []
    for index, raw in enumerate(_messages(body)):
        try:
            replies.append(_parse_message(raw, f"messages[{index}]"))
        except InvalidRepliesError as exc:
            skipped.append(SkippedReply(index, str(exc.violation)))
    return ParsedReplies(replies, skipped)


def parse_replies_strict(body: Any) -> list[Reply]:
    """Parse a body all-or-nothing; raises InvalidRepliesError at the first violation."""
    return [_parse_message(raw, f"messages[{i}]") for i, raw in enumerate(_messages(body))]


def _invalid(field: str, reason: str) -> InvalidRepliesError:
    return InvalidRepliesError(ReplyViolation(field, reason))


def _messages(body: Any) -> list[Any]:
    if not isinstance(body, dict):
        raise _invalid("body", "must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _invalid("messages", "must be a list")
    return messages


def _object(raw: Any, path: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _invalid(path, "must be an object")
    return raw


def _parse_message(raw: Any, path: str) -> Reply:
    message = _object(raw, path)
    kind = message.get("type")
    if not isinstance(kind, str):
        raise _invalid(f"{path}.type", "must be a string")
    if kind == "text":
        return _text_reply(message, path)
    if kind == "typing":
        return TypingReply()
    media_kind = _MEDIA_KINDS.get(kind)
    if media_kind is None:
        raise _invalid(f"{path}.type", f"unknown type {kind[:40]!r}")
    return _media_reply(message, media_kind, path)


def _text_reply(message: dict[str, Any], path: str) -> TextReply:
    text = _string(message, "text", path, min_len=1, max_len=TEXT_MAX)
    options = _quick_replies(message.get("quick_replies"), f"{path}.quick_replies")
    return TextReply(text, options)


def _quick_replies(raw: Any, path: str) -> tuple[QuickReply, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _invalid(path, "must be a list")
    if not 1 <= len(raw) <= QUICK_REPLIES_MAX:
        raise _invalid(path, f"must hold 1..{QUICK_REPLIES_MAX} options, got {len(raw)}")
    return tuple(_quick_reply(option, f"{path}[{i}]") for i, option in enumerate(raw))


def _quick_reply(raw: Any, path: str) -> QuickReply:
    option = _object(raw, path)
    return QuickReply(
        label=_string(option, "label", path, min_len=1, max_len=LABEL_MAX),
        description=_optional_string(option, "description", path, max_len=DESCRIPTION_MAX),
        payload=_string(option, "payload", path, min_len=0, max_len=PAYLOAD_MAX),
    )


def _media_reply(message: dict[str, Any], kind: MediaKind, path: str) -> MediaReply:
    url = _string(message, "url", path, min_len=1)
    if not _is_http_url(url):
        raise _invalid(f"{path}.url", "must be an http or https URL")
    return MediaReply(
        kind=kind,
        url=url,
        text=_optional_string(message, "text", path),
        alt_text=_optional_string(message, "alt_text", path),
    )


def _string(
    obj: dict[str, Any], key: str, path: str, *, min_len: int, max_len: int | None = None
) -> str:
    value = obj.get(key)
    if value is None:
        raise _invalid(f"{path}.{key}", "is required")
    if not isinstance(value, str):
        raise _invalid(f"{path}.{key}", "must be a string")
    if len(value) < min_len or (max_len is not None and len(value) > max_len):
        bounds = f"{min_len}..{max_len}" if max_len is not None else f"at least {min_len}"
        raise _invalid(f"{path}.{key}", f"must be {bounds} characters, got {len(value)}")
    return value


def _optional_string(
    obj: dict[str, Any], key: str, path: str, *, max_len: int | None = None
) -> str | None:
    if obj.get(key) is None:
        return None
    return _string(obj, key, path, min_len=0, max_len=max_len) or None


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in {"http", "https"} and bool(parts.hostname)


def reply_to_json(reply: Reply) -> dict[str, Any]:
    """A reply as the section-2 message object it was parsed from (parse_replies inverts it)."""
    if isinstance(reply, TextReply):
        text: dict[str, Any] = {"type": "text", "text": reply.text}
        if reply.quick_replies:
            text["quick_replies"] = [
                {"label": q.label, "payload": q.payload}
                | ({"description": q.description} if q.description else {})
                for q in reply.quick_replies
            ]
        return text
    if isinstance(reply, MediaReply):
        media: dict[str, Any] = {"type": reply.kind, "url": reply.url}
        if reply.text:
            media["text"] = reply.text
        if reply.alt_text:
            media["alt_text"] = reply.alt_text
        return media
    return {"type": "typing"}
