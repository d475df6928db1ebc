"""Parse X webhook deliveries (AAA and XAA) into :class:`IncomingMessage` values.

Pure functions only: no I/O, no clock, no logging. The webhook handler verifies the
signature, ``json.loads`` the raw body and hands the result to :func:`parse_delivery`,
which returns the DMs to enqueue plus a record of every event it dropped (so the
caller can count them), or raises :class:`InvalidDelivery` (answered with 400).

Two envelopes are accepted (see ``spec/x-api.md`` sections 3 and 4):

* AAA: ``{"for_user_id", "direct_message_events": [...], "users": {...}, ...}``,
  or any other known AAA event kind (typing, read, tweets, ``user_event``,
  ``replay_job_status``...).
* XAA: ``{"data": {"event_type", "filter": {"user_id"}, "payload": {...}}}`` where
  the payload has the AAA shape.

Judgement calls, in one place:

* An unrecognised top-level shape is a 400 (nothing we know would send it), but a
  recognised AAA delivery carrying an extra, unknown event kind is *dropped* as
  ``not_a_dm``: X adds event kinds over time and must not get a 400 for them.
  Unknown list-valued keys count one drop per element, unknown object-valued keys
  one drop each; unknown scalar keys are treated as metadata and ignored.
* The account check comes first: DM events for an account that is not a configured
  bot are dropped as ``unknown_bot`` without being validated (not ours to judge).
  For a configured bot, a malformed ``direct_message_events`` element is a 400.
* Own messages (``sender_id`` == the account) are never answered. They are X's echo
  of what the bot sent. Asked to keep them (``keep_echoes``: the bridge uses them to
  tell whether a reply in doubt after a crash went out), they are returned as
  :class:`SentEcho` when the recipient, timestamp and text are there, else dropped as
  ``own_message``; otherwise dropped as soon as the sender is known, before
  ``message_data`` is looked at. Never a 400.
* ``created_timestamp`` is required (a string of digits or an int): X always sends
  it, and a made-up 0 would silently break ordering downstream.
* Ids must be decimal digits (string, or an exact JSON int): the conversation id is
  computed numerically from them later. Floats and booleans are rejected.
* Media links are removed from the text even when the media type is unknown and no
  attachment is produced: the link is X-internal and needs OAuth to open.
* ``target.recipient_id`` is not checked: for a delivery for the bot whose sender
  is not the bot, the recipient is the bot.
* ``users``, ``entities`` and ``attachment`` are auxiliary: when they are missing or
  oddly shaped the message is kept with less information instead of being refused.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from twitter_bot.models import Attachment, AttachmentType, IncomingMessage, Sender, SentEcho

__all__ = [
    "DropReason",
    "DroppedEvent",
    "InvalidDelivery",
    "ParsedDelivery",
    "parse_delivery",
]

DropReason = Literal["own_message", "unknown_bot", "not_a_dm", "not_message_create"]
"""Why an event was not turned into a message (a metrics label, kept small)."""

DM_EVENTS = "direct_message_events"
# AAA event arrays listed in x-api.md section 3.
AAA_EVENT_ARRAYS = frozenset(
    {
        DM_EVENTS,
        "direct_message_indicate_typing_events",
        "direct_message_mark_read_events",
        "tweet_create_events",
        "favorite_events",
        "follow_events",
        "block_events",
        "mute_events",
        "tweet_delete_events",
    }
)
# AAA events that are a single object rather than an array.
AAA_SINGLE_EVENTS = frozenset({"user_event", "replay_job_status"})
# Top-level AAA keys that describe the delivery rather than carry an event.
AAA_METADATA = frozenset({"for_user_id", "users", "apps"})
XAA_DM_RECEIVED = "dm.received"

_MEDIA_TYPES: dict[str, AttachmentType] = {
    "photo": "image",
    "animated_gif": "gif",
    "video": "video",
}
_DIGITS = re.compile(r"[0-9]+")
_MEDIA_PAGE = re.compile(r"https?://(?:www\.|mobile\.)?(?:twitter|x)\.com/messages/media/")
# A URL token ends where no further URL path character follows, so that
# "https://t.co/ab" never matches inside "https://t.co/abc".
_TOKEN_END = r"(?![A-Za-z0-9_\-/])"


class InvalidDelivery(ValueError):
    """The body is not a delivery we understand; the webhook answers 400.

    ``reason`` is a short human-readable explanation, safe to log.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DroppedEvent:
    """An event that was deliberately not turned into a message, and why."""

    reason: DropReason
    event_id: str | None = None


