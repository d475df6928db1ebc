"""The internal message model shared by the webhook, the queue and the bridge.

Ids are strings from the wire to the wire: X user ids exceed 2**53.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

AttachmentType = Literal["image", "video", "gif"]


@dataclass(frozen=True)
class Sender:
    id: str
    screen_name: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Attachment:
    type: AttachmentType
    url: str
    media_id: str | None = None


@dataclass(frozen=True)
class IncomingMessage:
    """One DM from a user to a bot account, as accepted from an AAA or XAA delivery."""

    event_id: str
    bot_user_id: str
    sender: Sender
    # Milliseconds since the epoch, as X's created_timestamp.
    created_timestamp_ms: int
    text: str
    quick_reply_payload: str | None = None
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)

    @property
    def conversation_id(self) -> str:
        """X's one-to-one conversation id: both user ids, numerically smaller first."""
        return conversation_id(self.bot_user_id, self.sender.id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "bot_user_id": self.bot_user_id,
            "sender": {
                "id": self.sender.id,
                "screen_name": self.sender.screen_name,
                "name": self.sender.name,
            },
            "created_timestamp_ms": self.created_timestamp_ms,
            "text": self.text,
            "quick_reply_payload": self.quick_reply_payload,
            "attachments": [
                {"type": a.type, "url": a.url, "media_id": a.media_id} for a in self.attachments
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IncomingMessage:
        sender = data["sender"]
        return cls(
            event_id=str(data["event_id"]),
            bot_user_id=str(data["bot_user_id"]),
            sender=Sender(
                id=str(sender["id"]),
                screen_name=sender.get("screen_name"),
                name=sender.get("name"),
            ),
            created_timestamp_ms=int(data["created_timestamp_ms"]),
            text=str(data["text"]),
            quick_reply_payload=data.get("quick_reply_payload"),
            attachments=tuple(
                Attachment(type=a["type"], url=a["url"], media_id=a.get("media_id"))
                for a in data.get("attachments", [])
            ),
        )


@dataclass(frozen=True)
class SentEcho:
    """X's echo of a DM a bot account sent: its record that the DM went out.

    Appended to the echo stream that every worker reads, so that after a crash the
    bridge can tell whether a reply whose send was in doubt reached X before sending it
    again (bridge/echoes.py).
    """

    event_id: str
    bot_user_id: str
    recipient_id: str
    # X's clock, milliseconds since the epoch.
    created_timestamp_ms: int
    text: str

    @property
    def conversation_id(self) -> str:
        return conversation_id(self.bot_user_id, self.recipient_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "bot_user_id": self.bot_user_id,
            "recipient_id": self.recipient_id,
            "created_timestamp_ms": self.created_timestamp_ms,
            "text": self.text,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SentEcho:
        return cls(
            event_id=str(data["event_id"]),
            bot_user_id=str(data["bot_user_id"]),
            recipient_id=str(data["recipient_id"]),
            created_timestamp_ms=int(data["created_timestamp_ms"]),
            text=str(data["text"]),
        )


def conversation_id(user_a: str, user_b: str) -> str:
    """Join two user ids, the numerically smaller first, with '-'."""
    low, high = sorted((user_a, user_b), key=int)
    return f"{low}-{high}"
