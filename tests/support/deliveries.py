"""Builders for X webhook deliveries (x-api.md §3-4), signed as X signs them."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.fake_x import XCall
from twitter_bot.webhook.signature import SIGNATURE_HEADER, sign_body


def dm_event(
    event_id: str,
    sender_id: str,
    recipient_id: str,
    text: str = "hello",
    *,
    created_ms: int = 1579966202136,
    quick_reply_metadata: str | None = None,
) -> dict[str, Any]:
    message_data: dict[str, Any] = {"text": text, "entities": {"urls": []}}
    if quick_reply_metadata is not None:
        message_data["quick_reply_response"] = {
            "type": "options",
            "metadata": quick_reply_metadata,
        }
    return {
        "type": "message_create",
        "id": event_id,
        "created_timestamp": str(created_ms),
        "message_create": {
            "target": {"recipient_id": recipient_id},
            "sender_id": sender_id,
            "message_data": message_data,
        },
    }


def echo_delivery(dm: XCall) -> dict[str, Any]:
    """X's echo of a DM a bot sent, as FakeX recorded it (x-api.md: a bot's own DMs come
    back as message_create events for its account, stamped with X's clock)."""
    assert dm.event_id is not None and dm.recipient_id is not None
    event = dm_event(
        dm.event_id, dm.user_id, dm.recipient_id, dm.text or "", created_ms=int(dm.at * 1000)
    )
    return aaa_delivery(dm.user_id, event)


def aaa_delivery(for_user_id: str, *events: dict[str, Any], **extra: Any) -> dict[str, Any]:
    users = {
        e["message_create"]["sender_id"]: {
            "id": e["message_create"]["sender_id"],
            "name": "Jordan Brinks",
            "screen_name": "furiouscamper",
        }
        for e in events
    }
    return {
        "for_user_id": for_user_id,
        "direct_message_events": list(events),
        "users": users,
        **extra,
    }


def xaa_delivery(
    for_user_id: str, event: dict[str, Any], event_type: str = "dm.received"
) -> dict[str, Any]:
    sender = event["message_create"]["sender_id"]
    return {
        "data": {
            "event_uuid": "5f1c0f9e-0000-4000-8000-000000000001",
            "event_type": event_type,
            "tag": "twitter-bot",
            "filter": {"user_id": for_user_id, "direction": "inbound"},
            "payload": {
                "direct_message_events": [event],
                "users": {
                    sender: {
                        "data": {"id": sender, "name": "Jordan Brinks", "username": "furiouscamper"}
                    }
                },
            },
        }
    }


def signed(body: dict[str, Any] | bytes, secret: str) -> tuple[bytes, dict[str, str]]:
    """The raw body and headers of a delivery signed with ``secret``."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return raw, {SIGNATURE_HEADER: sign_body(secret, raw), "Content-Type": "application/json"}
