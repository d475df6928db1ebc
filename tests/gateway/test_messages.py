"""The section-1 request body, rendered by UserMessage.to_json."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.gateway.conftest import ATTACHMENT, make_message
from twitter_bot.gateway import GatewayAttachment
from twitter_bot.gateway.messages import format_timestamp


def test_body_matches_section_1() -> None:
    message = make_message(quick_reply_payload="opt_1", attachments=(ATTACHMENT,))

    assert message.to_json() == {
        "message_id": "1494419467836000004",
        "channel": "twitter",
        "bot_id": "aaaabbbb-4444-5555-6666-ccccddddeeee",
        "conversation_id": "732739706-1230981029831098231",
        "sender": {"id": "732739706", "screen_name": "alice", "name": "Alice"},
        "recipient_id": "1230981029831098231",
        "timestamp": "2026-11-21T19:18:31.123Z",
        "text": "Hi there",
        "quick_reply": {"payload": "opt_1"},
        "attachments": [
            {
                "type": "image",
                "url": "https://ton.twitter.com/1.1/ton/data/dm/1/2/photo.jpg",
                "media_id": "1494419466",
            }
        ],
    }


def test_absent_values_are_null_and_empty() -> None:
    body = make_message(sender_screen_name=None, sender_name=None).to_json()

    assert body["quick_reply"] is None
    assert body["attachments"] == []
    assert body["sender"] == {"id": "732739706", "screen_name": None, "name": None}


def test_attachment_without_media_id() -> None:
    assert GatewayAttachment("gif", "https://x/y.gif").to_json() == {
        "type": "gif",
        "url": "https://x/y.gif",
        "media_id": None,
    }


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05.000Z"),
        (datetime(2026, 1, 2, 3, 4, 5, 999999, tzinfo=UTC), "2026-01-02T03:04:05.999Z"),
        (
            datetime(2026, 1, 2, 1, 0, 0, 7000, tzinfo=timezone(timedelta(hours=2))),
            "2026-01-01T23:00:00.007Z",
        ),
    ],
)
def test_timestamp_is_utc_with_milliseconds(moment: datetime, expected: str) -> None:
    assert format_timestamp(moment) == expected


def test_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_message(timestamp=datetime(2026, 1, 1))
