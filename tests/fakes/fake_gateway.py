"""A real aiohttp server playing the bot platform (gateway-api.md), for unit and end-to-end tests.

    fake = FakeGateway(token="s3cret")
    fake.on_message("bot-1", lambda request: [{"type": "text", "text": "hi"}])
    fake.fail_then_succeed("bot-2", times=2, status=503)
    server = await aiohttp_server(fake.app)        # or: async with fake.running() as base_url:
    ...
    assert fake.requests[0].idempotency_key == "1494419467836000004"

Every request is recorded in order, before any check. Bodies that break the
section-1 contract are answered 422 with the problems listed (unless
`check_contract=False`), so a drift in the client shows up in any test using it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict, CIMultiDictProxy

ROUTE = "/v1/bots/{bot_id}/conversations/{conversation_id}/messages"

BODY_KEYS = frozenset(
    {
        "message_id",
        "channel",
        "bot_id",
        "conversation_id",
        "sender",
        "recipient_id",
        "timestamp",
        "text",
        "quick_reply",
        "attachments",
    }
)
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", re.ASCII)
ATTACHMENT_TYPES = frozenset({"image", "video", "gif"})


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it; `path` is raw (still percent-encoded)."""

    method: str
    path: str
    bot_id: str
    conversation_id: str
    headers: CIMultiDictProxy[str]
    raw_body: bytes
    body: Any
    problems: tuple[str, ...]

    @property
    def authorization(self) -> str | None:
        """The Authorization header, if any."""
        return self.headers.get("Authorization")

    @property
    def idempotency_key(self) -> str | None:
        """The Idempotency-Key header, if any."""
        return self.headers.get("Idempotency-Key")

    @property
    def request_id(self) -> str | None:
        """The X-Request-Id header, if any."""
        return self.headers.get("X-Request-Id")

    @property
    def message_id(self) -> str | None:
        """The body's message_id, if the body is an object."""
        return self.body.get("message_id") if isinstance(self.body, dict) else None

    @property
    def text(self) -> str:
        """The body's text ('' when absent)."""
        return str(self.body.get("text", "")) if isinstance(self.body, dict) else ""


