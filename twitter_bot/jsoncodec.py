"""JSON on the per-message paths: orjson where it gives what the standard library gives.

The webhook parses every delivery, the queue encodes and decodes every envelope and
the log writes a line per DM; with the standard library's json these were about a
tenth of the webhook's CPU time per delivery (docs/performance.md, "orjson and
one-pass redaction").
orjson differs from json in three ways that matter here, and each goes to json:
it refuses a lone UTF-16 surrogate escape (X can send one) and bodies that are not
UTF-8, and it reads an integer beyond 64 bits as a float.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# Every digit becomes "0", "-" stays, everything else becomes a space: then a number
# orjson would read as a float (20 digits or more, or 19 after a minus sign) is a
# plain substring search. (A regular expression for it costs more than json.loads.)
_DIGIT_SHAPE = bytes(
    ord("0") if chr(i).isdigit() and i < 128 else i if i == ord("-") else ord(" ")
    for i in range(256)
)
_TWENTY_DIGITS = b"0" * 20
_MINUS_NINETEEN_DIGITS = b"-" + b"0" * 19


def _may_hold_an_integer_beyond_64_bits(data: bytes) -> bool:
    """True for any such integer; also for long digit runs in strings (then json reads it)."""
    shape = data.translate(_DIGIT_SHAPE)
    return _TWENTY_DIGITS in shape or _MINUS_NINETEEN_DIGITS in shape


def loads(data: bytes) -> Any:
    """What ``json.loads(data)`` returns, raising what it raises (ValueError, RecursionError)."""
    if not _may_hold_an_integer_beyond_64_bits(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # json decides: it accepts some of what orjson refuses, and says why not
    return json.loads(data)


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON. A string with a lone surrogate (no UTF-8 form) is escaped."""
    try:
        return orjson.dumps(data)
    except TypeError:
        # orjson refuses lone surrogates, integers beyond 64 bits and non-string keys.
        return json.dumps(data, separators=(",", ":"), ensure_ascii=True).encode()
