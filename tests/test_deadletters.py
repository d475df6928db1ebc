"""The dead-letter tools against the real RabbitMQ: list, retry (re-drive), purge, and the CLI."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, DeliveryMode

from tests.conftest import BOT_A_USER_ID, make_settings
from tests.support.daemon import SECRETS, cli_env, free_port, write_config
from tests.support.rabbit import RABBIT_HOST, RABBIT_PORT
from twitter_bot import deadletters
from twitter_bot.app import topology_for
from twitter_bot.deadletters import Command, Selection
from twitter_bot.models import IncomingMessage, Sender
from twitter_bot.queue.base import (
    DM_KIND,
    HEADER_ATTEMPT,
    HEADER_BOT_ID,
    HEADER_CONVERSATION_ID,
    HEADER_DEAD_AT,
    HEADER_DEAD_REASON,
    HEADER_ERROR_BODY,
    HEADER_ERROR_CODE,
    HEADER_ERROR_KIND,
    HEADER_ERROR_STATUS,
    HEADER_NOT_BEFORE,
    Envelope,
    shard_of,
)
from twitter_bot.queue.rabbit import Topology, declare_topology
from twitter_bot.settings import Settings

REPO = Path(__file__).resolve().parents[1]
ERROR_HEADERS = {
    HEADER_ATTEMPT,
    HEADER_NOT_BEFORE,
    HEADER_DEAD_REASON,
    HEADER_ERROR_KIND,
    HEADER_ERROR_STATUS,
    HEADER_ERROR_CODE,
    HEADER_ERROR_BODY,
    HEADER_DEAD_AT,
}


def dm_envelope(event_id: str, sender_id: str, text: str = "hello") -> Envelope:
    message = IncomingMessage(
        event_id=event_id,
        bot_user_id=BOT_A_USER_ID,
        sender=Sender(id=sender_id, screen_name="someone"),
        created_timestamp_ms=1_700_000_000_000,
        text=text,
    )
    return Envelope(
        kind=DM_KIND,
        message_id=event_id,
        conversation_id=message.conversation_id,
        payload=message.to_dict(),
        accepted_at=1_700_000_000.5,
    )


async def dead_letter(
    channel: AbstractChannel,
    topology: Topology,
    envelope: Envelope,
    *,
    error_kind: str = "gateway",
    reason: str = "gateway answered 503",
    status: int | None = 503,
    code: int | None = None,
    attempt: int = 5,
    body: bytes | None = None,
) -> None:
    """Dead-letter ``envelope`` the way the bridge does."""
    headers: dict[str, Any] = {
        HEADER_DEAD_REASON: reason,
        HEADER_ERROR_KIND: error_kind,
        HEADER_ATTEMPT: attempt,
        HEADER_DEAD_AT: "2024-05-01T12:00:00+00:00",
        HEADER_BOT_ID: "bot-a",
        HEADER_CONVERSATION_ID: envelope.conversation_id,
        HEADER_NOT_BEFORE: 1_700_000_100_000,
        "x-trace": "keep-me",
    }
    if status is not None:
        headers[HEADER_ERROR_STATUS] = status
    if code is not None:
        headers[HEADER_ERROR_CODE] = code
    if error_kind == "gateway":
        headers[HEADER_ERROR_BODY] = '{"error": "unavailable"}'
    exchange = await declare_topology(channel, topology)
    await exchange.publish(
        aio_pika.Message(
            body=body if body is not None else envelope.encode(),
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=envelope.message_id,
            headers=headers,
        ),
        routing_key=topology.dead_letter_routing_key,
    )


@pytest.fixture
async def connection(rabbit_vhost: str) -> AsyncIterator[AbstractConnection]:
    conn = await aio_pika.connect(host=RABBIT_HOST, port=RABBIT_PORT, virtualhost=rabbit_vhost)
    async with conn:
        yield conn


@pytest.fixture
async def three(settings: Settings, rabbit_channel: AbstractChannel) -> list[Envelope]:
    """Three dead letters in three conversations, oldest first."""
    envelopes = [
        dm_envelope("1001", "3001969357", "first"),
        dm_envelope("1002", "3001969358", "second"),
        dm_envelope("1003", "3001969359", "third"),
    ]
    topology = topology_for(settings)
    await dead_letter(rabbit_channel, topology, envelopes[0])
    await dead_letter(
        rabbit_channel,
        topology,
        envelopes[1],
        error_kind="x",
        status=403,
        code=349,
        reason="X refused: user cannot receive DMs",
    )
    await dead_letter(
        rabbit_channel, topology, envelopes[2], error_kind="attempts-exhausted", status=None
    )
    return envelopes


async def remaining_ids(connection: AbstractConnection, topology: Topology) -> list[str]:
    listing = await deadletters.list_dead_letters(connection, topology)
    return [letter.message_id for letter in listing.letters]


async def run_command(settings: Settings, command: Command) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await deadletters.execute(settings, command, out, err)
    return code, out.getvalue(), err.getvalue()


async def take_from_shard(
    channel: AbstractChannel, topology: Topology, conversation_id: str
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    queue = await channel.get_queue(
        topology.shard_queue(shard_of(conversation_id, topology.shards))
    )
    taken = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        taken.append(message)
    return taken


# --- list ----------------------------------------------------------------------


async def test_list_shows_every_dead_letter_oldest_first_and_consumes_nothing(
    settings: Settings, connection: AbstractConnection, three: list[Envelope]
) -> None:
    topology = topology_for(settings)
    first = await deadletters.list_dead_letters(connection, topology)
    second = await deadletters.list_dead_letters(connection, topology)

    assert [letter.message_id for letter in first.letters] == ["1001", "1002", "1003"]
    assert [letter.message_id for letter in second.letters] == ["1001", "1002", "1003"]
    assert first.total == second.total == 3
    x_failure = first.letters[1]
    assert x_failure.envelope == three[1]
    assert (x_failure.kind, x_failure.bot_id, x_failure.attempts) == (DM_KIND, "bot-a", 5)
    assert (x_failure.error_kind, x_failure.error_status, x_failure.error_code) == ("x", 403, 349)
    assert x_failure.conversation_id == three[1].conversation_id
    assert x_failure.dead_lettered_at == "2024-05-01T12:00:00+00:00"


async def test_list_command_prints_one_line_per_message(
    settings: Settings, three: list[Envelope]
) -> None:
    code, out, err = await run_command(settings, Command("list"))
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("1001  dm  bot=bot-a  ")
    assert f"conversation={three[1].conversation_id}" in lines[1]
    assert "attempts=5" in lines[1]
    assert "error=x status=403 code=349" in lines[1]
    assert 'reason="X refused: user cannot receive DMs"' in lines[1]
    assert "at=2024-05-01T12:00:00+00:00" in lines[1]
    assert "error=attempts-exhausted  " in lines[2]

    again = await run_command(settings, Command("list"))
    assert again == (0, out, err)


async def test_list_json_includes_the_envelope(settings: Settings, three: list[Envelope]) -> None:
    code, out, _ = await run_command(settings, Command("list", as_json=True, limit=2))
    assert code == 0
    objects = [json.loads(line) for line in out.splitlines()]
    assert [o["message_id"] for o in objects] == ["1001", "1002"]
    assert objects[0]["envelope"]["payload"]["text"] == "first"
    assert objects[0]["envelope"]["conversation_id"] == three[0].conversation_id
    assert objects[1]["error"] == {"kind": "x", "status": 403, "code": 349, "body": None}
    assert objects[1]["headers"]["x-trace"] == "keep-me"


async def test_list_limit_leaves_the_rest_in_order(
    settings: Settings, connection: AbstractConnection, three: list[Envelope]
) -> None:
    topology = topology_for(settings)
    listing = await deadletters.list_dead_letters(connection, topology, limit=1)
    assert [letter.message_id for letter in listing.letters] == ["1001"]
    assert listing.total == 3
    assert await remaining_ids(connection, topology) == ["1001", "1002", "1003"]


async def test_list_empty_queue_on_a_fresh_broker(settings: Settings) -> None:
    code, out, err = await run_command(settings, Command("list"))
    assert (code, out.strip(), err) == (0, "no dead letters", "")


async def test_undecodable_body_is_listed_and_not_re_driven(
    settings: Settings, connection: AbstractConnection, rabbit_channel: AbstractChannel
) -> None:
    topology = topology_for(settings)
    await dead_letter(
        rabbit_channel,
        topology,
        dm_envelope("2001", "3001969357"),
        body=b"not json",
        error_kind="invalid",
        status=None,
    )
    code, out, _ = await run_command(settings, Command("list", as_json=True))
    assert code == 0
    (listed,) = [json.loads(line) for line in out.splitlines()]
    assert (listed["message_id"], listed["envelope"], listed["body"]) == ("2001", None, "not json")

    code, out, err = await run_command(settings, Command("retry", Selection(all=True)))
    assert code == 1
    assert "2001" in err
    assert await remaining_ids(connection, topology) == ["2001"]


# --- retry ---------------------------------------------------------------------


async def test_retry_one_id_re_drives_exactly_that_message_afresh(
    settings: Settings,
    connection: AbstractConnection,
    rabbit_channel: AbstractChannel,
    three: list[Envelope],
) -> None:
    topology = topology_for(settings)
    code, out, err = await run_command(settings, Command("retry", Selection(frozenset({"1002"}))))
    assert code == 0, err
    assert "re-drove 1002 -> " in out
    assert "re-drove 1 dead letter(s)" in out

    (message,) = await take_from_shard(rabbit_channel, topology, three[1].conversation_id)
    assert message.body == three[1].encode()
    assert message.message_id == "1002"
    assert message.delivery_mode == DeliveryMode.PERSISTENT
    headers = dict(message.headers)
    assert not ERROR_HEADERS & headers.keys()
    assert headers[HEADER_CONVERSATION_ID] == three[1].conversation_id
    assert headers[HEADER_BOT_ID] == "bot-a"
    assert headers["x-trace"] == "keep-me"
    assert await remaining_ids(connection, topology) == ["1001", "1003"]
    for other in (three[0], three[2]):
        assert await take_from_shard(rabbit_channel, topology, other.conversation_id) == []


async def test_retry_all_uses_the_current_shard_count(
    settings: Settings,
    connection: AbstractConnection,
    rabbit_channel: AbstractChannel,
    three: list[Envelope],
) -> None:
    resharded = replace(settings, rabbit=replace(settings.rabbit, shards=3))
    topology = topology_for(resharded)
    code, out, err = await run_command(resharded, Command("retry", Selection(all=True)))
    assert code == 0, err
    assert "re-drove 3 dead letter(s)" in out
    for envelope in three:
        (message,) = await take_from_shard(rabbit_channel, topology, envelope.conversation_id)
        assert Envelope.decode(message.body) == envelope
    assert await remaining_ids(connection, topology) == []


async def test_retry_unknown_id_exits_1_and_touches_nothing(
    settings: Settings, connection: AbstractConnection, three: list[Envelope]
) -> None:
    code, out, err = await run_command(settings, Command("retry", Selection(frozenset({"999"}))))
    assert code == 1
    assert "no dead letter with id 999" in err
    assert "re-drove 0 dead letter(s)" in out
    assert await remaining_ids(connection, topology_for(settings)) == ["1001", "1002", "1003"]


async def test_retry_with_known_and_unknown_ids_re_drives_the_known(
    settings: Settings, connection: AbstractConnection, three: list[Envelope]
) -> None:
    selection = Selection(frozenset({"1003", "999"}))
    code, _, err = await run_command(settings, Command("retry", selection))
    assert code == 1
    assert "999" in err
    assert await remaining_ids(connection, topology_for(settings)) == ["1001", "1002"]


# --- purge ---------------------------------------------------------------------


async def test_purge_one_id(
    settings: Settings, connection: AbstractConnection, three: list[Envelope]
) -> None:
    code, out, err = await run_command(settings, Command("purge", Selection(frozenset({"1001"}))))
    assert code == 0, err
    assert "purged 1 dead letter(s)" in out
    assert await remaining_ids(connection, topology_for(settings)) == ["1002", "1003"]


async def test_purge_all_and_unknown_id(
    settings: Settings,
    connection: AbstractConnection,
    rabbit_channel: AbstractChannel,
    three: list[Envelope],
) -> None:
    code, _, err = await run_command(settings, Command("purge", Selection(frozenset({"999"}))))
    assert code == 1
    assert "no dead letter with id 999" in err

    code, out, _ = await run_command(settings, Command("purge", Selection(all=True)))
    assert code == 0
    assert "purged 3 dead letter(s)" in out
    topology = topology_for(settings)
    assert await remaining_ids(connection, topology) == []
    for envelope in three:  # purged, not re-driven
        assert await take_from_shard(rabbit_channel, topology, envelope.conversation_id) == []


# --- failures and the command line ---------------------------------------------


async def test_broker_unreachable_is_one_line_and_exit_3(rabbit_vhost: str) -> None:
    settings = make_settings(rabbit_vhost, port=free_port())
    code, out, err = await run_command(settings, Command("list"))
    assert code == 3
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "cannot reach RabbitMQ at 127.0.0.1:" in err
    assert "guest" not in err


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "twitter_bot",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(),
        cwd=REPO,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_lists_dead_letters(
    tmp_path: Path, rabbit_vhost: str, rabbit_channel: AbstractChannel
) -> None:
    prefix = f"t-{uuid.uuid4().hex[:10]}"
    config = write_config(
        tmp_path / "app.conf", vhost=rabbit_vhost, queue_prefix=prefix, http_port=free_port()
    )
    code, out, err = await run_cli("dead-letters", "list", "--config", str(config))
    assert (code, out.strip()) == (0, "no dead letters"), err

    envelope = dm_envelope("3001", "3001969357")
    await dead_letter(rabbit_channel, Topology(prefix=prefix, shards=8), envelope)
    code, out, err = await run_cli("dead-letters", "list", "--config", str(config))
    assert code == 0, err
    assert out.startswith("3001  dm  bot=bot-a  ")
    assert len(out.splitlines()) == 1
    for secret in SECRETS.values():
        assert secret not in out + err

    code, _, err = await run_cli("dead-letters", "retry", "--config", str(config))
    assert code == 2
    assert "--id" in err


async def test_cli_broker_unreachable_exits_3_with_one_line(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "app.conf",
        vhost="/",
        queue_prefix="cli",
        http_port=free_port(),
        rabbit_port=free_port(),
    )
    code, out, err = await run_cli("dead-letters", "purge", "--all", "--config", str(config))
    assert code == 3
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert "cannot reach RabbitMQ" in err


class _Unroutable(Topology):
    """A topology whose shard routing keys lead nowhere, to make re-drives bounce."""

    def routing_key_for(self, conversation_id: str) -> str:
        return "nowhere"


async def test_retry_stops_at_an_unroutable_publish_and_loses_nothing(
    settings: Settings, connection: AbstractConnection, three: list[Envelope]
) -> None:
    topology = topology_for(settings)
    broken = _Unroutable(prefix=topology.prefix, shards=topology.shards)
    outcome = await deadletters.retry_dead_letters(connection, broken, Selection(all=True))
    assert outcome.done == []
    assert [letter.message_id for letter, _ in outcome.failed] == ["1001", "1002", "1003"]
    assert "publish failed" in outcome.failed[0][1]
    assert "earlier failure" in outcome.failed[1][1]
    assert await remaining_ids(connection, topology) == ["1001", "1002", "1003"]
