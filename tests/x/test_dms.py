"""Happy paths: each client method against FakeX, checked through what FakeX recorded."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.fake_x import EndpointKind, FakeX
from tests.x.conftest import BOT_A_ID, BOT_B_ID, USER_ID
from twitter_bot.x import QuickReplyOption, XClient, XCredentials


async def test_send_dm_v11_records_sender_text_and_quick_replies(
    client: XClient, fake_x: FakeX, creds_a: XCredentials
) -> None:
    options = [
        QuickReplyOption("Red Bird", "A description", "external_id_1"),
        QuickReplyOption("Blue Bird", "Another", "external_id_2"),
    ]
    sent = await client.send_dm_v11(
        creds_a, USER_ID, "Favourite bird?", quick_reply_options=options
    )

    [call] = fake_x.sent_dms()
    assert call.kind is EndpointKind.DM_V11
    assert call.api_version == "1.1"
    assert (call.user_id, call.recipient_id, call.text) == (BOT_A_ID, USER_ID, "Favourite bird?")
    assert call.quick_replies == (
        {"label": "Red Bird", "description": "A description", "metadata": "external_id_1"},
        {"label": "Blue Bird", "description": "Another", "metadata": "external_id_2"},
    )
    assert call.media_id is None
    assert sent.event_id == call.event_id
    assert isinstance(sent.event_id, str)


async def test_quick_replies_without_descriptions_leave_the_key_out(
    client: XClient, fake_x: FakeX, creds_a: XCredentials
) -> None:
    await client.send_dm_v11(
        creds_a, USER_ID, "Pick", quick_reply_options=[QuickReplyOption("One", None, "1")]
    )

    [call] = fake_x.sent_dms()
    assert call.quick_replies == ({"label": "One", "metadata": "1"},)


async def test_each_bot_is_recorded_as_the_sender_of_its_own_dms(
    client: XClient, fake_x: FakeX, creds_a: XCredentials, creds_b: XCredentials
) -> None:
    await client.send_dm_v11(creds_a, USER_ID, "from a")
    await client.send_dm_v2(creds_b, USER_ID, "from b")

    assert [(c.user_id, c.text) for c in fake_x.sent_dms()] == [
        (BOT_A_ID, "from a"),
        (BOT_B_ID, "from b"),
    ]
    assert [c.text for c in fake_x.sent_dms(user_id=BOT_B_ID)] == ["from b"]


async def test_send_dm_v2_returns_event_and_conversation_ids(
    client: XClient, fake_x: FakeX, creds_a: XCredentials
) -> None:
    sent = await client.send_dm_v2(creds_a, USER_ID, "hello v2")

    [call] = fake_x.sent_dms()
    assert call.kind is EndpointKind.DM_V2
    assert call.api_version == "2"
    assert (call.user_id, call.recipient_id, call.text) == (BOT_A_ID, USER_ID, "hello v2")
    assert sent.event_id == call.event_id
    assert sent.conversation_id == f"{USER_ID}-{BOT_A_ID}"


async def test_dms_with_uploaded_media_carry_the_media_id(
    client: XClient, fake_x: FakeX, creds_a: XCredentials
) -> None:
    media_id = await client.upload_media(creds_a, b"\x89PNG...", "image/png", "dm_image")

    await client.send_dm_v11(creds_a, USER_ID, "v1.1 photo", media_id=media_id)
    await client.send_dm_v2(creds_a, USER_ID, "v2 photo", media_id=media_id)

    assert [c.media_id for c in fake_x.sent_dms()] == [media_id, media_id]
    assert fake_x.sent_dms()[1].payload == {
        "text": "v2 photo",
        "attachments": [{"media_id": media_id}],
    }


async def test_indicate_typing_and_mark_read(
    client: XClient, fake_x: FakeX, creds_a: XCredentials
) -> None:
    await client.indicate_typing(creds_a, USER_ID)
    await client.mark_read(creds_a, USER_ID, "1221092871941558276")

    [typing] = fake_x.calls_of(EndpointKind.INDICATE_TYPING)
    [read] = fake_x.calls_of(EndpointKind.MARK_READ)
    assert (typing.user_id, typing.recipient_id) == (BOT_A_ID, USER_ID)
    assert (read.user_id, read.recipient_id, read.last_read_event_id) == (
        BOT_A_ID,
        USER_ID,
        "1221092871941558276",
    )


async def test_results_carry_the_rate_limit_headers(client: XClient, creds_a: XCredentials) -> None:
    first = await client.send_dm_v11(creds_a, USER_ID, "one")
    second = await client.send_dm_v11(creds_a, USER_ID, "two")
    typing = await client.indicate_typing(creds_a, USER_ID)

    assert first.rate_limit.limit == 1000
    assert first.rate_limit.remaining == 999
    assert second.rate_limit.remaining == 998
    assert first.rate_limit.reset_at is not None
    assert typing.remaining == 999


async def test_wait_for_dms_returns_once_enough_arrived(
    client: XClient, fake_x: FakeX, creds_a: XCredentials
) -> None:
    waiter = asyncio.create_task(fake_x.wait_for_dms(2, user_id=BOT_A_ID, timeout=2))
    await client.send_dm_v11(creds_a, USER_ID, "one")
    await client.send_dm_v2(creds_a, USER_ID, "two")

    assert [call.text for call in await waiter] == ["one", "two"]


async def test_wait_for_dms_times_out(fake_x: FakeX) -> None:
    with pytest.raises(TimeoutError):
        await fake_x.wait_for_dms(1, timeout=0.05)
