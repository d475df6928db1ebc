"""Parsing and validating the bot's replies (section 2), lenient and strict."""

from __future__ import annotations

from typing import Any

import pytest

from twitter_bot.gateway import (
    InvalidRepliesError,
    MediaReply,
    QuickReply,
    SkippedReply,
    TextReply,
    TypingReply,
    parse_replies,
    parse_replies_strict,
)

SPEC_EXAMPLE = {
    "messages": [
        {"type": "text", "text": "Hello Alice!"},
        {
            "type": "text",
            "text": "What next?",
            "quick_replies": [
                {"label": "Order status", "description": "Track a parcel", "payload": "status"},
                {"label": "Talk to a human", "payload": "human"},
            ],
        },
        {
            "type": "image",
            "url": "https://cdn.example.com/map.png",
            "text": "Our shop",
            "alt_text": "Map",
        },
        {"type": "typing"},
    ]
}

SPEC_REPLIES = [
    TextReply("Hello Alice!"),
    TextReply(
        "What next?",
        (
            QuickReply("Order status", "Track a parcel", "status"),
            QuickReply("Talk to a human", None, "human"),
        ),
    ),
    MediaReply("image", "https://cdn.example.com/map.png", "Our shop", "Map"),
    TypingReply(),
]


def text_with_options(options: Any) -> dict[str, Any]:
    return {"type": "text", "text": "pick", "quick_replies": options}


def option(**fields: Any) -> dict[str, Any]:
    return {"label": "L", "payload": "p", **fields}


VALID = {"type": "text", "text": "ok"}

# (invalid message, the field named by the violation)
INVALID_MESSAGES: list[tuple[Any, str]] = [
    ("not an object", "messages[1]"),
    ({"text": "no type"}, "messages[1].type"),
    ({"type": 3}, "messages[1].type"),
    ({"type": "carousel"}, "messages[1].type"),
    ({"type": "text"}, "messages[1].text"),
    ({"type": "text", "text": ""}, "messages[1].text"),
    ({"type": "text", "text": "x" * 10_001}, "messages[1].text"),
    ({"type": "text", "text": 42}, "messages[1].text"),
    (text_with_options([]), "messages[1].quick_replies"),
    (text_with_options([option()] * 21), "messages[1].quick_replies"),
    (text_with_options("yes"), "messages[1].quick_replies"),
    (text_with_options([option(), "x"]), "messages[1].quick_replies[1]"),
    (text_with_options([option(label="")]), "messages[1].quick_replies[0].label"),
    (text_with_options([option(label="x" * 37)]), "messages[1].quick_replies[0].label"),
    (text_with_options([{"payload": "p"}]), "messages[1].quick_replies[0].label"),
    (
        text_with_options([option(description="x" * 73)]),
        "messages[1].quick_replies[0].description",
    ),
    (text_with_options([option(payload="x" * 1001)]), "messages[1].quick_replies[0].payload"),
    (text_with_options([{"label": "L"}]), "messages[1].quick_replies[0].payload"),
    ({"type": "image"}, "messages[1].url"),
    ({"type": "gif", "url": "ftp://cdn/x.gif"}, "messages[1].url"),
    ({"type": "video", "url": "https://"}, "messages[1].url"),
    ({"type": "image", "url": "/relative.png"}, "messages[1].url"),
    ({"type": "image", "url": "https://cdn/x.png", "text": 5}, "messages[1].text"),
    ({"type": "image", "url": "https://cdn/x.png", "alt_text": []}, "messages[1].alt_text"),
]


def test_spec_example_parses_in_order() -> None:
    parsed = parse_replies(SPEC_EXAMPLE)

    assert parsed.replies == SPEC_REPLIES
    assert parsed.skipped == []


