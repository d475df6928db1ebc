"""An embedded durable queue in one SQLite file, for a single machine without RabbitMQ.

Same guarantees as the RabbitMQ adapter on one host: a write returns only once it
is on disk (WAL, synchronous=FULL), messages are leased to the consumer and
deleted on ack, parked messages and checkpoints (priority 1) come first, dead
letters are kept, and what was leased when the process died is delivered again
(marked redelivered) after a restart. One process per file.

All SQLite work runs on one dedicated thread, so the event loop never blocks on
disk I/O and the connection is only ever used from that thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import structlog

from twitter_bot.queue.base import (
    HEADER_CHECKPOINT,
    HEADER_PARKED,
    Envelope,
    PublishError,
    QueueDelivery,
)

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

INCOMING = "incoming"
DEAD_LETTER = "dead-letter"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    headers TEXT NOT NULL,
    leased INTEGER NOT NULL DEFAULT 0,
    deliveries INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS ready ON messages (queue, leased, priority DESC, id);
"""


@dataclass(frozen=True)
class _Row:
    row_id: int
    body: bytes
    headers: dict[str, Any]
    redelivered: bool


class SqliteDelivery:
    """A leased row: ack deletes it, requeue releases the lease."""

    def __init__(self, queue: SqliteQueue, row: _Row, envelope: Envelope) -> None:
        self._queue = queue
        self._row_id = row.row_id
        self._envelope = envelope
        self._redelivered = row.redelivered

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    @property
    def redelivered(self) -> bool:
        return self._redelivered

    @property
    def valid(self) -> bool:
        return True  # one process owns the file: a lease is only lost with the process

    @property
    def ack_settles(self) -> bool:
        return True

    async def ack(self) -> None:
        await self._queue._settle(self._row_id, delete=True)

    async def requeue(self) -> None:
        await self._queue._settle(self._row_id, delete=False)


