"""Baseline (b), the stack's limit: check the signature, publish one persistent message with
publisher confirms through aio-pika, answer 200. Nothing else (no parsing, dedupe, metrics, logs).

    .venv/bin/python bench/minimal_handler.py PORT VHOST QUEUE CONSUMER_SECRET
"""

import asyncio
import base64
import hashlib
import hmac
import sys
from collections.abc import Awaitable, Callable

import aio_pika
from aiohttp import web


def webhook_app(secret: bytes, publish: Callable[[bytes], Awaitable[object]]) -> web.Application:
    """POST /webhooks: 401 unless signed with ``secret``, else 200 once ``publish`` returns."""

    async def deliver(request: web.Request) -> web.Response:
        body = await request.read()
        mac = hmac.new(secret, body, hashlib.sha256).digest()
        expected = b"sha256=" + base64.b64encode(mac)
        given = request.headers.get("x-twitter-webhooks-signature", "").encode()
        if not hmac.compare_digest(expected, given):
            return web.Response(status=401)
        await publish(body)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/webhooks", deliver)
    return app


async def serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def main(port: int, vhost: str, queue: str, secret: bytes) -> None:
    connection = await aio_pika.connect(host="127.0.0.1", virtualhost=vhost)
    channel = await connection.channel(publisher_confirms=True)
    await channel.declare_queue(queue, durable=True)

    async def publish(body: bytes) -> None:
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await channel.default_exchange.publish(message, routing_key=queue)  # returns once confirmed

    await serve(webhook_app(secret, publish), port)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].encode()))
