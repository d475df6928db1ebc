"""A probe, not a baseline: the minimal handler (b) with concurrent deliveries packed.

Same signature check and persistent, publisher-confirmed publish as minimal_handler.py,
but deliveries that arrive while a shard's publish is in flight wait for it to confirm
and then go out together as one broker message (group commit: a lone delivery is never
held back). 8 shard queues, chosen by a hash of the body as the daemon's are by
conversation. Every request is still answered only after its own pack is confirmed. It
measures how much packing could lift ingest before anyone builds it into the daemon,
whose consumer would then have to ack a pack only once every delivery in it is done.

    .venv/bin/python bench/packing_probe.py PORT VHOST QUEUE CONSUMER_SECRET
"""

import asyncio
import base64
import hashlib
import hmac
import sys
import zlib

import aio_pika
from aiohttp import web

PORT, VHOST, QUEUE, SECRET = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].encode()
SHARDS = 8


class Packer:
    """One publish in flight per shard; whoever gets the lock takes everything waiting."""

    def __init__(self, exchange: aio_pika.abc.AbstractExchange, routing_key: str) -> None:
        self.exchange, self.routing_key = exchange, routing_key
        self.lock = asyncio.Lock()
        self.waiting: list[tuple[bytes, asyncio.Future[None]]] = []
        self.packs = self.deliveries = 0

    async def publish(self, body: bytes) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((body, done))
        async with self.lock:
            if not done.done():  # no earlier holder took it: take all that wait
                pack, self.waiting = self.waiting, []
                payload = b"".join(len(b).to_bytes(4, "big") + b for b, _ in pack)
                message = aio_pika.Message(payload, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                try:
                    await self.exchange.publish(message, routing_key=self.routing_key)
                except Exception as exc:  # noqa: BLE001 - every waiter gets the failure
                    for _, future in pack:
                        future.set_exception(exc)
                else:
                    for _, future in pack:
                        future.set_result(None)
                self.packs += 1
                self.deliveries += len(pack)
        await done


async def main() -> None:
    connection = await aio_pika.connect(host="127.0.0.1", virtualhost=VHOST)
    channel = await connection.channel(publisher_confirms=True)
    packers = []
    for shard in range(SHARDS):
        name = f"{QUEUE}.{shard}"
        await channel.declare_queue(name, durable=True)
        packers.append(Packer(channel.default_exchange, name))

    async def deliver(request: web.Request) -> web.Response:
        body = await request.read()
        mac = hmac.new(SECRET, body, hashlib.sha256).digest()
        expected = b"sha256=" + base64.b64encode(mac)
        given = request.headers.get("x-twitter-webhooks-signature", "").encode()
        if not hmac.compare_digest(expected, given):
            return web.Response(status=401)
        await packers[zlib.crc32(body) % SHARDS].publish(body)
        return web.Response(text="ok")

    async def stats(request: web.Request) -> web.Response:
        packs, deliveries = sum(p.packs for p in packers), sum(p.deliveries for p in packers)
        return web.json_response({"packs": packs, "deliveries": deliveries})

    app = web.Application()
    app.router.add_post("/webhooks", deliver)
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", PORT).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
