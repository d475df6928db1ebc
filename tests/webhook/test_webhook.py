"""The webhook endpoint against a real RabbitMQ: CRC, signatures, parsing, dedupe, persistence."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

from aiohttp.test_utils import TestClient

from tests.conftest import (
    BOT_A_USER_ID,
    BOT_B_USER_ID,
    CONSUMER_SECRET,
    USER_ID,
    connect_to,
    drain_queued,
    queue_exists,
    read_echo_stream,
)
from tests.support.deliveries import aaa_delivery, dm_event, signed, xaa_delivery
from twitter_bot.app import create_app, topology_for
from twitter_bot.models import IncomingMessage, SentEcho
from twitter_bot.settings import HttpSettings, Secret, Settings
from twitter_bot.webhook.signature import SIGNATURE_HEADER, crc_response_token, sign_body


async def client_for(aiohttp_client, settings: Settings) -> TestClient:  # type: ignore[no-untyped-def]
    return await aiohttp_client(create_app(settings, role="webhook"))


async def post(client: TestClient, body: dict | bytes, secret: str = CONSUMER_SECRET):  # type: ignore[no-untyped-def,type-arg]
    raw, headers = signed(body, secret)
    return await client.post("/webhooks", data=raw, headers=headers)


def test_crc_and_signature_match_the_spec_test_vectors() -> None:
    assert (
        crc_response_token("my_consumer_secret", "foo")
        == "sha256=lsBND23VDheU4e/PArTx3YDHHQ2xs23Hj6wI9/uhx3A="
    )
    assert (
        sign_body("my_consumer_secret", b'{"for_user_id":"4337869213","direct_message_events":[]}')
        == "sha256=RUlb18yLvtsFR8xVLMNce94SqjggeuxmtGUT5cC8tTs="
    )


async def test_crc_answers_with_the_spec_vector(aiohttp_client, settings: Settings) -> None:
    settings = replace(
        settings, auth=replace(settings.auth, consumer_secret=Secret("my_consumer_secret"))
    )
    client = await client_for(aiohttp_client, settings)
    response = await client.get("/webhooks", params={"crc_token": "foo", "nonce": "1"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert await response.json() == {
        "response_token": "sha256=lsBND23VDheU4e/PArTx3YDHHQ2xs23Hj6wI9/uhx3A="
    }


async def test_crc_without_token_is_400(aiohttp_client, settings: Settings) -> None:
    client = await client_for(aiohttp_client, settings)
    assert (await client.get("/webhooks")).status == 400
    assert (await client.get("/webhooks", params={"crc_token": ""})).status == 400


async def test_crc_is_answered_fast_while_the_broker_is_unreachable(
    aiohttp_client, settings: Settings
) -> None:
    from tests.conftest import make_settings

    down = make_settings(settings.rabbit.virtual_host, port=1, connect_timeout=0.2)
    client = await client_for(aiohttp_client, down)
    started = time.perf_counter()
    response = await client.get("/webhooks", params={"crc_token": "abc"})
    elapsed = time.perf_counter() - started
    assert response.status == 200
    assert (await response.json())["response_token"] == crc_response_token(CONSUMER_SECRET, "abc")
    assert elapsed < 0.1


async def test_signed_dm_is_queued_in_rabbitmq(aiohttp_client, settings: Settings) -> None:
    client = await client_for(aiohttp_client, settings)
    delivery = aaa_delivery(
        BOT_A_USER_ID, dm_event("1494419467836000004", USER_ID, BOT_A_USER_ID, "Hi there")
    )
    response = await post(client, delivery)
    assert response.status == 200
    queued = await drain_queued(settings)
    assert len(queued) == 1
    envelope = queued[0]
    assert envelope.kind == "dm"
    assert envelope.message_id == "1494419467836000004"
    assert envelope.conversation_id == f"{USER_ID}-{BOT_A_USER_ID}"
    message = IncomingMessage.from_dict(envelope.payload)
    assert message.bot_user_id == BOT_A_USER_ID  # exact, above 2**53
    assert message.sender.id == USER_ID
    assert message.sender.screen_name == "furiouscamper"
    assert message.text == "Hi there"


async def test_queued_message_is_persistent_and_survives_our_connection(
    aiohttp_client, settings: Settings, rabbit_channel
) -> None:  # type: ignore[no-untyped-def]
    client = await client_for(aiohttp_client, settings)
    response = await post(
        client, aaa_delivery(BOT_A_USER_ID, dm_event("77", USER_ID, BOT_A_USER_ID))
    )
    assert response.status == 200
    await client.close()  # the daemon's connection is gone; the message must not be
    from twitter_bot.app import topology_for

    topology = topology_for(settings)
    found = []
    for shard in range(topology.shards):
        queue = await rabbit_channel.declare_queue(topology.shard_queue(shard), passive=True)
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            found.append(message)
    assert len(found) == 1
    assert found[0].delivery_mode == 2  # persistent
    assert found[0].message_id == "77"


async def test_xaa_envelope_is_queued_like_aaa(aiohttp_client, settings: Settings) -> None:
    client = await client_for(aiohttp_client, settings)
    event = dm_event("555", USER_ID, BOT_B_USER_ID, "via XAA")
    response = await post(client, xaa_delivery(BOT_B_USER_ID, event))
    assert response.status == 200
    (envelope,) = await drain_queued(settings)
    message = IncomingMessage.from_dict(envelope.payload)
    assert (message.event_id, message.bot_user_id, message.text) == (
        "555",
        BOT_B_USER_ID,
        "via XAA",
    )


async def test_every_dm_of_a_batch_is_queued_in_order(aiohttp_client, settings: Settings) -> None:
    client = await client_for(aiohttp_client, settings)
    events = [dm_event(str(1000 + i), USER_ID, BOT_A_USER_ID, f"message {i}") for i in range(5)]
    response = await post(client, aaa_delivery(BOT_A_USER_ID, *events))
    assert response.status == 200
    assert (await response.json())["queued"] == 5
    queued = await drain_queued(settings)
    assert [e.message_id for e in queued] == [str(1000 + i) for i in range(5)]


async def test_missing_signature_is_401_and_nothing_queued(
    aiohttp_client, settings: Settings
) -> None:
    client = await client_for(aiohttp_client, settings)
    raw = json.dumps(aaa_delivery(BOT_A_USER_ID, dm_event("1", USER_ID, BOT_A_USER_ID))).encode()
    response = await client.post(
        "/webhooks", data=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status == 401
    assert await drain_queued(settings) == []


async def test_signature_with_wrong_secret_is_401(aiohttp_client, settings: Settings) -> None:
    client = await client_for(aiohttp_client, settings)
    response = await post(
        client,
        aaa_delivery(BOT_A_USER_ID, dm_event("1", USER_ID, BOT_A_USER_ID)),
        secret="not-the-secret",
    )
    assert response.status == 401
    assert await drain_queued(settings) == []


async def test_body_altered_by_one_byte_is_401(aiohttp_client, settings: Settings) -> None:
    client = await client_for(aiohttp_client, settings)
    raw, headers = signed(
        aaa_delivery(BOT_A_USER_ID, dm_event("1", USER_ID, BOT_A_USER_ID, "pay 10")),
        CONSUMER_SECRET,
    )
    tampered = raw.replace(b"pay 10", b"pay 90")
    assert len(tampered) == len(raw) and tampered != raw
    response = await client.post("/webhooks", data=tampered, headers=headers)
    assert response.status == 401
    assert await drain_queued(settings) == []


async def test_signature_failures_are_counted(aiohttp_client, settings: Settings) -> None:
    client = await client_for(aiohttp_client, settings)
    await client.post("/webhooks", data=b"{}", headers={SIGNATURE_HEADER: "sha256=AAAA"})
    metrics = await (await client.get("/metrics")).text()
    assert "twitter_bot_webhook_signature_failures_total 1.0" in metrics


async def test_body_over_the_limit_is_413(aiohttp_client, settings: Settings) -> None:
    settings = replace(settings, http=HttpSettings(max_body_size=2048))
    client = await client_for(aiohttp_client, settings)
    big = aaa_delivery(BOT_A_USER_ID, dm_event("1", USER_ID, BOT_A_USER_ID, "x" * 4000))
    response = await post(client, big)
    assert response.status == 413
    assert await drain_queued(settings) == []


async def test_malformed_bodies_are_400_never_500(aiohttp_client, settings: Settings) -> None:
    client = await client_for(aiohttp_client, settings)
    for raw in (b"not json", b"[1,2]", b'"text"', b"{}", b'{"unexpected": true}', b"\xff\xfe", b""):
        response = await post(client, raw)
        assert response.status == 400, raw
    assert await drain_queued(settings) == []


async def test_own_unknown_bot_and_non_dm_events_are_dropped_with_200(
    aiohttp_client, settings: Settings
) -> None:
    # resend-echo-wait 0: nothing waits for X's echoes of the bots' DMs, so they are dropped.
    settings = replace(settings, messaging=replace(settings.messaging, resend_echo_wait=0.0))
    client = await client_for(aiohttp_client, settings)
    own = aaa_delivery(BOT_A_USER_ID, dm_event("10", BOT_A_USER_ID, USER_ID, "my own reply"))
    unknown = aaa_delivery("999", dm_event("11", USER_ID, "999"))
    typing = {
        "for_user_id": BOT_A_USER_ID,
        "direct_message_indicate_typing_events": [
            {
                "created_timestamp": "1",
                "sender_id": USER_ID,
                "target": {"recipient_id": BOT_A_USER_ID},
            }
        ],
    }
    favorite = {"for_user_id": BOT_A_USER_ID, "favorite_events": [{"id": "f1"}]}
    for delivery in (own, unknown, typing, favorite):
        response = await post(client, delivery)
        assert response.status == 200
    assert await drain_queued(settings) == []
    metrics = await (await client.get("/metrics")).text()
    assert 'twitter_bot_webhook_events_dropped_total{reason="own_message"} 1.0' in metrics
    # Off, the streams are not even declared (a broker without streams must do).
    assert not await queue_exists(settings, topology_for(settings).echo_stream)
    assert not await queue_exists(settings, topology_for(settings).finished_stream)
    assert 'twitter_bot_webhook_events_dropped_total{reason="unknown_bot"} 1.0' in metrics
    assert 'twitter_bot_webhook_events_dropped_total{reason="not_a_dm"} 2.0' in metrics


# One delivery: X's echo of bot A's DM "my own reply" (id 10), and a user's DM (id 12).
ECHO_AND_DM = aaa_delivery(
    BOT_A_USER_ID,
    dm_event("10", BOT_A_USER_ID, USER_ID, "my own reply"),
    dm_event("12", USER_ID, BOT_A_USER_ID),
)


async def test_x_s_echo_of_a_bot_s_own_dm_goes_to_the_echo_stream_never_as_a_dm(
    aiohttp_client, settings: Settings
) -> None:
    assert settings.messaging.resend_echo_wait == 2.0  # the default: the echo check is on
    client = await client_for(aiohttp_client, settings)
    response = await post(client, ECHO_AND_DM)
    assert response.status == 200
    assert await response.json() == {"queued": 1, "duplicates": 0}
    queued = await drain_queued(settings)
    assert [(e.kind, e.message_id) for e in queued] == [("dm", "12")]
    echoes = await read_echo_stream(settings, expect=1)
    assert [(e.kind, e.message_id) for e in echoes] == [("echo", "10")]
    assert echoes[0].conversation_id == queued[0].conversation_id
    assert SentEcho.from_dict(echoes[0].payload).text == "my own reply"
    metrics = await (await client.get("/metrics")).text()
    assert "twitter_bot_echoes_queued_total 1.0" in metrics
    assert 'reason="own_message"' not in metrics


async def test_without_an_echo_stream_echoes_are_dropped_and_the_dms_beside_them_queued(
    aiohttp_client, settings: Settings
) -> None:
    # The broker refuses the stream (a classic queue holds its name, as a broker without
    # streams would refuse it): echoes cannot be recorded, and must not cost the DMs.
    settings = replace(settings, messaging=replace(settings.messaging, resend_echo_wait=2.0))
    connection = await connect_to(settings)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(topology_for(settings).echo_stream, durable=True)
    client = await client_for(aiohttp_client, settings)
    response = await post(client, ECHO_AND_DM)
    assert response.status == 200
    assert await response.json() == {"queued": 1, "duplicates": 0}
    assert [(e.kind, e.message_id) for e in await drain_queued(settings)] == [("dm", "12")]
    metrics = await (await client.get("/metrics")).text()
    assert 'twitter_bot_webhook_events_dropped_total{reason="own_message"} 1.0' in metrics


async def test_duplicate_event_id_is_queued_once(aiohttp_client, settings: Settings) -> None:
    client = await client_for(aiohttp_client, settings)
    delivery = aaa_delivery(BOT_A_USER_ID, dm_event("42", USER_ID, BOT_A_USER_ID))
    first = await post(client, delivery)
    second = await post(client, delivery)
    assert (first.status, second.status) == (200, 200)
    assert (await second.json())["duplicates"] == 1
    # The same id twice inside one delivery, and concurrent copies in overlapping order.
    twice = aaa_delivery(
        BOT_A_USER_ID,
        dm_event("43", USER_ID, BOT_A_USER_ID),
        dm_event("43", USER_ID, BOT_A_USER_ID),
    )
    assert (await post(client, twice)).status == 200
    forward = aaa_delivery(
        BOT_A_USER_ID,
        dm_event("50", USER_ID, BOT_A_USER_ID),
        dm_event("51", USER_ID, BOT_A_USER_ID),
    )
    backward = aaa_delivery(
        BOT_A_USER_ID,
        dm_event("51", USER_ID, BOT_A_USER_ID),
        dm_event("50", USER_ID, BOT_A_USER_ID),
    )
    responses = await asyncio.gather(*(post(client, d) for d in (forward, backward, forward)))
    assert [r.status for r in responses] == [200, 200, 200]
    queued = await drain_queued(settings)
    assert sorted(e.message_id for e in queued) == ["42", "43", "50", "51"]
    metrics = await (await client.get("/metrics")).text()
    # 42 again, 43 inside one delivery, then 50 and 51 twice each as concurrent copies.
    assert "twitter_bot_webhook_duplicates_dropped_total 6.0" in metrics


async def test_health_live_ready_and_metrics(aiohttp_client, settings: Settings) -> None:
    client = await client_for(aiohttp_client, settings)
    assert (await client.get("/health/live")).status == 200
    ready = await client.get("/health/ready")
    assert ready.status == 200
    assert (await ready.json())["checks"]["broker"] == "connected"
    await post(client, aaa_delivery(BOT_A_USER_ID, dm_event("9", USER_ID, BOT_A_USER_ID)))
    metrics = await client.get("/metrics")
    assert metrics.headers["Content-Type"].startswith("text/plain")
    text = await metrics.text()
    assert 'twitter_bot_webhook_deliveries_total{outcome="accepted"} 1.0' in text
    assert "twitter_bot_publish_confirm_seconds_count 1.0" in text
    assert "twitter_bot_broker_connected 1.0" in text