class SqliteQueue:
    """The MessageQueue port over a local SQLite file."""

    def __init__(
        self, path: str | Path, *, poll_interval: float = 0.5, reset_leases: bool = True
    ) -> None:
        self._path = str(path)
        # False for a tool opening the file beside a running daemon (dead-letters):
        # only the daemon's own start may take back the leases of a dead process.
        self._reset_leases = reset_leases
        self._poll_interval = poll_interval
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._deliver: Callable[[QueueDelivery], None] | None = None
        self._prefetch = 1
        self._leased = 0
        self._wakeup = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None
        self._consuming = False

    # -- lifecycle -----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._db is not None

    @property
    def checkpoints_enabled(self) -> bool:
        return True

    def active_shards(self) -> list[int] | None:
        return None

    def consume(
        self,
        prefetch: int,
        deliver: Callable[[QueueDelivery], None],
        lost: Callable[[], None] | None = None,
    ) -> None:
        self._prefetch = prefetch
        self._deliver = deliver

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-queue")
        self._db = await self._run(self._open)
        log.info("queue.sqlite_opened", path=self._path)
        if self._deliver is not None:
            self._consuming = True
            self._consumer = asyncio.create_task(self._consume(), name="sqlite-consumer")

    async def wait_ready(self, timeout: float) -> bool:
        return self.ready

    async def stop_consuming(self) -> None:
        self._consuming = False
        task, self._consumer = self._consumer, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        await self.stop_consuming()
        db, self._db = self._db, None
        if db is not None and self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _open(self) -> sqlite3.Connection:
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        if self._reset_leases:
            # Leases die with the process that held them: deliver those rows again.
            db.execute("UPDATE messages SET leased = 0 WHERE leased = 1")
        return db

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            raise PublishError("queue not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise PublishError("queue not open")
        return self._db

    # -- writes --------------------------------------------------------------------

    async def publish(self, envelopes: list[Envelope]) -> None:
        await self._insert([(INCOMING, 0, 0.0, env) for env in envelopes])

    @property
    def echoes_supported(self) -> bool:
        # Not built: one process, and a reply in doubt after its crash is sent again.
        return False

    @property
    def echoes_ready(self) -> bool:
        return False

    async def publish_echoes(self, envelopes: list[Envelope]) -> None:
        raise PublishError("the embedded SQLite queue does not record X's echoes")

    def consume_echoes(self, deliver: Callable[[Envelope], None]) -> None:
        raise NotImplementedError("the embedded SQLite queue does not record X's echoes")

    @property
    def finished_supported(self) -> bool:
        # Not built: it has no packs, which is where a finished answer and its message
        # get separated for long (bridge/finished.py).
        return False

    async def record_finished(self, envelope: Envelope) -> None:
        raise PublishError("the embedded SQLite queue does not record finished answers")

    def consume_finished(
        self, deliver: Callable[[Envelope], None], caught_up: Callable[[bool], None]
    ) -> None:
        raise NotImplementedError("the embedded SQLite queue does not record finished answers")

    async def park(self, envelopes: list[Envelope]) -> None:
        # Priority 1 and ascending ids, in one transaction: leased first, in this order.
        await self._insert([(INCOMING, 1, 0.0, _marked(env, HEADER_PARKED)) for env in envelopes])

    async def checkpoint(self, envelope: Envelope) -> None:
        await self._insert([(INCOMING, 1, 0.0, _marked(envelope, HEADER_CHECKPOINT))])

    async def dead_letter(self, envelope: Envelope) -> None:
        await self._insert([(DEAD_LETTER, 0, 0.0, envelope)])

    async def _insert(self, rows: list[tuple[str, int, float, Envelope]]) -> None:
        values = [
            (queue, priority, not_before, env.message_id, env.encode(), json.dumps(env.headers))
            for queue, priority, not_before, env in rows
        ]
        try:
            await self._run(self._insert_sync, values)
        except sqlite3.Error as exc:
            raise PublishError(f"sqlite write failed: {exc}") from exc
        self._wakeup.set()

    def _insert_sync(self, values: list[tuple[str, int, float, str, bytes, str]]) -> None:
        db = self._require_db()
        with _transaction(db):
            db.executemany(
                "INSERT INTO messages (queue, priority, not_before, message_id, body, headers)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                values,
            )

    async def _settle(self, row_id: int, *, delete: bool) -> None:
        await self._run(self._settle_sync, row_id, delete)
        self._leased -= 1
        self._wakeup.set()

    def _settle_sync(self, row_id: int, delete: bool) -> None:
        db = self._require_db()
        if delete:
            db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
        else:
            db.execute("UPDATE messages SET leased = 0 WHERE id = ?", (row_id,))

    # -- consuming -----------------------------------------------------------------

    async def _consume(self) -> None:
        while self._consuming:
            self._wakeup.clear()
            room = self._prefetch - self._leased
            rows: list[_Row] = []
            next_due: float | None = None
            if room > 0:
                rows, next_due = await self._run(self._lease_sync, room, time.time())
            for row in rows:
                await self._hand_over(row)
            if rows and len(rows) == room:
                continue
            wait = self._poll_interval
            if next_due is not None:
                wait = min(wait, max(next_due - time.time(), 0.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait)

    async def _hand_over(self, row: _Row) -> None:
        try:
            envelope = Envelope.decode(row.body, row.headers)
        except (ValueError, KeyError, TypeError) as exc:
            # Like a rejected AMQP message: moved to the dead letters, not retried.
            log.error("queue.undecodable_message", row_id=row.row_id, error=str(exc)[:200])
            await self._run(self._reject_sync, row.row_id)
            return
        if self._deliver is None:
            raise RuntimeError("no consumer registered")
        self._leased += 1
        self._deliver(SqliteDelivery(self, row, envelope))

    def _reject_sync(self, row_id: int) -> None:
        db = self._require_db()
        db.execute("UPDATE messages SET queue = ?, leased = 0 WHERE id = ?", (DEAD_LETTER, row_id))

    def _lease_sync(self, limit: int, now: float) -> tuple[list[_Row], float | None]:
        db = self._require_db()
        with _transaction(db):
            found = db.execute(
                "SELECT id, body, headers, deliveries FROM messages"
                " WHERE queue = ? AND leased = 0 AND not_before <= ?"
                " ORDER BY priority DESC, id LIMIT ?",
                (INCOMING, now, limit),
            ).fetchall()
            db.executemany(
                "UPDATE messages SET leased = 1, deliveries = deliveries + 1 WHERE id = ?",
                [(row[0],) for row in found],
            )
            due = db.execute(
                "SELECT MIN(not_before) FROM messages WHERE queue = ? AND leased = 0"
                " AND not_before > ?",
                (INCOMING, now),
            ).fetchone()[0]
        rows = [_Row(r[0], r[1], json.loads(r[2]), redelivered=r[3] > 0) for r in found]
        return rows, due

    # -- inspection (dead letters, tests) ------------------------------------------

    async def count(self, queue: str = INCOMING) -> int:
        return await self._run(self._count_sync, queue)

    def _count_sync(self, queue: str) -> int:
        row = (
            self._require_db()
            .execute("SELECT COUNT(*) FROM messages WHERE queue = ?", (queue,))
            .fetchone()
        )
        return int(row[0])

    async def dead_letters(self) -> list[Envelope]:
        return [
            Envelope.decode(body, headers) for _, _, body, headers in await self.dead_letter_rows()
        ]

    async def dead_letter_rows(self) -> list[tuple[int, str, bytes, dict[str, Any]]]:
        """(row id, message id, body, headers) of every dead letter, oldest first."""
        rows = await self._run(self._dead_letters_sync)
        return [(row_id, mid, body, json.loads(headers)) for row_id, mid, body, headers in rows]

    def _dead_letters_sync(self) -> list[tuple[int, str, bytes, str]]:
        query = "SELECT id, message_id, body, headers FROM messages WHERE queue = ? ORDER BY id"
        return self._require_db().execute(query, (DEAD_LETTER,)).fetchall()

    async def redrive(self, row_id: int, headers: dict[str, Any]) -> None:
        """Move a dead letter back to the incoming queue, atomically, with new headers."""
        await self._run(self._redrive_sync, row_id, json.dumps(headers))
        self._wakeup.set()

    def _redrive_sync(self, row_id: int, headers: str) -> None:
        self._require_db().execute(
            "UPDATE messages SET queue = ?, headers = ?, not_before = 0, priority = 0,"
            " leased = 0 WHERE id = ? AND queue = ?",
            (INCOMING, headers, row_id, DEAD_LETTER),
        )

    async def purge(self, row_id: int) -> None:
        await self._run(self._purge_sync, row_id)

    def _purge_sync(self, row_id: int) -> None:
        query = "DELETE FROM messages WHERE id = ? AND queue = ?"
        self._require_db().execute(query, (row_id, DEAD_LETTER))


def _marked(envelope: Envelope, header: str) -> Envelope:
    return replace(envelope, headers={**envelope.headers, header: 1})


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
