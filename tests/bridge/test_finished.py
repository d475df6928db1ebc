"""FinishedAnswers: what a lookup finds, how long it waits, what it keeps."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from structlog.testing import capture_logs

from twitter_bot.bridge.finished import FinishedAnswers
from twitter_bot.queue.base import Envelope, PublishError

ANSWER = [{"type": "text", "text": "echo: hi"}]


def finished(message_id: str) -> Envelope:
    dm = Envelope("dm", message_id, "100-200", {"text": "hi"}, time.time())
    return replace(dm, progress={"answer": ANSWER, "sent": 1})


async def nowhere(envelope: Envelope) -> None:
    raise AssertionError("not recorded here")


async def test_a_lookup_waits_until_the_reader_has_caught_up_then_finds_what_it_read() -> None:
    answers = FinishedAnswers(nowhere)
    answers.caught_up(False)
    lookup = asyncio.ensure_future(answers.progress_of("1", wait=5))
    await asyncio.sleep(0.05)
    answers.add(finished("1"))
    assert not lookup.done()  # read, but the reader has more to read for all it knows
    answers.caught_up(True)
    assert await asyncio.wait_for(lookup, 1) == {"answer": ANSWER, "sent": 1}
    assert await answers.progress_of("2", wait=5) is None  # caught up: no wait


async def test_a_reader_that_never_catches_up_delays_a_lookup_only_by_the_wait() -> None:
    answers = FinishedAnswers(nowhere)
    answers.add(finished("1"))
    with capture_logs() as logs:
        started = time.monotonic()
        assert await answers.progress_of("1", wait=0.1) == {"answer": ANSWER, "sent": 1}
        assert time.monotonic() - started < 1
    assert [log["event"] for log in logs] == ["bridge.finished_answers_not_caught_up"]


async def test_a_record_counts_here_only_once_the_stream_took_it() -> None:
    appended: list[str] = []

    async def append(envelope: Envelope) -> None:
        appended.append(envelope.message_id)

    async def refuse(envelope: Envelope) -> None:
        raise PublishError("broker not connected")

    answers = FinishedAnswers(append)
    answers.caught_up(True)
    await answers.record(finished("1"))
    assert appended == ["1"] and await answers.progress_of("1", wait=0) is not None
    refused = FinishedAnswers(refuse)
    refused.caught_up(True)
    with pytest.raises(PublishError):
        await refused.record(finished("2"))
    assert await refused.progress_of("2", wait=0) is None


async def test_memory_is_bounded_in_number_and_in_age() -> None:
    now = 0.0
    answers = FinishedAnswers(nowhere, kept=2, max_age=60, clock=lambda: now)
    answers.caught_up(True)
    for message_id in "123":
        answers.add(finished(message_id))
    assert [await answers.progress_of(m, wait=0) is not None for m in "123"] == [
        False,
        True,
        True,
    ]
    now = 61.0
    answers.add(finished("4"))  # the others are older than the stream keeps them
    assert [await answers.progress_of(m, wait=0) is not None for m in "234"] == [
        False,
        False,
        True,
    ]
