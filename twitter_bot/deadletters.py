"""Operator tools for the dead-letter queue: list, re-drive (retry) and purge.

Messages the bridge gave up on sit in ``{prefix}.dead-letter`` with the reason
in ``x-*`` headers. These one-shot functions read that queue without losing or
reordering anything: every message is fetched with ``basic.get`` and manual ack,
and whatever is not deliberately removed is requeued in its original order, so
an interrupted run leaves the queue as it found it (the broker requeues unacked
messages when the connection drops).

The functions take a connection and return data; :func:`execute` is the thin
command layer that prints and chooses the exit code.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import json
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    DeliveryMode,
)

from twitter_bot.app import topology_for
from twitter_bot.logs import REDACTED
from twitter_bot.queue.base import (
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
    HEADER_REDRIVEN,
    Envelope,
    shard_of,
)
from twitter_bot.queue.rabbit import Topology, declare_topology
from twitter_bot.queue.sqlite import SqliteQueue
from twitter_bot.settings import RabbitSettings, Settings

EXIT_OK = 0
EXIT_FAILED = 1  # an --id was not found, or a selected message could not be re-driven
EXIT_BROKER_UNAVAILABLE = 3

# Headers describing the failed attempts; a re-driven message starts afresh without them.
RETRY_STRIPPED_HEADERS = frozenset(
    {
        HEADER_ATTEMPT,
        HEADER_NOT_BEFORE,
        HEADER_DEAD_REASON,
        HEADER_ERROR_KIND,
        HEADER_ERROR_STATUS,
        HEADER_ERROR_CODE,
        HEADER_ERROR_BODY,
        HEADER_DEAD_AT,
    }
)

BROKER_ERRORS = (OSError, TimeoutError, aiormq.exceptions.AMQPError)


class BrokerUnavailable(Exception):
    """No configured RabbitMQ host accepted a connection; the message names hosts, never secrets."""


def _plain(value: Any) -> Any:
    """An AMQP header value as JSON-friendly data."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode(errors="replace")
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class DeadLetter:
    """One message of the dead-letter queue, read without consuming it.

    ``envelope`` is None when the body is not a valid envelope (the bridge
    dead-letters undecodable messages too); such a message can be listed and
    purged but not re-driven.
    """

    message_id: str
    body: bytes
    headers: Mapping[str, Any]
    envelope: Envelope | None

    @classmethod
    def from_message(cls, message: AbstractIncomingMessage) -> DeadLetter:
        return cls.from_parts(message.message_id, message.body, dict(message.headers or {}))

    @classmethod
    def from_parts(
        cls, message_id: str | None, body: bytes, headers: Mapping[str, Any]
    ) -> DeadLetter:
        try:
            envelope: Envelope | None = Envelope.decode(body)
        except (ValueError, KeyError, TypeError, AttributeError):
            envelope = None
        message_id = message_id or (envelope.message_id if envelope else "") or "-"
        return cls(message_id=message_id, body=body, headers=headers, envelope=envelope)

    def _text(self, key: str) -> str | None:
        value = self.headers.get(key)
        return None if value is None or value in ("", b"") else str(_plain(value))

    def _int(self, key: str) -> int | None:
        value = _plain(self.headers.get(key))
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        try:
            return int(str(value))
        except ValueError:
            return None

    def has_id(self, wanted: str) -> bool:
        """Whether ``wanted`` is this message's AMQP message id or its envelope's."""
        return wanted == self.message_id or (
            self.envelope is not None and wanted == self.envelope.message_id
        )

    @property
    def kind(self) -> str | None:
        return self.envelope.kind if self.envelope else None

    @property
    def conversation_id(self) -> str | None:
        if self.envelope is not None:
            return self.envelope.conversation_id
        return self._text(HEADER_CONVERSATION_ID)

    @property
    def bot_id(self) -> str | None:
        return self._text(HEADER_BOT_ID)

    @property
    def attempts(self) -> int | None:
        return self._int(HEADER_ATTEMPT)

    @property
    def error_kind(self) -> str | None:
        return self._text(HEADER_ERROR_KIND)

    @property
    def error_status(self) -> int | None:
        return self._int(HEADER_ERROR_STATUS)

    @property
    def error_code(self) -> int | None:
        return self._int(HEADER_ERROR_CODE)

    @property
    def error_body(self) -> str | None:
        return self._text(HEADER_ERROR_BODY)

    @property
    def reason(self) -> str | None:
        return self._text(HEADER_DEAD_REASON)

    @property
    def dead_lettered_at(self) -> str | None:
        return self._text(HEADER_DEAD_AT)

    def to_json(self) -> dict[str, Any]:
        """Everything known about the message, including the envelope and its payload."""
        data: dict[str, Any] = {
            "message_id": self.message_id,
            "kind": self.kind,
            "bot_id": self.bot_id,
            "conversation_id": self.conversation_id,
            "attempts": self.attempts,
            "error": {
                "kind": self.error_kind,
                "status": self.error_status,
                "code": self.error_code,
                "body": self.error_body,
            },
            "reason": self.reason,
            "dead_lettered_at": self.dead_lettered_at,
            "headers": _plain(self.headers),
            "envelope": json.loads(self.body) if self.envelope is not None else None,
        }
        if self.envelope is None:
            data["body"] = self.body.decode(errors="replace")
        return data


