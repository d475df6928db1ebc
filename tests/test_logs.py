"""The JSON log lines: one object per line, secrets masked, never a failed log call."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from twitter_bot.logs import REDACTED, configure_logging

SECRET = "s3cr3t-access-token-value"


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    yield stream
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize("cache_loggers", [False, True])
def test_a_line_is_a_json_object_with_secrets_masked(out: io.StringIO, cache_loggers: bool) -> None:
    configure_logging("info", "json", [SECRET], stream=out, cache_loggers=cache_loggers)
    log = structlog.get_logger("twitter_bot.test")
    log.info("dm.sent", event_id="1", error=f"401 for token {SECRET}", access_token="anything")
    log.debug("not.written")
    [line] = lines(out)
    assert line["event"] == "dm.sent"
    assert line["level"] == "info"
    assert line["logger"] == "twitter_bot.test"
    assert line["error"] == f"401 for token {REDACTED}"
    assert line["access_token"] == REDACTED
    assert SECRET not in out.getvalue()


def test_values_orjson_cannot_write_are_still_logged(out: io.StringIO) -> None:
    configure_logging("info", "json", [SECRET], stream=out)
    log = structlog.get_logger("twitter_bot.test")
    log.info("odd.values", text="a\ud800b", big=2**70, keyed={1: "one"}, obj=object())
    [line] = lines(out)
    assert line["text"] == "a\ud800b"
    assert line["big"] == 2**70
    assert line["keyed"] == {"1": "one"}
    assert str(line["obj"]).startswith("<object object")


def test_any_of_hundreds_of_secrets_is_masked(out: io.StringIO) -> None:
    """A deployment of 200 bots has over 400 secrets; each is masked wherever it shows."""
    many = [f"bot-{n:03d}-access-secret-{n * 7919:08d}" for n in range(400)]
    configure_logging("info", "json", many, stream=out)
    log = structlog.get_logger("twitter_bot.test")
    log.info("x.failed", error=f"bad {many[0]} and {many[399]}", nested={"k": [many[123]]})
    log.info("x.fine", error="nothing to hide", text="a\ud800b")
    masked, fine = lines(out)
    assert masked["error"] == f"bad {REDACTED} and {REDACTED}"
    assert masked["nested"] == {"k": [REDACTED]}
    assert fine["error"] == "nothing to hide" and fine["text"] == "a\ud800b"
    assert not any(secret in out.getvalue() for secret in many)
