"""Request bodies X expects and the ids read back from its answers (x-api.md section 6).

Pure functions: no I/O, so the wire format is testable on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twitter_bot.x.models import QuickReplyOption


class PayloadError(ValueError):
    """An answer X gave with a 2xx status did not have the expected shape."""


def v11_message_event(
    recipient_id: str,
    text: str,
    quick_reply_options: Sequence[QuickReplyOption] | None = None,
    media_id: str | None = None,
) -> dict[str, Any]:
    """The `direct_messages/events/new.json` body for one message_create event."""
    message_data: dict[str, Any] = {"text": text}
    if quick_reply_options:
        message_data["quick_reply"] = {
            "type": "options",
            "options": [_quick_reply_option(option) for option in quick_reply_options],
        }
    if media_id is not None:
        message_data["attachment"] = {"type": "media", "media": {"id": media_id}}
    return {
        "event": {
            "type": "message_create",
            "message_create": {
                "target": {"recipient_id": recipient_id},
                "message_data": message_data,
            },
        }
    }


def _quick_reply_option(option: QuickReplyOption) -> dict[str, str]:
    item = {"label": option.label, "metadata": option.metadata}
    if option.description is not None:
        item["description"] = option.description
    return item


def v2_message(text: str, media_id: str | None = None) -> dict[str, Any]:
    """The `dm_conversations/with/{id}/messages` body (text left out when empty beside media)."""
    body: dict[str, Any] = {"text": text} if text or media_id is None else {}
    if media_id is not None:
        body["attachments"] = [{"media_id": media_id}]
    return body


def v11_event_id(answer: Any) -> str:
    """`event.id` of a v1.1 send answer, as a string."""
    event = answer.get("event") if isinstance(answer, dict) else None
    return as_id(event.get("id") if isinstance(event, dict) else None, "event.id")


def v2_event_ids(answer: Any) -> tuple[str, str | None]:
    """(`data.dm_event_id`, `data.dm_conversation_id`) of a v2 send answer."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, dict):
        raise PayloadError("answer has no data object")
    conversation = data.get("dm_conversation_id")
    return as_id(data.get("dm_event_id"), "data.dm_event_id"), (
        str(conversation) if conversation is not None else None
    )


def media_id_of(answer: Any) -> str:
    """`media_id_string` (or an integer `media_id`) of an upload answer."""
    if not isinstance(answer, dict):
        raise PayloadError("answer is not an object")
    if answer.get("media_id_string") is not None:
        return as_id(answer["media_id_string"], "media_id_string")
    return as_id(answer.get("media_id"), "media_id")


def processing_info(answer: Any) -> dict[str, Any] | None:
    """`processing_info` of a FINALIZE or STATUS answer; None when processing is done."""
    info = answer.get("processing_info") if isinstance(answer, dict) else None
    return info if isinstance(info, dict) else None


def as_id(value: Any, name: str) -> str:
    """An id as a string; integers are accepted, floats and everything else refused."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PayloadError(f"{name} missing or not a string id")
    text = str(value)
    if not text.isdigit():
        raise PayloadError(f"{name} is not a numeric id")
    return text