@dataclass(frozen=True)
class Listing:
    """The first dead letters, oldest first, and how many the queue held when read."""

    letters: list[DeadLetter]
    total: int


@dataclass(frozen=True)
class Selection:
    """Which dead letters a retry or purge acts on: the given message ids, or all."""

    ids: frozenset[str] = frozenset()
    all: bool = False

    def matches(self, letter: DeadLetter) -> bool:
        return self.all or any(letter.has_id(wanted) for wanted in self.ids)


@dataclass
class Outcome:
    """What a retry or purge did: the messages handled, ids not found, messages left and why."""

    done: list[DeadLetter] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failed: list[tuple[DeadLetter, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.failed


@dataclass
class _Held:
    message: AbstractIncomingMessage
    letter: DeadLetter


@dataclass
class _Batch:
    held: list[_Held]
    total: int


async def connect(rabbit: RabbitSettings) -> AbstractConnection:
    """Connect to the first reachable host of ``rabbit.hosts``; raise BrokerUnavailable."""
    failures: list[str] = []
    for host in rabbit.hosts:
        try:
            return await aio_pika.connect(
                host=host.host,
                port=host.port,
                login=rabbit.username,
                password=rabbit.password.value,
                virtualhost=rabbit.virtual_host,
                timeout=rabbit.connect_timeout,
                client_properties={"connection_name": "twitter-bot dead-letters"},
            )
        except BROKER_ERRORS as exc:
            failures.append(f"{host.host}:{host.port} ({describe_error(exc, rabbit)})")
    raise BrokerUnavailable("cannot reach RabbitMQ at " + ", ".join(failures))


def describe_error(exc: BaseException, rabbit: RabbitSettings) -> str:
    """An exception as one line, with the broker password masked should it appear."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    password = rabbit.password.value
    return text.replace(password, REDACTED) if len(password) >= 4 else text


@asynccontextmanager
async def _dead_letter_queue(
    connection: AbstractConnection, topology: Topology
) -> AsyncIterator[tuple[AbstractExchange, AbstractQueue]]:
    """A confirm channel with the topology declared (so a fresh broker works too)."""
    # on_return_raises makes an unroutable re-drive an error instead of a silent drop.
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    async with channel:
        exchange = await declare_topology(channel, topology)
        queue = await channel.get_queue(topology.dead_letter_queue, ensure=False)
        yield exchange, queue


@asynccontextmanager
async def _hold(queue: AbstractQueue, limit: int | None = None) -> AsyncIterator[_Batch]:
    """Fetch up to ``limit`` messages without acking them; requeue the unsettled ones after.

    Only the messages present at the first fetch are taken, so dead letters
    arriving meanwhile are left alone. Requeueing in delivery order puts every
    message back in its original position.
    """
    batch = _Batch(held=[], total=0)
    try:
        first = await queue.get(no_ack=False, fail=False)
        if first is not None:
            batch.held.append(_Held(first, DeadLetter.from_message(first)))
            # basic.get-ok counts the messages still ready behind this one.
            batch.total = 1 + (first.message_count or 0)
            wanted = batch.total if limit is None else min(limit, batch.total)
            while len(batch.held) < wanted:
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                batch.held.append(_Held(message, DeadLetter.from_message(message)))
        yield batch
    finally:
        # A closed channel has already returned its unacked messages to the queue.
        if not queue.channel.is_closed:
            for item in batch.held:
                if not item.message.processed:
                    await item.message.nack(requeue=True)


async def list_dead_letters(
    connection: AbstractConnection, topology: Topology, *, limit: int | None = None
) -> Listing:
    """The dead letters, oldest first, at most ``limit`` of them; nothing is consumed."""
    async with (
        _dead_letter_queue(connection, topology) as (_, queue),
        _hold(queue, limit) as batch,
    ):
        return Listing([item.letter for item in batch.held], batch.total)


def redrive_message(letter: DeadLetter) -> aio_pika.Message:
    """The message that re-drives ``letter``: same body and id, failure headers removed.

    Marked as re-driven so the bridge does not drop it as a duplicate of its first try.
    """
    headers = {k: v for k, v in letter.headers.items() if k not in RETRY_STRIPPED_HEADERS}
    headers[HEADER_REDRIVEN] = 1
    return aio_pika.Message(
        body=letter.body,
        content_type="application/json",
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=letter.message_id,
        headers=headers,
    )


async def _redrive(
    exchange: AbstractExchange,
    topology: Topology,
    item: _Held,
    confirm_timeout: float,
) -> str | None:
    """Publish one dead letter to its conversation's shard, then ack it; the error, if any."""
    envelope = item.letter.envelope
    assert envelope is not None
    try:
        await exchange.publish(
            redrive_message(item.letter),
            routing_key=topology.routing_key_for(envelope.conversation_id),
            mandatory=True,
            timeout=confirm_timeout,
        )
    except TimeoutError:
        return "publish not confirmed in time (it may still reach its shard)"
    except aiormq.exceptions.AMQPError as exc:
        return f"publish failed: {type(exc).__name__}"
    # Acked only once the broker confirmed the copy: a crash in between duplicates, never loses.
    await item.message.ack()
    return None


async def retry_dead_letters(
    connection: AbstractConnection,
    topology: Topology,
    selection: Selection,
    *,
    confirm_timeout: float = 5.0,
) -> Outcome:
    """Re-drive the selected dead letters, oldest first, into their current shard queues.

    Stops at the first failed publish, so a conversation's later messages never
    overtake an earlier one; what was not re-driven stays in the dead-letter queue.
    """
    outcome = Outcome()
    async with (
        _dead_letter_queue(connection, topology) as (exchange, queue),
        _hold(queue) as batch,
    ):
        halted = False
        for item in batch.held:
            if not selection.matches(item.letter):
                continue
            if item.letter.envelope is None:
                outcome.failed.append((item.letter, "the body is not a valid envelope"))
                continue
            if halted:
                outcome.failed.append((item.letter, "not tried after an earlier failure"))
                continue
            error = await _redrive(exchange, topology, item, confirm_timeout)
            if error is None:
                outcome.done.append(item.letter)
            else:
                outcome.failed.append((item.letter, error))
                halted = True
        outcome.missing.extend(_missing(selection, batch))
    return outcome


async def purge_dead_letters(
    connection: AbstractConnection, topology: Topology, selection: Selection
) -> Outcome:
    """Remove the selected dead letters for good; the others stay in place."""
    outcome = Outcome()
    async with (
        _dead_letter_queue(connection, topology) as (_, queue),
        _hold(queue) as batch,
    ):
        for item in batch.held:
            if selection.matches(item.letter):
                await item.message.ack()
                outcome.done.append(item.letter)
        outcome.missing.extend(_missing(selection, batch))
    return outcome


def _missing(selection: Selection, batch: _Batch) -> list[str]:
    return [
        wanted
        for wanted in sorted(selection.ids)
        if not any(item.letter.has_id(wanted) for item in batch.held)
    ]


# --- the command layer ---------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A parsed ``twitter-bot dead-letters`` invocation."""

    action: Literal["list", "retry", "purge"]
    selection: Selection = Selection()
    limit: int | None = None
    as_json: bool = False


def _token(value: object) -> str:
    """A value for a one-line listing: '-' when absent, JSON-quoted when it has spaces."""
    if value is None:
        return "-"
    text = str(value)
    if not text or any(c.isspace() or c == '"' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def format_line(letter: DeadLetter) -> str:
    """One human-readable line describing a dead letter."""
    error = f"error={_token(letter.error_kind)}"
    if letter.error_status is not None:
        error += f" status={letter.error_status}"
    if letter.error_code is not None:
        error += f" code={letter.error_code}"
    return "  ".join(
        [
            _token(letter.message_id),
            _token(letter.kind),
            f"bot={_token(letter.bot_id)}",
            f"conversation={_token(letter.conversation_id)}",
            f"attempts={_token(letter.attempts)}",
            error,
            f"at={_token(letter.dead_lettered_at)}",
            f"reason={json.dumps(letter.reason or '', ensure_ascii=False)}",
        ]
    )


def _print_listing(listing: Listing, command: Command, out: TextIO, err: TextIO) -> int:
    if not listing.letters:
        print("no dead letters", file=err if command.as_json else out)
        return EXIT_OK
    for letter in listing.letters:
        if command.as_json:
            print(json.dumps(letter.to_json(), ensure_ascii=False), file=out)
        else:
            print(format_line(letter), file=out)
    if listing.total > len(listing.letters):
        print(f"(showing {len(listing.letters)} of {listing.total})", file=err)
    return EXIT_OK


def _print_outcome(
    outcome: Outcome, verb: str, topology: Topology | None, out: TextIO, err: TextIO
) -> int:
    for letter in outcome.done:
        target = ""
        if verb == "re-drove" and letter.conversation_id is not None and topology is not None:
            shard = shard_of(letter.conversation_id, topology.shards)
            target = f" -> {topology.shard_queue(shard)}"
        print(f"{verb} {_token(letter.message_id)}{target}", file=out)
    print(f"{verb} {len(outcome.done)} dead letter(s)", file=out)
    for wanted in outcome.missing:
        print(f"twitter-bot: no dead letter with id {_token(wanted)}", file=err)
    for letter, reason in outcome.failed:
        print(f"twitter-bot: left {_token(letter.message_id)} in place: {reason}", file=err)
    return EXIT_OK if outcome.ok else EXIT_FAILED


async def _perform(
    connection: AbstractConnection, settings: Settings, command: Command, out: TextIO, err: TextIO
) -> int:
    topology = topology_for(settings)
    if command.action == "list":
        listing = await list_dead_letters(connection, topology, limit=command.limit)
        return _print_listing(listing, command, out, err)
    if command.action == "retry":
        outcome = await retry_dead_letters(
            connection,
            topology,
            command.selection,
            confirm_timeout=max(settings.rabbit.publish_timeout, 5.0),
        )
        return _print_outcome(outcome, "re-drove", topology, out, err)
    outcome = await purge_dead_letters(connection, topology, command.selection)
    return _print_outcome(outcome, "purged", topology, out, err)


async def _perform_sqlite(settings: Settings, command: Command, out: TextIO, err: TextIO) -> int:
    """The same commands against the embedded SQLite queue (no RabbitMQ hosts configured)."""
    queue = SqliteQueue(settings.sqlite.path, reset_leases=False)
    await queue.start()
    try:
        rows = await queue.dead_letter_rows()
        letters = [
            (row_id, DeadLetter.from_parts(mid, body, hdrs)) for row_id, mid, body, hdrs in rows
        ]
        if command.action == "list":
            shown = letters[: command.limit] if command.limit else letters
            listing = Listing(letters=[letter for _, letter in shown], total=len(letters))
            return _print_listing(listing, command, out, err)
        outcome = Outcome()
        selected = [
            (row_id, letter) for row_id, letter in letters if command.selection.matches(letter)
        ]
        for row_id, letter in selected:
            if command.action == "purge":
                await queue.purge(row_id)
            elif letter.envelope is None:
                outcome.failed.append((letter, "not an envelope: can be listed and purged only"))
                continue
            else:
                headers = {
                    k: v for k, v in letter.headers.items() if k not in RETRY_STRIPPED_HEADERS
                }
                await queue.redrive(row_id, {**headers, HEADER_REDRIVEN: 1})
            outcome.done.append(letter)
        outcome.missing = [
            wanted
            for wanted in sorted(command.selection.ids)
            if not any(letter.has_id(wanted) for _, letter in letters)
        ]
        verb = "purged" if command.action == "purge" else "re-drove"
        return _print_outcome(outcome, verb, None, out, err)
    finally:
        await queue.stop()


async def execute(settings: Settings, command: Command, out: TextIO, err: TextIO) -> int:
    """Run one command against the queue, print its report; return the exit code."""
    if not settings.uses_rabbitmq:
        return await _perform_sqlite(settings, command, out, err)
    try:
        connection = await connect(settings.rabbit)
    except BrokerUnavailable as exc:
        print(f"twitter-bot: {exc}", file=err)
        return EXIT_BROKER_UNAVAILABLE
    try:
        async with connection:
            return await _perform(connection, settings, command, out, err)
    except BROKER_ERRORS as exc:
        print(f"twitter-bot: RabbitMQ error: {describe_error(exc, settings.rabbit)}", file=err)
        return EXIT_BROKER_UNAVAILABLE


def run(settings: Settings, command: Command) -> int:
    """The ``twitter-bot dead-letters`` entry point: one event loop, one connection."""
    return asyncio.run(execute(settings, command, sys.stdout, sys.stderr))