@pytest.mark.parametrize("kind", ["image", "gif", "video"])
def test_media_kinds(kind: str) -> None:
    parsed = parse_replies({"messages": [{"type": kind, "url": "http://cdn/f"}]})

    assert parsed.replies == [MediaReply(kind, "http://cdn/f")]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "message",
    [
        {"type": "text", "text": "x" * 10_000},
        text_with_options([option()] * 20),
        text_with_options([option(label="x" * 36, description="d" * 72, payload="p" * 1000)]),
        text_with_options([option(payload="", description="")]),
        {"type": "text", "text": "t", "quick_replies": None, "extra": "ignored"},
        {"type": "typing", "text": "ignored"},
    ],
)
def test_limits_are_inclusive(message: dict[str, Any]) -> None:
    assert parse_replies_strict({"messages": [message]}) != []


def test_empty_optional_strings_count_as_absent() -> None:
    replies = parse_replies_strict(
        {
            "messages": [
                {"type": "image", "url": "https://c/x.png", "text": "", "alt_text": None},
                text_with_options([option(description="")]),
            ]
        }
    )

    assert replies == [
        MediaReply("image", "https://c/x.png"),
        TextReply("pick", (QuickReply("L", None, "p"),)),
    ]


@pytest.mark.parametrize(("invalid", "field"), INVALID_MESSAGES)
def test_invalid_message_is_skipped_and_rest_kept(invalid: Any, field: str) -> None:
    body = {"messages": [VALID, invalid, {"type": "typing"}]}

    parsed = parse_replies(body)

    assert parsed.replies == [TextReply("ok"), TypingReply()]
    assert len(parsed.skipped) == 1
    assert parsed.skipped[0].index == 1
    assert parsed.skipped[0].reason.startswith(f"{field}: ")


@pytest.mark.parametrize(("invalid", "field"), INVALID_MESSAGES)
def test_strict_names_the_field(invalid: Any, field: str) -> None:
    with pytest.raises(InvalidRepliesError) as caught:
        parse_replies_strict({"messages": [VALID, invalid]})

    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_strict_reports_the_first_violation() -> None:
    body = {
        "messages": [
            VALID,
            VALID,
            text_with_options([option(), option(label="x" * 40)]),
            {"type": "bogus"},
        ]
    }

    with pytest.raises(InvalidRepliesError) as caught:
        parse_replies_strict(body)

    assert caught.value.violation.field == "messages[2].quick_replies[1].label"
    assert caught.value.violation.reason == "must be 1..36 characters, got 40"


def test_several_skipped_keep_their_indexes() -> None:
    parsed = parse_replies({"messages": [{"type": "x"}, VALID, {"type": "text", "text": ""}]})

    assert parsed.replies == [TextReply("ok")]
    assert [s.index for s in parsed.skipped] == [0, 2]
    assert parsed.skipped[0] == SkippedReply(0, "messages[0].type: unknown type 'x'")


def test_empty_list_is_no_replies() -> None:
    assert parse_replies({"messages": []}).replies == []
    assert parse_replies_strict({"messages": []}) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ("messages", "body"),
        (None, "body"),
        ({}, "messages"),
        ({"messages": None}, "messages"),
        ({"messages": {"type": "text"}}, "messages"),
    ],
)
@pytest.mark.parametrize("parse", [parse_replies, parse_replies_strict])
def test_malformed_body_is_refused(body: Any, field: str, parse: Any) -> None:
    with pytest.raises(InvalidRepliesError) as caught:
        parse(body)

    assert caught.value.field == field


def test_reply_to_json_round_trips_through_the_parser() -> None:
    from twitter_bot.gateway import reply_to_json

    body = {
        "messages": [
            {"type": "text", "text": "Hello Alice!"},
            {
                "type": "text",
                "text": "What next?",
                "quick_replies": [
                    {"label": "Order status", "description": "Track a parcel", "payload": "status"},
                    {"label": "Talk to a human", "payload": "human"},
                ],
            },
            {
                "type": "image",
                "url": "https://cdn.example.com/map.png",
                "text": "Our shop",
                "alt_text": "Map",
            },
            {"type": "video", "url": "https://cdn.example.com/clip.mp4"},
            {"type": "typing"},
        ]
    }
    replies = parse_replies(body).replies
    assert [reply_to_json(r) for r in replies] == body["messages"]
    assert parse_replies({"messages": [reply_to_json(r) for r in replies]}).replies == replies
