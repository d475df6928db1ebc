"""The chat page: static files from package data, a JSON API, and a live event stream (SSE)."""

from __future__ import annotations

import asyncio
import importlib.resources
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from twitter_bot.sandbox.fake_x import MAX_TEXT, FakeMedia
from twitter_bot.sandbox.hub import Hub
from twitter_bot.sandbox.webhook_caller import CrcResult, WebhookAnswer

_STATIC = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
_KEEPALIVE_SECONDS = 15.0
_NO_CACHE = {"Cache-Control": "no-cache"}

SendMessage = Callable[[str, str, str | None], Awaitable[tuple[str, WebhookAnswer]]]


@dataclass(frozen=True)
class PageActions:
    """What the page can ask of the sandbox."""

    send: SendMessage
    crc: Callable[[], Awaitable[CrcResult]]
    media: Callable[[str], FakeMedia | None]


class ChatPage:
    """Serves the page and its API on the sandbox's web application."""

    def __init__(self, hub: Hub, actions: PageActions) -> None:
        self._hub = hub
        self._actions = actions
        files = importlib.resources.files("twitter_bot.sandbox") / "static"
        self._files = {name: (files / name).read_bytes() for name in _STATIC}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/events", self._events)
        app.router.add_post("/api/messages", self._send)
        app.router.add_post("/api/crc", self._crc)
        app.router.add_get("/media/{media_id}", self._media)

    def _file(self, name: str) -> web.Response:
        return web.Response(
            body=self._files[name], content_type=_STATIC[name], charset="utf-8", headers=_NO_CACHE
        )

    async def _index(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC or name == "index.html":
            raise web.HTTPNotFound()
        return self._file(name)

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self._hub.snapshot())

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: a snapshot, then every change; ends on shutdown."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", **_NO_CACHE, "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        queue = self._hub.subscribe()
        try:
            await response.write(b"retry: 1000\n\n")
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), _KEEPALIVE_SECONDS)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if event is None:
                    break
                await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        except ConnectionResetError:
            pass  # the page went away
        finally:
            self._hub.unsubscribe(queue)
        return response

    async def _send(self, request: web.Request) -> web.Response:
        """``{"bot_user_id", "text", "quick_reply"?}``: the user sends a DM to a bot."""
        # JSON only: a cross-site form post cannot make the browser send it without CORS.
        if request.content_type != "application/json":
            return web.json_response({"error": "send application/json"}, status=415)
        try:
            body = await request.json()
            bot_user_id, text = body["bot_user_id"], body["text"]
            payload = body.get("quick_reply")
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "expected bot_user_id and text"}, status=400)
        if not self._hub.knows_bot(str(bot_user_id)):
            return web.json_response({"error": "no such bot"}, status=404)
        if not isinstance(text, str) or not 0 < len(text) <= MAX_TEXT:
            return web.json_response({"error": "text: 1 to 10,000 characters"}, status=400)
        if payload is not None and not isinstance(payload, str):
            return web.json_response({"error": "quick_reply: a string"}, status=400)
        event_id, answer = await self._actions.send(str(bot_user_id), text, payload)
        return web.json_response(
            {"event_id": event_id, "webhook_status": answer.status, "queued": answer.queued}
        )

    async def _crc(self, request: web.Request) -> web.Response:
        return web.json_response((await self._actions.crc()).to_json())

    async def _media(self, request: web.Request) -> web.Response:
        """The bytes a bot uploaded to the X stand-in, as X's media URL would serve them."""
        media = self._actions.media(request.match_info["media_id"])
        if media is None or not media.finalized:
            raise web.HTTPNotFound()
        return web.Response(body=media.data, content_type=media.media_type)
