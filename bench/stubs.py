"""Instant stand-ins for X's DM API and the bot gateway, in their own process, for benchmarks.

No OAuth verification (tests/fakes/fake_x.py does that for the test suite): the benchmarks
measure the daemon, not the fake. The gateway answers one text reply, ``r:<first word of the
user's text>`` (the event id in the benchmarks' deliveries), after ``--gateway-delay`` seconds.
The X stand-in records (text, time) of every DM, readable at ``GET /_dms``.

    .venv/bin/python bench/stubs.py --port 8899 [--gateway-delay 2]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time

from aiohttp import web

IDS = itertools.count(1_900_000_000_000_000_000)


def make_app(gateway_delay: float) -> web.Application:
    dms: list[tuple[str, float]] = []

    async def gateway(request: web.Request) -> web.Response:
        body = await request.json()
        if gateway_delay > 0:
            await asyncio.sleep(gateway_delay)
        word = str(body.get("text", "")).split(" ", 1)[0]
        return web.json_response({"messages": [{"type": "text", "text": f"r:{word}"}]})

    async def dm(request: web.Request) -> web.Response:
        body = await request.json()
        create = body["event"]["message_create"]
        dms.append((create["message_data"]["text"], time.time()))
        event = {
            "type": "message_create",
            "id": str(next(IDS)),
            "created_timestamp": str(int(time.time() * 1000)),
            "message_create": create,
        }
        return web.json_response({"event": event})

    async def no_content(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    async def list_dms(request: web.Request) -> web.Response:
        return web.json_response(dms)

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"dms": len(dms)})

    async def reset(request: web.Request) -> web.Response:
        dms.clear()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/bots/{bot_id}/conversations/{conversation_id}/messages", gateway)
    app.router.add_post("/1.1/direct_messages/events/new.json", dm)
    app.router.add_post("/1.1/direct_messages/indicate_typing.json", no_content)
    app.router.add_post("/1.1/direct_messages/mark_read.json", no_content)
    app.router.add_get("/_dms", list_dms)
    app.router.add_get("/_count", count)
    app.router.add_post("/_reset", reset)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gateway-delay", type=float, default=0.0)
    args = parser.parse_args()
    web.run_app(
        make_app(args.gateway_delay),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
