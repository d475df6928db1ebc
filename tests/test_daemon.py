"""The daemon as a process: serves deliveries, logs JSON without secrets, drains on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path

import aiohttp

from tests.support.daemon import SECRETS, DaemonProcess, free_port, write_config
from tests.support.deliveries import aaa_delivery, dm_event, signed
from tests.support.rabbit import RABBIT_HOST, RABBIT_PORT
from tests.support.tcp_proxy import TcpProxy

BOT = "1230981029831098231"
USER = "3001969357"


async def test_daemon_accepts_logs_json_without_secrets_and_stops_on_sigterm(
    tmp_path: Path, rabbit_vhost: str
) -> None:
    # The broker link runs through a proxy so the test can hold a delivery in flight.
    proxy = TcpProxy(RABBIT_HOST, RABBIT_PORT)
    await proxy.start()
    port = free_port()
    config = write_config(
        tmp_path / "app.conf",
        vhost=rabbit_vhost,
        queue_prefix=f"d-{uuid.uuid4().hex[:8]}",
        http_port=port,
        rabbit_port=proxy.port,
    )
    daemon = await DaemonProcess.start(config, port)
    try:
        await daemon.wait_ready()
        async with aiohttp.ClientSession() as http:
            raw, headers = signed(
                aaa_delivery(BOT, dm_event("900", USER, BOT, "hello daemon")),
                SECRETS["consumer_secret"],
            )
            async with http.post(daemon.url + "/webhooks", data=raw, headers=headers) as response:
                assert response.status == 200
            crc = await http.get(daemon.url + "/webhooks", params={"crc_token": "x"})
            assert crc.status == 200

            # A delivery is in flight (its confirm is held) when SIGTERM arrives.
            proxy.stall()
            raw, headers = signed(
                aaa_delivery(BOT, dm_event("901", USER, BOT)), SECRETS["consumer_secret"]
            )
            in_flight = asyncio.ensure_future(
                http.post(daemon.url + "/webhooks", data=raw, headers=headers)
            )
            await asyncio.sleep(0.2)
            daemon.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            ready = await http.get(daemon.url + "/health/ready")
            assert ready.status == 503
            assert (await ready.json())["checks"]["shutting_down"] is True
            # The in-flight request is answered (503: never confirmed), not cut off.
            response = await in_flight
            assert response.status == 503
        assert await daemon.wait_exit() == 0
    finally:
        await daemon.kill()
        await proxy.stop()

    events = [json.loads(line) for line in daemon.logs if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "daemon.started" in names
    assert "webhook.dm_queued" in names
    assert names[-1] == "daemon.stopped"
    queued = next(e for e in events if e["event"] == "webhook.dm_queued")
    assert queued["event_id"] == "900"
    assert queued["bot_id"] == "aaaabbbb-4444-5555-6666-ccccddddeeee"
    output = "".join(daemon.logs)
    for secret in SECRETS.values():
        assert secret not in output
