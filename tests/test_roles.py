"""Roles: a webhook-only and a worker-only daemon share one broker and bridge a DM together."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.daemon import SECRETS, free_port
from tests.support.process_env import start_process_env


async def test_webhook_and_worker_roles_split_the_work(
    aiohttp_server: Any, tmp_path: Path, rabbit_vhost: str
) -> None:
    env = await start_process_env(aiohttp_server, tmp_path, rabbit_vhost)
    worker_port = free_port()
    worker_config = tmp_path / "worker.conf"
    text = env.config.read_text()
    assert f"port: {env.port}" in text
    worker_config.write_text(text.replace(f"port: {env.port}", f"port: {worker_port}"))

    webhook = await env.start("webhook")
    worker = await env.start("worker", worker_config, worker_port)
    try:
        async with aiohttp.ClientSession() as http:
            # The worker serves health and metrics only; no webhook, no push API.
            async with http.get(worker.url + "/webhooks", params={"crc_token": "x"}) as r:
                assert r.status == 404
            for daemon, role in ((webhook, "webhook"), (worker, "worker")):
                async with http.get(daemon.url + "/health/ready") as r:
                    assert (await r.json())["role"] == role
                async with http.get(daemon.url + "/metrics") as r:
                    assert f'twitter_bot_instance_info{{role="{role}"}} 1.0' in await r.text()
        await env.send_dm(webhook.url, "7001", "split roles")
        [dm] = await env.x.wait_for_dms(1, timeout=15)
        assert dm.text == "echo: split roles"
    finally:
        await webhook.kill()
        await worker.kill()
    assert env.gateway.requests[0].idempotency_key == "7001"
    logs = "".join(webhook.logs + worker.logs)
    roles = {
        json.loads(line).get("role") for line in webhook.logs + worker.logs if line.startswith("{")
    }
    assert {"worker", "webhook"} <= roles
    for secret in SECRETS.values():
        assert secret not in logs
