"""The user's message as the bot platform receives it (gateway-api.md, section 1).

A value object that knows nothing of X: the bridge fills it from whatever the
channel delivered, and `to_json` renders the exact wire body.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

AttachmentType = Literal["image", "video", "gif"]

CHANNEL = "twitter"


@dataclass(frozen=True, slots=True)
class GatewayAttachment:
    """A media file the user sent; the URL needs the bot's credentials to download."""

    type: AttachmentType
    url: str
    media_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The attachment object of the section-1 body."""
        return {"type": self.type, "url": self.url, "media_id": self.media_id}


@dataclass(frozen=True, slots=True)
class UserMessage:
    """One user message for one bot; `message_id` doubles as the idempotency key."""

    message_id: str
    bot_id: str
    conversation_id: str
    sender_id: str
    sender_screen_name: str | None
    sender_name: str | None
    recipient_id: str
    timestamp: datetime
    text: str
    quick_reply_payload: str | None = None
    attachments: tuple[GatewayAttachment, ...] = ()

    def __post_init__(self) -> None:
        if self.timestamp.utcoffset() is None:
            raise ValueError("UserMessage.timestamp must be timezone-aware (UTC)")

    def to_json(self) -> dict[str, Any]:
        """The exact section-1 request body."""
        quick_reply = (
            None if self.quick_reply_payload is None else {"payload": self.quick_reply_payload}
        )
        return {
            "message_id": self.message_id,
            "channel": CHANNEL,
            "bot_id": self.bot_id,
            "conversation_id": self.conversation_id,
            "sender": {
                "id": self.sender_id,
                "screen_name": self.sender_screen_name,
                "name": self.sender_name,
            },
            "recipient_id": self.recipient_id,
            "timestamp": format_timestamp(self.timestamp),
            "text": self.text,
            "quick_reply": quick_reply,
            "attachments": [attachment.to_json() for attachment in self.attachments],
        }


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds and a trailing Z: `2026-11-21T19:18:31.123Z`."""
    utc = moment.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"
