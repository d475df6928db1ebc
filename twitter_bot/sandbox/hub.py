"""What the chat page shows: the conversations, each message's trip, the last CRC.

The X stand-in, the gateway and the webhook caller report here; every change is
pushed to each open page as one JSON event (the first one a full snapshot).

A trip is attributed exactly where an id says so (the webhook's answer, mark-read's
``last_read_event_id``, the gateway's ``Idempotency-Key``); typing, media and DMs
carry no inbound id, so they go to the bot's message being bridged, which is
exact because the bridge handles one conversation's messages one at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twitter_bot.sandbox.fake_x import DM_KINDS, EndpointKind, FakeMedia, Rejection, XCall
from twitter_bot.sandbox.gateway import GatewayCall
from twitter_bot.sandbox.webhook_caller import CrcResult, WebhookAnswer, XAccount
from twitter_bot.settings import BotSettings

Event = dict[str, Any]
MAX_TRIPS = 200
MAX_MESSAGES = 500
_PREVIEW = 60


@dataclass(frozen=True)
class TripStep:
    """One stage of a message's trip: accepted, queued, read, typing, gateway, sent, …"""

    name: str
    ok: bool
    detail: str
    at: float


@dataclass
class Trip:
    """A user's message from the webhook to the bot's last reply."""

    event_id: str
    bot_user_id: str
    text: str
    started: float
    steps: list[TripStep] = field(default_factory=list)

    def to_json(self) -> Event:
        return {
            "event_id": self.event_id,
            "bot_user_id": self.bot_user_id,
            "text": self.text,
            "started_at": self.started,
            "steps": [
                {
                    "name": step.name,
                    "ok": step.ok,
                    "detail": step.detail,
                    "ms": round((step.at - self.started) * 1000, 1),
                }
                for step in self.steps
            ],
        }


def _preview(text: str | None) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 1] + "…"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


