"""Packing: envelopes published at the same moment to one shard travel as one broker message.

A persistent, confirmed broker message costs about the same whether it carries
one envelope or ten, and that cost bounds how many deliveries a webhook can
accept per second (docs/performance.md, "Packing"). So each shard keeps at
most one publish in flight; envelopes that arrive meanwhile wait for it and
then go out together (group commit). A lone envelope is never held back, and
every caller still returns only once its own envelopes are confirmed.

The consumer hands each envelope of a pack to the bridge as its own delivery,
and acks the pack once every one is done; if any has to go back (shutdown, a
failed park), the whole pack is requeued in its place, which keeps every
conversation in order. Until the pack is settled, a crash delivers its done
parts again. So the bridge checkpoints a part that is done while its pack is
still open, and that checkpoint is settled with the pack (``settle_with``):
acked when the pack is, requeued when it is. Whoever gets the pack again gets
the checkpoint first (priority) and does not send those replies again.
Publishing the unfinished parts again at the head of the shard (and acking the
pack) was tried and measured: it put replies out of order after a crash
(docs/performance.md, "Packing").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from twitter_bot import jsoncodec
from twitter_bot.queue.base import Envelope, PublishError

# Header of a broker message that carries a pack: the number of envelopes in it.
PACK_HEADER = "x-pack"

# Bounds a broker message (envelopes are about 1 KB) and how much one prefetched
# message holds; a burst beyond it goes out as several packs, one after another.
MAX_PACK = 64

SendPack = Callable[[list[Envelope]], Awaitable[None]]
Settle = Callable[[], Awaitable[Any]]


def encode_pack(envelopes: list[Envelope]) -> bytes:
    """A JSON array of encoded envelopes (each one exactly as it travels alone)."""
    return b"[" + b",".join(envelope.encode() for envelope in envelopes) + b"]"


def decode_pack(body: bytes) -> list[Envelope]:
    """The envelopes of a pack; raises ValueError (or KeyError/TypeError) when malformed."""
    entries = jsoncodec.loads(body)
    if not isinstance(entries, list) or not entries:
        raise ValueError("a pack is a non-empty JSON array of envelopes")
    return [Envelope.from_dict(entry) for entry in entries]


class ShardPacker:
    """Group commit for one shard: one ``send`` in flight; whoever starts the next one
    takes every envelope that waits, in arrival order, as one pack."""

    def __init__(self, send: SendPack) -> None:
        self._send = send
        self._lock = asyncio.Lock()
        self._waiting: list[tuple[list[Envelope], asyncio.Future[None]]] = []

    async def publish(self, envelopes: list[Envelope]) -> None:
        """Return once ``envelopes`` are confirmed, or raise PublishError."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (envelopes, done)
        self._waiting.append(entry)
        try:
            while not done.done():
                async with self._lock:
                    if not done.done():  # no earlier holder took ours: send what waits
                        await self._send_batch(self._take())
            await done
        finally:
            if not done.done():
                # Cancelled (a timeout) before a holder took it: it is not sent.
                with contextlib.suppress(ValueError):
                    self._waiting.remove(entry)
                done.cancel()
            elif not done.cancelled():
                done.exception()  # retrieved, so an unawaited failure is not logged

    def _take(self) -> list[tuple[list[Envelope], asyncio.Future[None]]]:
        """The longest run of waiting entries from the front within MAX_PACK envelopes
        (at least one entry, however many envelopes it has)."""
        count, size = 0, 0
        for envelopes, _ in self._waiting:
            if count and size + len(envelopes) > MAX_PACK:
                break
            count, size = count + 1, size + len(envelopes)
        batch, self._waiting = self._waiting[:count], self._waiting[count:]
        return batch

    async def _send_batch(self, batch: list[tuple[list[Envelope], asyncio.Future[None]]]) -> None:
        error: PublishError | None = None
        try:
            await self._send([envelope for envelopes, _ in batch for envelope in envelopes])
        except PublishError as exc:
            error = exc
        except BaseException as exc:
            # The holder was cancelled (its timeout) mid-publish: the others in the
            # pack cannot know whether it is durable, so none of them reports success.
            interrupted = PublishError("publish interrupted")
            interrupted.__cause__ = exc
            error = interrupted
            raise
        finally:
            for _, future in batch:
                if future.done():
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)


class PackSettlement:
    """The parts of one consumed pack: settles the broker message once every part is.

    Acked when every part is done. When any part is to be delivered again, the whole
    pack is requeued: the broker puts it back in its place, so every conversation in
    it stays in order, and its done parts come again (see the module's docstring).
    """

    def __init__(
        self,
        size: int,
        *,
        ack: Settle,
        requeue: Settle,
    ) -> None:
        self._ack = ack
        self._requeue = requeue
        self._unsettled = set(range(size))
        self._returned = 0
        self._acked: bool | None = None  # once settled: acked (True) or requeued
        self._followers: dict[object, tuple[int, Settle, Settle]] = {}
        self._settled_ranks: dict[object, int] = {}

    @property
    def open(self) -> bool:
        return self._acked is None

    def acked_by(self, part: int) -> bool:
        """Whether settling ``part`` as done would ack the pack: it is the last one open."""
        return self._unsettled == {part} and not self._returned

    async def settle(self, part: int, *, done: bool) -> None:
        """Settle one part (exactly once): done, or to be delivered again."""
        if part not in self._unsettled:
            raise RuntimeError(f"pack part {part} settled twice")
        self._unsettled.discard(part)
        if not done:
            self._returned += 1
        if self._unsettled:
            return
        if self._returned:
            await self._requeue()
        else:
            await self._ack()
        self._acked = not self._returned
        followers, self._followers = self._followers, {}
        self._settled_ranks = {slot: rank for slot, (rank, _, _) in followers.items()}
        for _, ack, requeue in followers.values():
            await (ack if self._acked else requeue)()

    async def settle_with(
        self, ack: Settle, requeue: Settle, key: str | None = None, rank: int = 0
    ) -> None:
        """Settle another message as this pack is settled: now if it is, else once it is.

        For a checkpoint of a done part: it must stay queued as long as the pack
        does, or a crash would deliver the part again with nothing to say it is done.
        Of the messages given the same ``key`` (checkpoints of one DM) only the one
        of highest ``rank`` (the newest) is kept; the others are acked at once. After
        a crash the next consumer must find the newest among the first it is sent,
        not behind older copies that would have it send replies again.
        """
        slot = key if key is not None else object()
        if self._acked is None:
            kept = self._followers.get(slot)
            if kept is not None and kept[0] > rank:
                await ack()  # superseded by the one kept
                return
            self._followers[slot] = (rank, ack, requeue)
            if kept is not None:
                await kept[1]()
        elif self._acked or self._settled_ranks.get(slot, rank) > rank:
            await ack()  # with the pack, or superseded by a newer one requeued with it
        else:
            await requeue()
