"""The tutorial way, for comparison: answer X only after the bot answered and the reply was sent.

Checks the signature, calls the gateway inline for each DM, sends the reply to X, then
answers 200. No queue: X waits for the bot (and a crash loses what was in flight).

    .venv/bin/python bench/naive_receiver.py PORT GATEWAY_URL X_URL CONSUMER_SECRET
"""

import base64
import hashlib
import hmac
import json
import sys

import aiohttp
from aiohttp import web

PORT, GATEWAY, X, SECRET = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].encode()


async def deliver(request: web.Request) -> web.Response:
    body = await request.read()
    expected = b"sha256=" + base64.b64encode(hmac.new(SECRET, body, hashlib.sha256).digest())
    given = request.headers.get("x-twitter-webhooks-signature", "").encode()
    if not hmac.compare_digest(expected, given):
        return web.Response(status=401)
    http = request.app["http"]
    delivery = json.loads(body)
    for event in delivery.get("direct_message_events", []):
        create = event["message_create"]
        user, bot = create["sender_id"], create["target"]["recipient_id"]
        ask = {"message_id": event["id"], "text": create["message_data"]["text"]}
        url = f"{GATEWAY}/v1/bots/demo/conversations/{user}-{bot}/messages"
        async with http.post(url, json=ask) as r:
            replies = (await r.json())["messages"]
        for reply in replies:
            create = {"target": {"recipient_id": user}, "message_data": {"text": reply["text"]}}
            dm = {"event": {"type": "message_create", "message_create": create}}
            async with http.post(f"{X}/1.1/direct_messages/events/new.json", json=dm) as r:
                await r.read()
    return web.Response(text="ok")


async def ready(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def session(app: web.Application):  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        app["http"] = http
        yield


app = web.Application()
app.cleanup_ctx.append(session)
app.router.add_post("/webhooks", deliver)
app.router.add_get("/health/ready", ready)
web.run_app(app, host="127.0.0.1", port=PORT, access_log=None, print=None)