class Hub:
    """The sandbox's state as the page sees it, and the page's live event streams."""

    def __init__(
        self,
        bots: Sequence[BotSettings],
        user: XAccount,
        media: Callable[[str], FakeMedia | None],
    ) -> None:
        self.user = user
        self.info: dict[str, Any] = {}
        self._bots = {bot.user_id: bot for bot in bots}
        self._media = media
        self._conversations: dict[str, deque[Event]] = {
            bot.user_id: deque(maxlen=MAX_MESSAGES) for bot in bots
        }
        self._trips: OrderedDict[str, Trip] = OrderedDict()
        self._active: dict[str, str] = {}
        self._last_active: str | None = None
        self._crc: CrcResult | None = None
        self._subscribers: set[asyncio.Queue[Event | None]] = set()

    # -- the page's streams -------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[Event | None]:
        """A stream of events for one page, starting with a snapshot; None ends it."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        queue.put_nowait(self.snapshot())
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event | None]) -> None:
        self._subscribers.discard(queue)

    def close(self) -> None:
        """End every stream (on shutdown)."""
        for queue in self._subscribers:
            queue.put_nowait(None)
        self._subscribers.clear()

    def _publish(self, event: Event) -> None:
        for queue in self._subscribers:
            queue.put_nowait(event)

    def snapshot(self) -> Event:
        return {
            "type": "snapshot",
            "info": self.info,
            "user": {"user_id": self.user.user_id, "name": self.user.name},
            "bots": [{"user_id": bot.user_id, "bot_id": bot.bot_id} for bot in self._bots.values()],
            "conversations": {uid: list(msgs) for uid, msgs in self._conversations.items()},
            "trips": [trip.to_json() for trip in self._trips.values()],
            "crc": self._crc.to_json() if self._crc else None,
        }

    # -- reports ------------------------------------------------------------------------

    def knows_bot(self, bot_user_id: str) -> bool:
        return bot_user_id in self._bots

    def active_event(self, bot_user_id: str) -> str | None:
        """The id of the bot's message being bridged now, if any."""
        return self._active.get(bot_user_id)

    def user_message(self, event_id: str, bot_user_id: str, text: str, payload: str | None) -> None:
        """The user sent a DM (``payload``: the metadata of a tapped quick-reply option)."""
        now = time.time()
        self._add_message(
            bot_user_id,
            {"id": event_id, "from": "user", "text": text, "payload": payload, "at": now},
        )
        trip = Trip(event_id, bot_user_id, text, now)
        self._trips[event_id] = trip
        while len(self._trips) > MAX_TRIPS:
            self._trips.popitem(last=False)
        self._publish_trip(trip)

    def webhook_answered(self, event_id: str, answer: WebhookAnswer) -> None:
        if answer.status is None:
            self._step(event_id, "accepted", False, f"webhook unreachable: {answer.error}")
            return
        accepted = answer.status == 200
        detail = f"webhook {answer.status} in {_ms(answer.seconds)}"
        if not accepted:
            detail += f": {_preview(str(answer.body))}"
        self._step(event_id, "accepted", accepted, detail, publish=not answer.queued)
        if answer.queued:
            self._step(event_id, "queued", True, "persisted in the queue before the 200")
        elif accepted:
            self._step(event_id, "queued", False, f"not queued: {_preview(str(answer.body))}")

    def gateway_called(self, call: GatewayCall) -> None:
        trip = self._trips.get(call.message_id or "")
        if trip is None:
            return
        self._activate(trip.bot_user_id, trip.event_id)
        ok = 200 <= call.status < 300
        detail = f"{call.status} in {_ms(call.seconds)}"
        if call.replies is not None:
            detail += f", {call.replies} repl{'y' if call.replies == 1 else 'ies'}"
        if call.error:
            detail += f": {call.error}"
        self._step(trip.event_id, "gateway", ok, detail)

    def x_called(self, call: XCall) -> None:
        """A call the daemon made to the X stand-in (already verified and accepted)."""
        read_id = call.last_read_event_id
        if call.kind == EndpointKind.MARK_READ and read_id is not None and read_id in self._trips:
            self._activate(call.user_id, read_id)
            self._step(read_id, "read", True, "marked read by the bot")
        elif call.kind == EndpointKind.INDICATE_TYPING:
            self._publish({"type": "typing", "bot_user_id": call.user_id})
            self._active_step(call.user_id, "typing", True, "typing indicator shown")
        elif call.kind == EndpointKind.MEDIA_FINALIZE and call.media_id:
            media = self._media(call.media_id)
            size = media.total_bytes if media else 0
            kind = media.media_type if media else "?"
            detail = f"media {call.media_id} uploaded ({size} bytes, {kind})"
            self._active_step(call.user_id, "media", True, detail)
        elif call.kind in DM_KINDS:
            self._bot_dm(call)

    def _bot_dm(self, call: XCall) -> None:
        media = self._media(call.media_id) if call.media_id else None
        message: Event = {
            "id": call.event_id,
            "from": "bot",
            "text": call.text or "",
            "at": call.at,
            "api": call.api_version,
            "quick_replies": [dict(option) for option in call.quick_replies or ()],
            "media": None,
        }
        if media is not None:
            message["media"] = {
                "url": f"/media/{media.media_id}",
                "type": media.media_type,
                "category": media.media_category,
            }
        self._add_message(call.user_id, message)
        detail = f"DM {call.event_id} (v{call.api_version})"
        detail += f": {_preview(call.text)}" if call.text else ""
        detail += " + media" if media else ""
        self._active_step(call.user_id, "sent", True, detail)

    def x_rejected(self, rejection: Rejection) -> None:
        body = rejection.body
        code = ""
        if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
            code = f" code {body['errors'][0].get('code')}"
        detail = f"X refused {rejection.kind or 'a call'}: {rejection.status}{code}"
        # A bad signature names no account: blame the message bridged last.
        bot_user_id = rejection.user_id or self._last_active
        if bot_user_id is not None:
            self._active_step(bot_user_id, "x-refused", False, detail)

    def own_dm_echoed(self, event_id: str | None, answer: WebhookAnswer) -> None:
        """X posted the bot's own DM back to the webhook; it must be answered and dropped."""
        if event_id is None:
            return
        ok = answer.status == 200 and answer.queued == 0
        verdict = "dropped as the bot's own" if ok else "NOT dropped"
        detail = f"X's copy of the DM to the webhook: {answer.status}, {verdict}"
        self._step(event_id, "echo", ok, detail)

    def crc_checked(self, result: CrcResult) -> None:
        self._crc = result
        self._publish({"type": "crc", "crc": result.to_json()})

    # -- helpers ------------------------------------------------------------------------

    def _add_message(self, bot_user_id: str, message: Event) -> None:
        conversation = self._conversations.setdefault(bot_user_id, deque(maxlen=MAX_MESSAGES))
        conversation.append(message)
        self._publish({"type": "message", "bot_user_id": bot_user_id, "message": message})

    def _activate(self, bot_user_id: str, event_id: str) -> None:
        self._active[bot_user_id] = event_id
        self._last_active = bot_user_id

    def _active_step(self, bot_user_id: str, name: str, ok: bool, detail: str) -> None:
        event_id = self._active.get(bot_user_id)
        if event_id is not None:
            self._step(event_id, name, ok, detail)

    def _step(
        self, event_id: str, name: str, ok: bool, detail: str, *, publish: bool = True
    ) -> None:
        trip = self._trips.get(event_id)
        if trip is None:
            return
        trip.steps.append(TripStep(name, ok, detail, time.time()))
        if publish:
            self._publish_trip(trip)

    def _publish_trip(self, trip: Trip) -> None:
        self._publish({"type": "trip", "trip": trip.to_json()})
