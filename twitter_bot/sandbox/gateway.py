"""The sandbox's bot platform: a built-in echo bot, or a proxy that times a real gateway.

Both serve gateway-api.md §1 to the daemon and report every call (its message id,
status, latency and number of replies) so the chat page can show each message's trip.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from twitter_bot.sandbox.picture import sandbox_picture

MESSAGES_ROUTE = "/v1/bots/{bot_id}/conversations/{conversation_id}/messages"
PICTURE_PATH = "/sandbox/picture.png"
# Hop-by-hop and framing headers a proxy must not copy.
_NOT_FORWARDED = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"}
)
_REMEMBERED_ANSWERS = 1000

MENU = [
    {"label": "Say hello", "description": "A plain echo", "payload": "hello"},
    {"label": "Show a picture", "description": "An image DM", "payload": "picture"},
    {"label": "Think slowly", "description": "Watch the typing indicator", "payload": "slow"},
]
HELP = (
    'I am the sandbox\'s echo bot: I answer every message with "echo: …". '
    'Try "menu" for quick replies, "picture" for an image, "slow" to see me typing.'
)


@dataclass(frozen=True)
class GatewayCall:
    """One call the daemon made to the bot platform, as the sandbox saw it."""

    message_id: str | None
    bot_id: str
    conversation_id: str
    status: int
    seconds: float
    replies: int | None = None
    error: str | None = None


GatewayObserver = Callable[[GatewayCall], None]


def echo_answer(text: str, payload: str | None, picture_url: str) -> list[dict[str, Any]]:
    """The echo bot's replies (gateway-api.md §2) to ``text``, or to a tapped option."""
    command = (payload or text).strip().lower()
    echo = f"echo: {text}" if text else "echo: (no text)"
    if payload is not None:
        echo += f" [payload: {payload}]"
    if command == "menu":
        return [{"type": "text", "text": f"{echo}\nPick one:", "quick_replies": MENU}]
    if command in ("picture", "image", "photo"):
        return [
            {"type": "image", "url": picture_url, "text": echo, "alt_text": "A sunny hill"},
        ]
    if command == "help":
        return [{"type": "text", "text": f"{echo}\n{HELP}"}]
    return [{"type": "text", "text": echo}]


class EchoBot:
    """A bot platform that follows gateway-api.md and answers "echo: <text>".

    "menu" brings quick replies, "picture" an image (served by this app), "slow"
    an answer after ``think_seconds`` (the daemon shows "typing…" meanwhile). A
    message id seen before gets the same answer again, as the contract allows.
    """

    def __init__(
        self, *, token: str | None, observer: GatewayObserver, think_seconds: float = 2.0
    ) -> None:
        self._token = token
        self._observer = observer
        self._think_seconds = think_seconds
        self._answers: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(MESSAGES_ROUTE, self._message)
        app.router.add_get(PICTURE_PATH, self._picture)
        return app

    async def _picture(self, request: web.Request) -> web.Response:
        return web.Response(body=sandbox_picture(), content_type="image/png")

    async def _message(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        status, answer, error = await self._answer(request)
        self._observer(
            GatewayCall(
                message_id=request.headers.get("Idempotency-Key"),
                bot_id=request.match_info["bot_id"],
                conversation_id=request.match_info["conversation_id"],
                status=status,
                seconds=time.perf_counter() - started,
                replies=len(answer) if answer is not None else None,
                error=error,
            )
        )
        if answer is None:
            return web.json_response({"error": error}, status=status)
        return web.json_response({"messages": answer}, status=status)

    async def _answer(self, request: web.Request) -> tuple[int, list[dict[str, Any]] | None, str]:
        if self._token is not None:
            expected = f"Bearer {self._token}".encode()
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(expected, given):
                return 401, None, "missing or wrong bearer token"
        try:
            body = json.loads(await request.read())
            message_id = str(body["message_id"])
            text = body.get("text") or ""
            quick_reply = body.get("quick_reply")
            payload = quick_reply.get("payload") if isinstance(quick_reply, dict) else None
        except (ValueError, KeyError, TypeError, AttributeError):
            return 422, None, "not a gateway-api.md §1 message"
        if message_id in self._answers:
            return 200, self._answers[message_id], ""
        if (payload or text).strip().lower() == "slow":
            await asyncio.sleep(self._think_seconds)
        picture_url = str(request.url.with_path(PICTURE_PATH).with_query(None))
        answer = echo_answer(str(text), None if payload is None else str(payload), picture_url)
        self._answers[message_id] = answer
        while len(self._answers) > _REMEMBERED_ANSWERS:
            self._answers.popitem(last=False)
        return 200, answer, ""


class GatewayProxy:
    """Forwards the daemon's gateway calls to a real bot platform, timing each one.

    An unreachable platform is answered 502, which the bridge retries like the
    connection error it stands for.
    """

    def __init__(
        self,
        upstream: str,
        session: Callable[[], aiohttp.ClientSession],
        observer: GatewayObserver,
        timeout: float,
    ) -> None:
        self._upstream = upstream.rstrip("/")
        self._session = session
        self._observer = observer
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        return app

    async def _forward(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        body = await request.read()
        try:
            async with self._session().request(
                request.method,
                self._upstream + request.raw_path,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as upstream:
                answer = await upstream.read()
                response = web.Response(status=upstream.status, body=answer)
                for name in ("Content-Type", "Retry-After"):
                    if name in upstream.headers:
                        response.headers[name] = upstream.headers[name]
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._report(request, 502, started, None, f"gateway unreachable: {exc!r}"[:300])
            return web.json_response({"error": "gateway unreachable"}, status=502)
        self._report(request, upstream.status, started, _reply_count(answer), None)
        return response

    def _report(
        self,
        request: web.Request,
        status: int,
        started: float,
        replies: int | None,
        error: str | None,
    ) -> None:
        parts = request.path.split("/")
        is_message = len(parts) == 7 and parts[1:3] == ["v1", "bots"]
        self._observer(
            GatewayCall(
                message_id=request.headers.get("Idempotency-Key"),
                bot_id=parts[3] if is_message else "",
                conversation_id=parts[5] if is_message else "",
                status=status,
                seconds=time.perf_counter() - started,
                replies=replies,
                error=error,
            )
        )


def _reply_count(body: bytes) -> int | None:
    if not body:
        return 0
    try:
        messages = json.loads(body).get("messages")
    except (ValueError, AttributeError):
        return None
    return len(messages) if isinstance(messages, list) else None