@dataclass(frozen=True)
class ScriptedResponse:
    """An exact answer: `body` None -> empty, str/bytes -> raw, anything else -> JSON."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def to_response(self) -> web.Response:
        """The aiohttp response for this script."""
        headers = dict(self.headers)
        if self.body is None:
            return web.Response(status=self.status, headers=headers)
        if isinstance(self.body, bytes):
            return web.Response(status=self.status, body=self.body, headers=headers)
        if isinstance(self.body, str):
            return web.Response(status=self.status, text=self.body, headers=headers)
        return web.json_response(self.body, status=self.status, headers=headers)


HandlerResult = list[dict[str, Any]] | ScriptedResponse
Handler = Callable[[RecordedRequest], HandlerResult | Awaitable[HandlerResult]]


def echo(request: RecordedRequest) -> HandlerResult:
    """The default bot: answers `echo: <text>`."""
    return [{"type": "text", "text": f"echo: {request.text}"}]


class FakeGateway:
    """The bot platform: records requests, answers per bot, optionally enforces a bearer token."""

    def __init__(self, *, token: str | None = None, check_contract: bool = True) -> None:
        self.token = token
        self.check_contract = check_contract
        self.requests: list[RecordedRequest] = []
        self.default_handler: Handler = echo
        self._handlers: dict[str, Handler] = {}
        self._delays: dict[str, float] = {}
        self._closing = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_post(ROUTE, self._handle)
        self.app.on_shutdown.append(self._on_shutdown)

    def on_message(self, bot_id: str, handler: Handler) -> None:
        """Answer this bot's messages with `handler` (sync or async)."""
        self._handlers[bot_id] = handler

    def set_delay(self, bot_id: str, seconds: float) -> None:
        """Make this bot slow: each answer waits `seconds` (cut short when the server stops)."""
        self._delays[bot_id] = seconds

    def script(self, bot_id: str, *responses: HandlerResult, then: Handler | None = None) -> None:
        """Answer the next calls with `responses` in order, then with `then` (default: as now)."""
        pending = deque(responses)
        fallback = then or self._handlers.get(bot_id, self.default_handler)

        def scripted(request: RecordedRequest) -> HandlerResult | Awaitable[HandlerResult]:
            return pending.popleft() if pending else fallback(request)

        self.on_message(bot_id, scripted)

    def fail_then_succeed(
        self,
        bot_id: str,
        *,
        times: int = 2,
        status: int = 503,
        headers: Mapping[str, str] | None = None,
        then: Handler | None = None,
    ) -> None:
        """Answer `status` `times` times, then succeed with `then` (default: as now)."""
        failure = ScriptedResponse(status, {"error": f"scripted {status}"}, dict(headers or {}))
        self.script(bot_id, *([failure] * times), then=then)

    def requests_for(self, bot_id: str) -> list[RecordedRequest]:
        """The requests addressed to one bot, in order."""
        return [request for request in self.requests if request.bot_id == bot_id]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve on a free local port; yields the base URL (without a trailing slash)."""
        server = TestServer(self.app)
        await server.start_server()
        try:
            yield str(server.make_url("/")).rstrip("/")
        finally:
            await server.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        recorded = await _record(request)
        self.requests.append(recorded)
        if not self._authorized(recorded):
            return web.json_response({"error": "unauthorized"}, status=401)
        if recorded.body is None:
            return web.json_response({"error": "body is not JSON"}, status=400)
        if self.check_contract and recorded.problems:
            return web.json_response(
                {"error": "contract", "problems": recorded.problems}, status=422
            )
        await self._delay(recorded.bot_id)
        result = self._handlers.get(recorded.bot_id, self.default_handler)(recorded)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, ScriptedResponse):
            return result.to_response()
        return web.json_response({"messages": list(result)})

    def _authorized(self, recorded: RecordedRequest) -> bool:
        if self.token is None:
            return True
        return hmac.compare_digest(
            (recorded.authorization or "").encode(), f"Bearer {self.token}".encode()
        )

    async def _delay(self, bot_id: str) -> None:
        seconds = self._delays.get(bot_id, 0.0)
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

    async def _on_shutdown(self, _app: web.Application) -> None:
        self._closing.set()


async def _record(request: web.Request) -> RecordedRequest:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    headers = CIMultiDictProxy(CIMultiDict(request.headers))
    bot_id = request.match_info["bot_id"]
    conversation_id = request.match_info["conversation_id"]
    return RecordedRequest(
        method=request.method,
        path=request.raw_path,
        bot_id=bot_id,
        conversation_id=conversation_id,
        headers=headers,
        raw_body=raw,
        body=body,
        problems=tuple(_header_problems(headers, body) + _body_problems(body, request)),
    )


def _header_problems(headers: CIMultiDictProxy[str], body: Any) -> list[str]:
    problems = []
    if headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
        problems.append("Content-Type must be application/json")
    message_id = body.get("message_id") if isinstance(body, dict) else None
    for name in ("Idempotency-Key", "X-Request-Id"):
        if headers.get(name) != message_id:
            problems.append(f"{name} must equal message_id")
    return problems


def _body_problems(body: Any, request: web.Request) -> list[str]:
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    problems = [f"missing {key}" for key in sorted(BODY_KEYS - body.keys())]
    problems += [f"unexpected {key}" for key in sorted(body.keys() - BODY_KEYS)]
    for key in ("message_id", "bot_id", "conversation_id", "recipient_id", "text"):
        if key in body and not isinstance(body[key], str):
            problems.append(f"{key} must be a string")
    if body.get("channel", "twitter") != "twitter":
        problems.append("channel must be 'twitter'")
    for key in ("bot_id", "conversation_id"):
        if key in body and body[key] != request.match_info[key]:
            problems.append(f"{key} must match the path")
    if "timestamp" in body and not TIMESTAMP.fullmatch(str(body["timestamp"])):
        problems.append("timestamp must look like 2026-11-21T19:18:31.123Z")
    return (
        problems + _sender_problems(body) + _quick_reply_problems(body) + _attachment_problems(body)
    )


def _sender_problems(body: dict[str, Any]) -> list[str]:
    sender = body.get("sender")
    if sender is None and "sender" not in body:
        return []
    if not isinstance(sender, dict) or set(sender) != {"id", "screen_name", "name"}:
        return ["sender must be {id, screen_name, name}"]
    problems = [] if isinstance(sender["id"], str) else ["sender.id must be a string"]
    for key in ("screen_name", "name"):
        if sender[key] is not None and not isinstance(sender[key], str):
            problems.append(f"sender.{key} must be a string or null")
    return problems


def _quick_reply_problems(body: dict[str, Any]) -> list[str]:
    quick_reply = body.get("quick_reply")
    if quick_reply is None:
        return []
    if isinstance(quick_reply, dict) and set(quick_reply) == {"payload"}:
        return [] if isinstance(quick_reply["payload"], str) else ["quick_reply.payload: string"]
    return ["quick_reply must be null or {payload}"]


def _attachment_problems(body: dict[str, Any]) -> list[str]:
    attachments = body.get("attachments", [])
    if not isinstance(attachments, list):
        return ["attachments must be a list"]
    problems = []
    for i, attachment in enumerate(attachments):
        if not isinstance(attachment, dict) or set(attachment) != {"type", "url", "media_id"}:
            problems.append(f"attachments[{i}] must be {{type, url, media_id}}")
        elif attachment["type"] not in ATTACHMENT_TYPES or not isinstance(attachment["url"], str):
            problems.append(f"attachments[{i}] has a bad type or url")
        elif not isinstance(attachment["media_id"], str | None):
            problems.append(f"attachments[{i}].media_id must be a string or null")
    return problems
