"""Structured logging: JSON lines (or console output on a terminal) with secrets redacted."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import ahocorasick
import orjson
import structlog

REDACTED = "[redacted]"
# Field names whose values are never logged, whatever they hold.
SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "password",
        "secret",
        "token",
        "access_token",
        "access_secret",
        "consumer_secret",
        "bearer_token",
    }
)


class SecretRedactor:
    """A structlog processor that masks sensitive fields and any known secret value.

    Masking values as well as keys is defence in depth: an exception text or a
    URL that happens to carry a token is scrubbed too.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        # One pass over a value finds whether it holds any secret, however many there
        # are: each bot brings two, and the webhook logs a line per DM (with 400
        # secrets, testing each one in turn cost 50 us a line).
        self._finder: Any = None
        if self._secrets:
            self._finder = ahocorasick.Automaton()
            for secret in self._secrets:
                self._finder.add_word(secret, secret)
            self._finder.make_automaton()

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            if self._finder is None or next(self._finder.iter(value), None) is None:
                return value
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._scrub_field(k, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        return value

    def _scrub_field(self, key: Any, value: Any) -> Any:
        if isinstance(key, str) and key.lower() in SENSITIVE_KEYS:
            return REDACTED
        return self._scrub(value)

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            event_dict[key] = self._scrub_field(key, event_dict[key])
        return event_dict


def _json_line(event_dict: Any, **kwargs: Any) -> str:
    """structlog's JSON serializer: orjson (about twice as fast per line), json as fallback.

    orjson refuses a string with a lone surrogate and integers beyond 64 bits; a log
    line must never fail, so json writes those.
    """
    try:
        return orjson.dumps(
            event_dict, default=kwargs.get("default"), option=orjson.OPT_NON_STR_KEYS
        ).decode()
    except TypeError:
        return json.dumps(event_dict, **kwargs)


class _NamedWriteLogger(structlog.WriteLogger):
    """structlog's own line writer, carrying the name it was created with (``logger``)."""

    def __init__(self, file: TextIO, name: str | None) -> None:
        super().__init__(file)
        self.name = name


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    cache_loggers: bool = False,
) -> None:
    """Configure structlog, and render stdlib logging (aiohttp's, aio-pika's) the same way.

    Our own events are rendered and written by structlog directly: routed through
    stdlib logging they cost twice as much, and the webhook writes one per DM.
    ``cache_loggers`` is for a process that configures logging once (the daemon):
    each module's logger is then built on first use, not on every call. Tests
    configure logging again and again; a cached logger would keep writing where the
    first configuration pointed.
    """
    out = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    redactor = SecretRedactor(secrets)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redactor,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if use_console
        else structlog.processors.JSONRenderer(serializer=_json_line)
    )
    numeric_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)

    def write_logger(*args: Any) -> _NamedWriteLogger:
        return _NamedWriteLogger(out, args[0] if args else None)

    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=write_logger,
        cache_logger_on_first_use=cache_loggers,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared[:-2],
        processors=[
            structlog.processors.format_exc_info,
            redactor,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # aiohttp's access log duplicates our own delivery events.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