@dataclass
class ParsedDelivery:
    """The outcome of one POST: DMs to enqueue, in delivery order, and drops."""

    messages: list[IncomingMessage] = field(default_factory=list)
    dropped: list[DroppedEvent] = field(default_factory=list)
    # The bot accounts' own DMs, as X echoed them.
    echoes: list[SentEcho] = field(default_factory=list)


def parse_delivery(
    body: object, bot_user_ids: Container[str], *, keep_echoes: bool = False
) -> ParsedDelivery:
    """Turn a JSON-decoded webhook body into messages and dropped events.

    ``bot_user_ids`` holds the X user ids (strings) of the configured bot accounts.
    ``keep_echoes``: return the bots' own DMs as echoes; else they are dropped as
    ``own_message`` without being looked at further.
    Raises :class:`InvalidDelivery` for a body that is neither an AAA delivery nor
    an XAA envelope, or whose DM events for a configured bot are malformed.
    """
    if not isinstance(body, Mapping):
        raise InvalidDelivery("body is not a JSON object")
    result = ParsedDelivery()
    if _is_aaa(body):
        _parse_aaa(body, bot_user_ids, keep_echoes, result)
    elif "data" in body:
        _parse_xaa(body["data"], bot_user_ids, keep_echoes, result)
    else:
        raise InvalidDelivery("neither an AAA delivery nor an XAA envelope")
    return result


# --- envelopes ----------------------------------------------------------------


def _is_aaa(body: Mapping[str, object]) -> bool:
    return any(key in body for key in ("for_user_id", *AAA_EVENT_ARRAYS, *AAA_SINGLE_EVENTS))


def _parse_aaa(
    body: Mapping[str, object],
    bot_user_ids: Container[str],
    keep_echoes: bool,
    result: ParsedDelivery,
) -> None:
    account: str | None = None
    if "for_user_id" in body:
        account = _require_id(body["for_user_id"], "for_user_id")
    if DM_EVENTS in body:
        if account is None:
            raise InvalidDelivery("direct_message_events without for_user_id")
        events = _require_list(body[DM_EVENTS], DM_EVENTS)
        users = body.get("users")
        _parse_dm_events(events, account, users, bot_user_ids, result, keep_echoes=keep_echoes)
    _drop_other_events(body, AAA_METADATA | {DM_EVENTS}, result, count_bare=False)


def _parse_xaa(
    data: object, bot_user_ids: Container[str], keep_echoes: bool, result: ParsedDelivery
) -> None:
    envelope = _require_mapping(data, "data")
    event_type = envelope.get("event_type")
    if not isinstance(event_type, str):
        raise InvalidDelivery("data.event_type is missing or not a string")
    event_filter = _require_mapping(envelope.get("filter"), "data.filter")
    payload = _require_mapping(envelope.get("payload"), "data.payload")
    if event_type != XAA_DM_RECEIVED:
        # dm.sent, dm.read, dm.indicate_typing and any future kind. The user id
        # is not required here: other XAA filters need not carry one.
        _drop_other_events(payload, AAA_METADATA, result, count_bare=True)
        return
    account = _require_id(event_filter.get("user_id"), "data.filter.user_id")
    events = _require_list(payload.get(DM_EVENTS), f"data.payload.{DM_EVENTS}")
    users = payload.get("users")
    _parse_dm_events(events, account, users, bot_user_ids, result, keep_echoes=keep_echoes)


def _drop_other_events(
    body: Mapping[str, object],
    skip: frozenset[str],
    result: ParsedDelivery,
    *,
    count_bare: bool,
) -> None:
    """Record a ``not_a_dm`` drop per element of each event array in ``body``.

    Known arrays must be lists; single-object kinds (``user_event``, unknown
    objects) count once. When ``body`` holds no event at all, ``count_bare``
    says whether the delivery itself is one dropped event (an XAA payload that
    is not array-shaped) or an empty AAA delivery (nothing to count).
    """
    found = False
    for key, value in body.items():
        if key in skip:
            continue
        if isinstance(value, list):
            found = True
            result.dropped.extend(DroppedEvent("not_a_dm", _event_id(item)) for item in value)
        elif key in AAA_EVENT_ARRAYS:
            raise InvalidDelivery(f"{key} is not an array")
        elif key in AAA_SINGLE_EVENTS or isinstance(value, Mapping):
            found = True
            result.dropped.append(DroppedEvent("not_a_dm", None))
    if count_bare and not found:
        result.dropped.append(DroppedEvent("not_a_dm", None))


