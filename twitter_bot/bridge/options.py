"""Quick-reply options offered as a numbered list (DM API v2 has no native quick replies).

The bridge remembers, per conversation, the options it last offered, so the user's
answer "2" reaches the bot as the second option's payload.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

_NUMBER = re.compile(r"^\s*(\d{1,2})\s*[.)]?\s*$")


@dataclass(frozen=True)
class OfferedOption:
    label: str
    payload: str


class OfferedOptions:
    """A bounded map conversation id -> the numbered options last offered there."""

    def __init__(self, max_conversations: int = 100_000) -> None:
        self._max = max_conversations
        self._offers: OrderedDict[str, tuple[OfferedOption, ...]] = OrderedDict()

    def remember(self, conversation_id: str, options: list[OfferedOption]) -> None:
        self._offers[conversation_id] = tuple(options)
        self._offers.move_to_end(conversation_id)
        while len(self._offers) > self._max:
            self._offers.popitem(last=False)

    def resolve(self, conversation_id: str, text: str) -> str | None:
        """The payload the user chose by number ("2", "2.") or by label; None if no match."""
        options = self._offers.get(conversation_id)
        if not options:
            return None
        match = _NUMBER.match(text)
        if match:
            index = int(match.group(1)) - 1
            return options[index].payload if 0 <= index < len(options) else None
        wanted = text.strip().casefold()
        for option in options:
            if option.label.casefold() == wanted:
                return option.payload
        return None

    def forget(self, conversation_id: str) -> None:
        self._offers.pop(conversation_id, None)
