"""Real daemon processes against fakes served in the test process (for crash and role tests)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.fakes.fake_gateway import FakeGateway
from tests.fakes.fake_x import FakeX, XCall
from tests.support.daemon import SECRETS, DaemonProcess, free_port, write_config
from tests.support.deliveries import aaa_delivery, dm_event, echo_delivery, signed

BOT = "1230981029831098231"
BOT_ID = "aaaabbbb-4444-5555-6666-ccccddddeeee"
USER = "732739706"


@dataclass
class ProcessEnv:
    """FakeX and FakeGateway in the test process, a config pointing real daemons at them."""

    config: Path
    port: int
    x: FakeX
    gateway: FakeGateway

    async def start(
        self, role: str = "all", config: Path | None = None, port: int | None = None
    ) -> DaemonProcess:
        daemon = await DaemonProcess.start(config or self.config, port or self.port, role)
        await daemon.wait_ready()
        return daemon

    def variant(
        self, name: str, *, port: int | None = None, extra: str = "", rabbit: bool = True
    ) -> tuple[Path, int]:
        """Another instance's config: the same fakes, its own port; without rabbit hosts
        (``rabbit=False``) the embedded SQLite queue."""
        port = port or free_port()
        text = self.config.read_text()
        assert f"port: {self.port}" in text
        text = text.replace(f"port: {self.port}", f"port: {port}")
        if not rabbit:
            hosts = re.search(r"^\s*hosts: \[.*\]$", text, re.MULTILINE)
            assert hosts is not None
            text = text.replace(hosts.group(0), "")
        path = self.config.with_name(f"{name}.conf")
        path.write_text(text + extra)
        return path, port

    async def send_dm(self, base_url: str, event_id: str, text: str) -> None:
        await self._post(base_url, aaa_delivery(BOT, dm_event(event_id, USER, BOT, text)))

    async def send_echo(self, base_url: str, dm: XCall) -> None:
        """X's echo of a DM the bot sent (x-api.md: its own DMs come back as events)."""
        await self._post(base_url, echo_delivery(dm))

    async def _post(self, base_url: str, body: dict[str, Any]) -> None:
        raw, headers = signed(body, SECRETS["consumer_secret"])
        async with (
            aiohttp.ClientSession() as http,
            http.post(base_url + "/webhooks", data=raw, headers=headers) as response,
        ):
            assert response.status == 200


async def start_process_env(aiohttp_server: Any, tmp_path: Path, vhost: str) -> ProcessEnv:
    """Serve the fakes and write a config (queue prefix unique to this env) for the daemons."""
    x = FakeX(consumer_key="proc-app-key", consumer_secret=SECRETS["consumer_secret"])
    x.add_user(BOT, token=SECRETS["bot_token"], secret=SECRETS["bot_secret"])
    x_server = await aiohttp_server(x.make_app())
    api_url, upload_url = FakeX.urls(x_server.make_url("/"))
    gateway = FakeGateway()
    gateway_server = await aiohttp_server(gateway.app)
    port = free_port()
    config = write_config(
        tmp_path / "app.conf",
        vhost=vhost,
        queue_prefix=f"proc-{uuid.uuid4().hex[:8]}",
        http_port=port,
        extra=f"""
chatbots.twitter-bot.api.twitter-url: "{api_url}"
chatbots.twitter-bot.api.upload-url: "{upload_url}"
chatbots.gateway-api.url: "{str(gateway_server.make_url("/")).rstrip("/")}"
chatbots.twitter-bot.webhooks-messaging {{ retry-initial-delay: 100ms, retry-max-delay: 500ms }}
chatbots.twitter-bot.logging.level: info
""",
    )
    return ProcessEnv(config, port, x, gateway)