# --- direct message events ----------------------------------------------------


def _parse_dm_events(
    events: list[object],
    account: str,
    users: object,
    bot_user_ids: Container[str],
    result: ParsedDelivery,
    *,
    keep_echoes: bool,
) -> None:
    if account not in bot_user_ids:
        result.dropped.extend(DroppedEvent("unknown_bot", _event_id(event)) for event in events)
        return
    user_map = users if isinstance(users, Mapping) else {}
    for event in events:
        parsed = _parse_dm_event(event, account, user_map, keep_echoes)
        if isinstance(parsed, DroppedEvent):
            result.dropped.append(parsed)
        elif isinstance(parsed, SentEcho):
            result.echoes.append(parsed)
        else:
            result.messages.append(parsed)


def _parse_dm_event(
    element: object, account: str, users: Mapping[str, object], keep_echoes: bool
) -> IncomingMessage | SentEcho | DroppedEvent:
    event = _require_mapping(element, "direct_message_events element")
    kind = event.get("type")
    if not isinstance(kind, str):
        raise InvalidDelivery("direct_message_events element without a string type")
    if kind != "message_create":
        return DroppedEvent("not_message_create", _event_id(event))
    event_id = _require_id(event.get("id"), "direct_message_events element id")
    create = _require_mapping(event.get("message_create"), "message_create")
    sender_id = _require_id(create.get("sender_id"), "message_create.sender_id")
    if sender_id == account:
        if not keep_echoes:
            return DroppedEvent("own_message", event_id)
        return _echo(event, create, event_id, account)
    data = _require_mapping(create.get("message_data"), "message_create.message_data")
    text = data.get("text")
    if not isinstance(text, str):
        raise InvalidDelivery("message_data.text is missing or not a string")
    media = _media(data)
    return IncomingMessage(
        event_id=event_id,
        bot_user_id=account,
        sender=_sender(sender_id, users),
        created_timestamp_ms=_timestamp(event.get("created_timestamp")),
        text=_clean_text(text, data.get("entities"), media),
        quick_reply_payload=_quick_reply_payload(data.get("quick_reply_response")),
        attachments=_attachments(media),
    )


def _echo(
    event: Mapping[str, object], create: Mapping[str, object], event_id: str, account: str
) -> SentEcho | DroppedEvent:
    """The bot's own DM as a :class:`SentEcho`, or a drop when a part of it is missing."""
    target = create.get("target")
    recipient = _id_string(target.get("recipient_id")) if isinstance(target, Mapping) else None
    data = create.get("message_data")
    if recipient is None or recipient == account or not isinstance(data, Mapping):
        return DroppedEvent("own_message", event_id)
    text = data.get("text")
    try:
        created_ms = _timestamp(event.get("created_timestamp"))
    except InvalidDelivery:
        return DroppedEvent("own_message", event_id)
    if not isinstance(text, str):
        return DroppedEvent("own_message", event_id)
    media = _media(data)
    return SentEcho(
        event_id=event_id,
        bot_user_id=account,
        recipient_id=recipient,
        created_timestamp_ms=created_ms,
        text=_clean_text(text, data.get("entities"), media),
    )


def _sender(sender_id: str, users: Mapping[str, object]) -> Sender:
    """Build the sender from the ``users`` map: AAA, v2 ``{"data": ...}`` or plain v2."""
    user = users.get(sender_id)
    if isinstance(user, Mapping) and isinstance(user.get("data"), Mapping):
        user = user["data"]
    if not isinstance(user, Mapping):
        return Sender(id=sender_id)
    screen_name = _optional_str(user.get("screen_name")) or _optional_str(user.get("username"))
    return Sender(id=sender_id, screen_name=screen_name, name=_optional_str(user.get("name")))


