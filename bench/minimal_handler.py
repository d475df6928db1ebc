"""Baseline (b), the stack's limit: check the signature, publish one persistent message with
publisher confirms through aio-pika, answer 200. Nothing else (no parsing, dedupe, metrics, logs).

    .venv/bin/python bench/minimal_handler.py PORT VHOST QUEUE CONSUMER_SECRET
"""

import asyncio
import base64
import hashlib
import hmac
import sys

import aio_pika
from aiohttp import web

PORT, VHOST, QUEUE, SECRET = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].encode()


async def main() -> None:
    connection = await aio_pika.connect(host="127.0.0.1", virtualhost=VHOST)
    channel = await connection.channel(publisher_confirms=True)
    await channel.declare_queue(QUEUE, durable=True)

    async def deliver(request: web.Request) -> web.Response:
        body = await request.read()
        mac = hmac.new(SECRET, body, hashlib.sha256).digest()
        expected = b"sha256=" + base64.b64encode(mac)
        given = request.headers.get("x-twitter-webhooks-signature", "").encode()
        if not hmac.compare_digest(expected, given):
            return web.Response(status=401)
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await channel.default_exchange.publish(message, routing_key=QUEUE)  # returns once confirmed
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/webhooks", deliver)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", PORT).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
