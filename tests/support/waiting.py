"""Polling for a condition the code under test makes true in its own time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(check: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Return once ``check()`` is truthy; fail the test if it is not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'condition'} not met in {timeout:g} s")
        await asyncio.sleep(0.02)