def _timestamp(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    raise InvalidDelivery("created_timestamp is missing or not a non-negative integer")


def _quick_reply_payload(value: object) -> str | None:
    if isinstance(value, Mapping) and value.get("type") == "options":
        return _optional_str(value.get("metadata"))
    return None


# --- media and text -----------------------------------------------------------


def _media(data: Mapping[str, object]) -> Mapping[str, object] | None:
    attachment = data.get("attachment")
    if not isinstance(attachment, Mapping) or attachment.get("type") != "media":
        return None
    media = attachment.get("media")
    return media if isinstance(media, Mapping) else None


def _attachments(media: Mapping[str, object] | None) -> tuple[Attachment, ...]:
    """The media as an attachment; unknown types or a missing url give none."""
    if media is None:
        return ()
    kind = _MEDIA_TYPES.get(str(media.get("type")))
    url = _optional_str(media.get("media_url_https")) or _optional_str(media.get("media_url"))
    if kind is None or url is None:
        return ()
    media_id = _id_string(media.get("id_str")) or _id_string(media.get("id"))
    return (Attachment(type=kind, url=url, media_id=media_id),)


def _clean_text(text: str, entities: object, media: Mapping[str, object] | None) -> str:
    """Remove the media's t.co link and expand the other t.co links.

    Matching is by exact URL string (X's ``indices`` count UTF-16 code units and
    are not trusted), in a single pass so an expansion is never rewritten again.
    """
    expansions, media_links = _url_entities(entities)
    media_link = _optional_str(media.get("url")) if media is not None else None
    if media_link:
        media_links.add(media_link)
    for link in media_links:
        expansions.pop(link, None)
    if media_links:
        text = _remove_links(text, media_links)
    if expansions:
        pattern = re.compile(f"(?:{_alternation(expansions)}){_TOKEN_END}")
        text = pattern.sub(lambda match: expansions[match.group(0)], text)
    return text


def _url_entities(entities: object) -> tuple[dict[str, str], set[str]]:
    """Map each t.co url to its expanded url; also collect the media page links."""
    expansions: dict[str, str] = {}
    media_links: set[str] = set()
    urls = entities.get("urls") if isinstance(entities, Mapping) else None
    for entry in urls if isinstance(urls, list) else []:
        if not isinstance(entry, Mapping):
            continue
        url, expanded = entry.get("url"), entry.get("expanded_url")
        if not (isinstance(url, str) and url and isinstance(expanded, str)):
            continue
        if _MEDIA_PAGE.match(expanded):
            media_links.add(url)
        else:
            expansions.setdefault(url, expanded)
    return expansions, media_links


def _remove_links(text: str, links: Iterable[str]) -> str:
    """Delete links with their surrounding whitespace, keeping one gap mid-text."""
    pattern = re.compile(rf"\s*(?:(?:{_alternation(links)}){_TOKEN_END}\s*)+")

    def gap(match: re.Match[str]) -> str:
        if match.start() == 0 or match.end() == len(text):
            return ""
        removed = match.group(0)
        leading = removed[: len(removed) - len(removed.lstrip())]
        return leading or removed[len(removed.rstrip()) :]

    return pattern.sub(gap, text)


def _alternation(links: Iterable[str]) -> str:
    # Longest first: with the token-end guard this is belt and braces.
    return "|".join(re.escape(link) for link in sorted(links, key=len, reverse=True))


# --- small value helpers ------------------------------------------------------


def _id_string(value: object) -> str | None:
    """An id as its exact decimal string (never through float), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if value >= 0 else None
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return value
    return None


def _require_id(value: object, what: str) -> str:
    result = _id_string(value)
    if result is None:
        raise InvalidDelivery(f"{what} is missing or not a decimal id")
    return result


def _event_id(event: object) -> str | None:
    """Best-effort id of an event we drop (for logs); None when it has none."""
    if not isinstance(event, Mapping):
        return None
    for key in ("id", "id_str"):
        value = event.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return None


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _require_mapping(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise InvalidDelivery(f"{what} is missing or not an object")
    return value


def _require_list(value: object, what: str) -> list[object]:
    if not isinstance(value, list):
        raise InvalidDelivery(f"{what} is missing or not an array")
    return value
