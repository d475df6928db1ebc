"""Tests for twitter_bot.webhook.payloads: AAA/XAA deliveries -> IncomingMessage."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from twitter_bot.models import Attachment, AttachmentType, IncomingMessage, Sender, SentEcho
from twitter_bot.webhook.payloads import (
    DroppedEvent,
    InvalidDelivery,
    ParsedDelivery,
    parse_delivery,
)

BOT = "4337869213"
USER = "3001969357"
BOTS = frozenset({BOT})

# x-api.md section 3, verbatim.
PHOTO_DELIVERY = """
{
  "for_user_id": "4337869213",
  "direct_message_events": [{
    "type": "message_create",
    "id": "1221092871941558276",
    "created_timestamp": "1579966202136",
    "message_create": {
      "target": {"recipient_id": "4337869213"},
      "sender_id": "3001969357",
      "message_data": {
        "text": "look at this https://t.co/Mq6pVXPx1M",
        "entities": {"hashtags": [], "symbols": [], "user_mentions": [],
          "urls": [{"url": "https://t.co/Mq6pVXPx1M",
                    "expanded_url": "https://twitter.com/messages/media/1221092871941558276",
                    "display_url": "pic.twitter.com/Mq6pVXPx1M", "indices": [13, 36]}]},
        "attachment": {"type": "media", "media": {
          "id": 1221092866912550912, "id_str": "1221092866912550912",
          "media_url_https": "https://ton.twitter.com/1.1/ton/data/dm/1221092871941558276/1221092866912550912/OwIPMAFC.png",
          "url": "https://t.co/Mq6pVXPx1M", "type": "photo"}}
      }
    }
  }],
  "users": {
    "3001969357": {"id": "3001969357", "name": "Jordan Brinks", "screen_name": "furiouscamper",
                   "protected": false, "verified": false},
    "4337869213": {"id": "4337869213", "name": "Harrison Test", "screen_name": "Harris_0ff"}
  }
}
"""
PHOTO_URL = (
    "https://ton.twitter.com/1.1/ton/data/dm/1221092871941558276/1221092866912550912/OwIPMAFC.png"
)


def dm_event(
    event_id: str = "1000",
    sender_id: Any = USER,
    text: str = "hello",
    *,
    timestamp: Any = "1579966202136",
    urls: list[dict[str, Any]] | None = None,
    **message_data: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {"text": text, **message_data}
    if urls is not None:
        data["entities"] = {"urls": urls}
    return {
        "type": "message_create",
        "id": event_id,
        "created_timestamp": timestamp,
        "message_create": {
            "target": {"recipient_id": BOT},
            "sender_id": sender_id,
            "message_data": data,
        },
    }


def aaa(*events: object, for_user_id: Any = BOT, **extra: Any) -> dict[str, Any]:
    return {
        "for_user_id": for_user_id,
        "direct_message_events": list(events),
        "users": {USER: {"id": USER, "name": "Alice", "screen_name": "alice"}},
        **extra,
    }


def xaa(
    *events: dict[str, Any], event_type: str = "dm.received", users: Any = None
) -> dict[str, Any]:
    if users is None:
        users = {USER: {"data": {"id": USER, "name": "Alice", "username": "alice"}}}
    return {
        "data": {
            "event_uuid": "6b8d5c0e-0000-4000-8000-000000000000",
            "event_type": event_type,
            "tag": "prod",
            "filter": {"user_id": BOT, "direction": "inbound"},
            "payload": {"direct_message_events": list(events), "users": users},
        }
    }


def only_message(parsed: ParsedDelivery) -> IncomingMessage:
    assert parsed.dropped == []
    assert len(parsed.messages) == 1
    return parsed.messages[0]


def url(short: str, expanded: str) -> dict[str, Any]:
    return {"url": short, "expanded_url": expanded, "display_url": expanded[8:], "indices": [0, 0]}


# --- the spec example and basic AAA -------------------------------------------


def test_spec_photo_example() -> None:
    message = only_message(parse_delivery(json.loads(PHOTO_DELIVERY), BOTS))
    assert message == IncomingMessage(
        event_id="1221092871941558276",
        bot_user_id=BOT,
        sender=Sender(id=USER, screen_name="furiouscamper", name="Jordan Brinks"),
        created_timestamp_ms=1579966202136,
        text="look at this",
        quick_reply_payload=None,
        attachments=(Attachment(type="image", url=PHOTO_URL, media_id="1221092866912550912"),),
    )


def test_batch_of_three_in_order() -> None:
    body = aaa(dm_event("1", text="a"), dm_event("2", text="b"), dm_event("3", text="c"))
    parsed = parse_delivery(body, BOTS)
    assert parsed.dropped == []
    assert [(m.event_id, m.text) for m in parsed.messages] == [("1", "a"), ("2", "b"), ("3", "c")]
    assert all(m.bot_user_id == BOT for m in parsed.messages)


def own_dm(event_id: str, text: str = "my reply", **kwargs: Any) -> dict[str, Any]:
    event = dm_event(event_id, sender_id=BOT, text=text, **kwargs)
    event["message_create"]["target"] = {"recipient_id": USER}
    return event


def test_own_message_is_an_echo_never_a_message_to_answer() -> None:
    body = aaa(own_dm("1", timestamp="1579966202999"), dm_event("2"))
    parsed = parse_delivery(body, BOTS, keep_echoes=True)
    assert [m.event_id for m in parsed.messages] == ["2"]
    assert parsed.dropped == []
    assert parsed.echoes == [SentEcho("1", BOT, USER, 1579966202999, "my reply")]
    assert parsed.echoes[0].conversation_id == parsed.messages[0].conversation_id


def test_an_echo_s_media_link_is_removed_and_other_links_expanded() -> None:
    media_link = "https://t.co/media1"
    event = own_dm(
        "1",
        text=f"see https://t.co/ab {media_link}",
        urls=[{"url": "https://t.co/ab", "expanded_url": "https://example.com/a"}],
        attachment={"type": "media", "media": {"type": "photo", "url": media_link}},
    )
    parsed = parse_delivery(aaa(event), BOTS, keep_echoes=True)
    assert parsed.echoes[0].text == "see https://example.com/a"


def test_own_message_dropped_without_validating_message_data_unless_echoes_are_kept() -> None:
    event = own_dm("1")
    del event["message_create"]["message_data"]
    parsed = parse_delivery(aaa(event, dm_event("2")), BOTS)
    assert parsed.dropped == [DroppedEvent("own_message", "1")]
    assert [m.event_id for m in parsed.messages] == ["2"] and parsed.echoes == []
    event = own_dm("3")
    assert parse_delivery(aaa(event), BOTS).dropped == [DroppedEvent("own_message", "3")]


@pytest.mark.parametrize(
    "damage",
    [
        lambda e: e["message_create"].pop("message_data"),
        lambda e: e["message_create"]["message_data"].pop("text"),
        lambda e: e["message_create"].pop("target"),
        lambda e: e["message_create"]["target"].update(recipient_id=BOT),
        lambda e: e.pop("created_timestamp"),
        lambda e: e.update(created_timestamp="soon"),
    ],
    ids=["no data", "no text", "no target", "to itself", "no timestamp", "bad timestamp"],
)
def test_an_echo_missing_a_part_is_dropped_not_refused(damage: Any) -> None:
    event = own_dm("1")
    damage(event)
    parsed = parse_delivery(aaa(event), BOTS, keep_echoes=True)
    assert parsed.dropped == [DroppedEvent("own_message", "1")]
    assert parsed.echoes == [] and parsed.messages == []


def test_unknown_bot_dropped_per_event_without_validation() -> None:
    body = aaa(dm_event("1"), {"garbage": True}, for_user_id="999")
    parsed = parse_delivery(body, BOTS)
    assert parsed.messages == []
    assert parsed.dropped == [DroppedEvent("unknown_bot", "1"), DroppedEvent("unknown_bot", None)]


def test_two_bots_in_one_conversation_each_get_their_copy() -> None:
    other_bot = "1230981029831098231"
    bots = frozenset({BOT, other_bot})
    first = parse_delivery(aaa(dm_event("7"), for_user_id=BOT), bots)
    second = parse_delivery(aaa(dm_event("7"), for_user_id=other_bot), bots)
    assert only_message(first).bot_user_id == BOT
    assert only_message(second).bot_user_id == other_bot


def test_non_message_create_element_dropped() -> None:
    body = aaa({"type": "welcome_message_rule", "id": "55"}, dm_event("2"))
    parsed = parse_delivery(body, BOTS)
    assert [m.event_id for m in parsed.messages] == ["2"]
    assert parsed.dropped == [DroppedEvent("not_message_create", "55")]


def test_empty_direct_message_events() -> None:
    body = {"for_user_id": BOT, "direct_message_events": []}
    assert parse_delivery(body, BOTS) == ParsedDelivery(messages=[], dropped=[])


def test_for_user_id_alone_is_an_empty_delivery() -> None:
    assert parse_delivery({"for_user_id": BOT}, BOTS) == ParsedDelivery()


# --- other event kinds ----------------------------------------------------------

TYPING = {
    "for_user_id": BOT,
    "direct_message_indicate_typing_events": [
        {"created_timestamp": "1", "sender_id": USER, "target": {"recipient_id": BOT}},
        {"created_timestamp": "2", "sender_id": USER, "target": {"recipient_id": BOT}},
    ],
    "users": {},
}
MARK_READ = {
    "for_user_id": BOT,
    "direct_message_mark_read_events": [
        {
            "created_timestamp": "1",
            "sender_id": USER,
            "target": {"recipient_id": BOT},
            "last_read_event_id": "1221092871941558276",
        }
    ],
}
TWEET = {
    "for_user_id": BOT,
    "user_has_blocked": False,
    "tweet_create_events": [{"id": 1493823219163734018, "id_str": "1493823219163734018"}],
}
FAVORITE = {"for_user_id": BOT, "favorite_events": [{"id": "a7ba59eab0bfcba386f7acedac279542"}]}
FOLLOW = {"for_user_id": BOT, "follow_events": [{"type": "follow", "created_timestamp": "1"}]}
USER_EVENT = {"user_event": {"revoke": {"date_time": "2018-05-24T09:48:12+00:00"}}}
REPLAY = {"replay_job_status": {"job_id": "1", "job_state": "Complete"}}
FUTURE = {"for_user_id": BOT, "future_thing_events": [{"id": "9"}, {}]}


@pytest.mark.parametrize(
    ("body", "expected_ids"),
    [
        pytest.param(TYPING, [None, None], id="typing"),
        pytest.param(MARK_READ, [None], id="mark-read"),
        pytest.param(TWEET, ["1493823219163734018"], id="tweet_create"),
        pytest.param(FAVORITE, ["a7ba59eab0bfcba386f7acedac279542"], id="favorite"),
        pytest.param(FOLLOW, [None], id="follow"),
        pytest.param(USER_EVENT, [None], id="user_event"),
        pytest.param(REPLAY, [None], id="replay_job_status"),
        pytest.param(FUTURE, ["9", None], id="unknown-extra-array"),
        pytest.param({**TYPING, "for_user_id": "999"}, [None, None], id="typing-unknown-bot"),
    ],
)
def test_other_event_kinds_dropped_as_not_a_dm(
    body: dict[str, Any], expected_ids: list[str | None]
) -> None:
    parsed = parse_delivery(body, BOTS)
    assert parsed.messages == []
    assert parsed.dropped == [DroppedEvent("not_a_dm", i) for i in expected_ids]


def test_dm_and_other_array_in_one_delivery() -> None:
    body = aaa(dm_event("1"), favorite_events=[{"id": "f"}])
    parsed = parse_delivery(body, BOTS)
    assert [m.event_id for m in parsed.messages] == ["1"]
    assert parsed.dropped == [DroppedEvent("not_a_dm", "f")]


# --- XAA ------------------------------------------------------------------------


def test_xaa_dm_received_equals_aaa() -> None:
    event = dm_event(
        "42",
        text="see https://t.co/abc",
        urls=[url("https://t.co/abc", "https://example.com/page")],
    )
    from_aaa = only_message(parse_delivery(aaa(copy.deepcopy(event)), BOTS))
    from_xaa = only_message(parse_delivery(xaa(copy.deepcopy(event)), BOTS))
    assert from_xaa == from_aaa
    assert from_xaa.text == "see https://example.com/page"
    assert from_xaa.sender == Sender(id=USER, screen_name="alice", name="Alice")


def test_xaa_photo_example_equals_aaa() -> None:
    body = json.loads(PHOTO_DELIVERY)
    v2_users = {
        uid: {"data": {"id": u["id"], "name": u["name"], "username": u["screen_name"]}}
        for uid, u in body["users"].items()
    }
    envelope = xaa(*body["direct_message_events"], users=v2_users)
    assert parse_delivery(envelope, BOTS) == parse_delivery(body, BOTS)


def test_xaa_plain_v2_users() -> None:
    users = {USER: {"id": USER, "name": "Alice", "username": "alice"}}
    message = only_message(parse_delivery(xaa(dm_event(), users=users), BOTS))
    assert message.sender == Sender(id=USER, screen_name="alice", name="Alice")


def test_xaa_dm_sent_dropped() -> None:
    parsed = parse_delivery(xaa(dm_event("5", sender_id=BOT), event_type="dm.sent"), BOTS)
    assert parsed.messages == []
    assert parsed.dropped == [DroppedEvent("not_a_dm", "5")]


@pytest.mark.parametrize("event_type", ["dm.read", "dm.indicate_typing", "follow.created"])
def test_xaa_other_event_types_dropped_once(event_type: str) -> None:
    body = {"data": {"event_type": event_type, "filter": {"user_id": BOT}, "payload": {}}}
    assert parse_delivery(body, BOTS).dropped == [DroppedEvent("not_a_dm", None)]


def test_xaa_unknown_bot() -> None:
    body = xaa(dm_event("5"))
    body["data"]["filter"]["user_id"] = "999"
    assert parse_delivery(body, BOTS).dropped == [DroppedEvent("unknown_bot", "5")]


# --- message content -------------------------------------------------------------


def test_quick_reply_payload() -> None:
    event = dm_event(text="Yes", quick_reply_response={"type": "options", "metadata": "opt_1"})
    message = only_message(parse_delivery(aaa(event), BOTS))
    assert message.text == "Yes"
    assert message.quick_reply_payload == "opt_1"


def test_quick_reply_of_unknown_type_ignored() -> None:
    event = dm_event(quick_reply_response={"type": "other", "metadata": "x"})
    assert only_message(parse_delivery(aaa(event), BOTS)).quick_reply_payload is None


def test_several_links_expanded_prefix_safe_and_repeated() -> None:
    text = "a https://t.co/ab b https://t.co/abc c https://t.co/ab. d https://t.co/xyz"
    urls = [
        url("https://t.co/ab", "https://one.example/"),
        url("https://t.co/abc", "https://two.example/"),
        url("https://t.co/ab", "https://one.example/"),
        url("https://t.co/xyz", "https://three.example/?q=https://t.co/ab"),
    ]
    message = only_message(parse_delivery(aaa(dm_event(text=text, urls=urls)), BOTS))
    assert message.text == (
        "a https://one.example/ b https://two.example/ c https://one.example/. "
        "d https://three.example/?q=https://t.co/ab"
    )


def test_link_without_entity_left_alone() -> None:
    message = only_message(parse_delivery(aaa(dm_event(text="x https://t.co/zz")), BOTS))
    assert message.text == "x https://t.co/zz"


def test_media_link_removed_mid_text_and_prefix_link_kept() -> None:
    media = {
        "type": "media",
        "media": {
            "id": 7,
            "media_url_https": "https://ton.twitter.com/v.mp4",
            "url": "https://t.co/m",
            "type": "video",
        },
    }
    text = "before https://t.co/m after https://t.co/mm"
    urls = [url("https://t.co/mm", "https://keep.example/")]
    message = only_message(
        parse_delivery(aaa(dm_event(text=text, urls=urls, attachment=media)), BOTS)
    )
    assert message.text == "before after https://keep.example/"
    assert message.attachments == (Attachment("video", "https://ton.twitter.com/v.mp4", "7"),)


def test_media_only_dm_has_empty_text() -> None:
    body = json.loads(PHOTO_DELIVERY)
    body["direct_message_events"][0]["message_create"]["message_data"]["text"] = (
        "https://t.co/Mq6pVXPx1M"
    )
    assert only_message(parse_delivery(body, BOTS)).text == ""


def test_media_link_recognised_from_entity_alone() -> None:
    urls = [url("https://t.co/p", "https://x.com/messages/media/123")]
    message = only_message(parse_delivery(aaa(dm_event(text="hi https://t.co/p", urls=urls)), BOTS))
    assert message.text == "hi"
    assert message.attachments == ()


@pytest.mark.parametrize(
    ("media_type", "expected"), [("photo", "image"), ("animated_gif", "gif"), ("video", "video")]
)
def test_media_types(media_type: str, expected: AttachmentType) -> None:
    media = {"type": "media", "media": {"id": 5, "media_url": "http://m/x", "type": media_type}}
    message = only_message(parse_delivery(aaa(dm_event(attachment=media)), BOTS))
    assert message.attachments == (Attachment(expected, "http://m/x", "5"),)


def test_unknown_media_type_skips_attachment_keeps_message() -> None:
    media = {"type": "media", "media": {"id_str": "5", "media_url_https": "u", "type": "sticker"}}
    message = only_message(parse_delivery(aaa(dm_event(text="hey", attachment=media)), BOTS))
    assert message.text == "hey"
    assert message.attachments == ()


def test_big_numeric_ids_preserved_exactly() -> None:
    raw = (
        '{"for_user_id": 732739706, "direct_message_events": [{"type": "message_create",'
        ' "id": 1494419467836000004, "created_timestamp": 1579966202136,'
        ' "message_create": {"sender_id": 1230981029831098231,'
        ' "message_data": {"text": "hi", "attachment": {"type": "media", "media":'
        ' {"id": 1494419466123456789, "media_url_https": "https://m/p.jpg", "type": "photo"}}}}}],'
        ' "users": {"1230981029831098231": {"name": "Big", "screen_name": "big"}}}'
    )
    message = only_message(parse_delivery(json.loads(raw), frozenset({"732739706"})))
    assert message.event_id == "1494419467836000004"
    assert message.bot_user_id == "732739706"
    assert message.sender == Sender("1230981029831098231", "big", "Big")
    assert message.created_timestamp_ms == 1579966202136
    assert message.attachments[0].media_id == "1494419466123456789"
    assert message.conversation_id == "732739706-1230981029831098231"


def test_sender_without_user_entry_has_no_names() -> None:
    body = aaa(dm_event())
    body["users"] = {}
    assert only_message(parse_delivery(body, BOTS)).sender == Sender(id=USER)


def test_missing_users_map_tolerated() -> None:
    body = aaa(dm_event())
    del body["users"]
    assert only_message(parse_delivery(body, BOTS)).sender == Sender(id=USER)


# --- malformed deliveries ---------------------------------------------------------


def _without(event: dict[str, Any], *path: str) -> dict[str, Any]:
    event = copy.deepcopy(event)
    target = event
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return event


def _with(event: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    event = copy.deepcopy(event)
    target = event
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return event


GOOD = dm_event()
XAA_GOOD = xaa(dm_event())


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([], id="list-body"),
        pytest.param("x", id="string-body"),
        pytest.param(None, id="null-body"),
        pytest.param(5, id="number-body"),
        pytest.param({}, id="empty-object"),
        pytest.param({"users": {}}, id="only-users"),
        pytest.param({"something_events": []}, id="unknown-shape"),
        pytest.param({"for_user_id": 5, "direct_message_events": "x"}, id="dm-events-not-list"),
        pytest.param({"for_user_id": BOT, "tweet_create_events": {}}, id="known-array-not-list"),
        pytest.param({"direct_message_events": [GOOD]}, id="no-for_user_id"),
        pytest.param(aaa(GOOD, for_user_id=None), id="null-for_user_id"),
        pytest.param(aaa(GOOD, for_user_id=4337869213.0), id="float-for_user_id"),
        pytest.param(aaa(GOOD, for_user_id=True), id="bool-for_user_id"),
        pytest.param(aaa(GOOD, for_user_id="bot"), id="non-numeric-for_user_id"),
        pytest.param(aaa("x"), id="element-not-object"),
        pytest.param(aaa(_without(GOOD, "type")), id="element-without-type"),
        pytest.param(aaa(_without(GOOD, "id")), id="element-without-id"),
        pytest.param(aaa(_with(GOOD, 1.5, "id")), id="element-float-id"),
        pytest.param(aaa(_without(GOOD, "message_create")), id="without-message_create"),
        pytest.param(aaa(_without(GOOD, "message_create", "sender_id")), id="without-sender_id"),
        pytest.param(
            aaa(_without(GOOD, "message_create", "message_data")), id="without-message_data"
        ),
        pytest.param(
            aaa(_without(GOOD, "message_create", "message_data", "text")), id="without-text"
        ),
        pytest.param(
            aaa(_with(GOOD, 3, "message_create", "message_data", "text")), id="non-string-text"
        ),
        pytest.param(aaa(_without(GOOD, "created_timestamp")), id="without-timestamp"),
        pytest.param(aaa(_with(GOOD, "soon", "created_timestamp")), id="bad-timestamp"),
        pytest.param({"data": "x"}, id="xaa-data-not-object"),
        pytest.param(_without(XAA_GOOD, "data", "filter"), id="xaa-without-filter"),
        pytest.param(_without(XAA_GOOD, "data", "event_type"), id="xaa-without-event_type"),
        pytest.param(_without(XAA_GOOD, "data", "payload"), id="xaa-without-payload"),
        pytest.param(_without(XAA_GOOD, "data", "filter", "user_id"), id="xaa-dm-without-user_id"),
        pytest.param(
            _without(XAA_GOOD, "data", "payload", "direct_message_events"),
            id="xaa-dm-without-events",
        ),
        pytest.param(
            xaa(_without(GOOD, "message_create", "sender_id")), id="xaa-element-malformed"
        ),
    ],
)
def test_malformed_raises_invalid_delivery(body: object) -> None:
    with pytest.raises(InvalidDelivery) as caught:
        parse_delivery(body, BOTS)
    assert caught.value.reason
    assert str(caught.value) == caught.value.reason


def test_numeric_string_and_int_timestamp_equivalent() -> None:
    as_int = parse_delivery(aaa(dm_event(timestamp=1579966202136)), BOTS)
    as_str = parse_delivery(aaa(dm_event(timestamp="1579966202136")), BOTS)
    assert as_int == as_str
