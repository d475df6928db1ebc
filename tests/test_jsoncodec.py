"""jsoncodec: orjson's speed, json's results, for every input."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twitter_bot import jsoncodec

# Every code point (lone surrogates too), integers well beyond 64 bits, finite floats.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec=None, exclude_categories=()))
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(st.characters(codec=None, exclude_categories=())), inner, max_size=4
        )
    ),
    max_leaves=12,
)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1 == 1.0 would hide a float)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


@settings(max_examples=400, deadline=None)
@given(VALUES, st.booleans())
def test_loads_returns_what_json_loads_returns(value: Any, ascii_only: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    try:
        expected = json.loads(raw)
    except ValueError:
        with pytest.raises(ValueError):
            jsoncodec.loads(raw)
        return
    assert same(jsoncodec.loads(raw), expected)


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_dumps_round_trips_through_json(value: Any) -> None:
    encoded = jsoncodec.dumps(value)
    encoded.decode("utf-8")  # always valid UTF-8, lone surrogates included (escaped)
    assert same(json.loads(encoded), json.loads(json.dumps(value)))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id": 18446744073709551616}',  # 2**64: orjson alone reads a float
        b'{"id": -9223372036854775809}',  # below the smallest 64-bit integer
        b'{"text": "a\\ud800"}',  # a lone surrogate escape: orjson alone refuses it
        '{"text": "caf\u00e9"}'.encode("utf-16"),  # json detects UTF-16; orjson refuses it
        b'{"n": NaN}',
    ],
)
def test_what_orjson_reads_differently_is_read_as_json_reads_it(raw: bytes) -> None:
    assert same(jsoncodec.loads(raw), json.loads(raw))


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff", b'{"a": 1,}', b"[" * 5000 + b"]" * 5000])
def test_invalid_json_raises_what_json_raises(raw: bytes) -> None:
    with pytest.raises((ValueError, RecursionError)):
        json.loads(raw)
    with pytest.raises((ValueError, RecursionError)):
        jsoncodec.loads(raw)
