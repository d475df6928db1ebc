"""A probe, not a baseline: the minimal handler (b) with concurrent deliveries packed.

The code of minimal_handler.py (its signature check, app and server) with a persistent,
publisher-confirmed publish as there, but deliveries that arrive while a shard's publish is
in flight wait for it to confirm and then go out together as one broker message (group
commit: a lone delivery is never held back). 8 shard queues, chosen by a hash of the body
as the daemon's are by conversation. Every request is still answered only after its own
pack is confirmed. It measures how much packing could lift ingest before anyone builds it
into the daemon, whose consumer would then have to ack a pack only once every delivery in
it is done.

    .venv/bin/python bench/packing_probe.py PORT VHOST QUEUE CONSUMER_SECRET
"""

import asyncio
import sys
import zlib

import aio_pika
from aiohttp import web
from minimal_handler import serve, webhook_app

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


async def main(port: int, vhost: str, queue: str, secret: bytes) -> None:
    connection = await aio_pika.connect(host="127.0.0.1", virtualhost=vhost)
    channel = await connection.channel(publisher_confirms=True)
    packers = []
    for shard in range(SHARDS):
        name = f"{queue}.{shard}"
        await channel.declare_queue(name, durable=True)
        packers.append(Packer(channel.default_exchange, name))

    async def publish(body: bytes) -> None:
        await packers[zlib.crc32(body) % SHARDS].publish(body)

    async def stats(request: web.Request) -> web.Response:
        packs, deliveries = sum(p.packs for p in packers), sum(p.deliveries for p in packers)
        return web.json_response({"packs": packs, "deliveries": deliveries})

    app = webhook_app(secret, publish)
    app.router.add_get("/stats", stats)
    await serve(app, port)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].encode()))
