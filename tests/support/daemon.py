"""Running the real ``twitter-bot`` command as a subprocess, with a config written for the test."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.support.rabbit import RABBIT_HOST, RABBIT_PORT, streams_may_exist

SECRETS = {
    "consumer_secret": "proc-consumer-secret-Kq3ZtW9x",
    "bearer": "proc-bearer-token-Vn5RbL2m",
    "default_token": "2222-proc-dflt-tok-Hy7PqS4c",
    "default_secret": "proc-dflt-secret-Jd8MwE6u",
    "bot_token": "1230981029831098231-proc-bot-tok-Xf2GkN7a",
    "bot_secret": "proc-bot-secret-Tc9BvQ3r",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    path: Path,
    *,
    vhost: str,
    queue_prefix: str,
    http_port: int,
    rabbit_port: int = RABBIT_PORT,
    extra: str = "",
) -> Path:
    """A config in the reference file's shape, with the test's ports and names."""
    streams_may_exist(vhost, queue_prefix)
    s = SECRETS
    path.write_text(
        f"""
chatbots.twitter-bot {{
  auth {{
    consumer-key: "proc-app-key"
    consumer-secret: "{s["consumer_secret"]}"
    bearer-token: "{s["bearer"]}"
    default-access-token: "{s["default_token"]}"
    default-access-secret: "{s["default_secret"]}"
  }}
  api {{
    env-name: "DEFAULT"
    webhook-url: "https://bot.example.com/webhooks"
    twitter-url: "https://api.twitter.com/1.1/"
  }}
  bots: [{{
    access-token: "{s["bot_token"]}"
    access-secret: "{s["bot_secret"]}"
    user-id: 1230981029831098231
    bot-id: "aaaabbbb-4444-5555-6666-ccccddddeeee"
  }}]
  webhooks-messaging {{
    message-timeout: 15s
  }}
  http {{ host: "127.0.0.1", port: {http_port}, shutdown-grace: 1s, shutdown-timeout: 3s }}
  logging {{ level: debug, format: json }}
}}
chatbots.gateway-api.url: "http://127.0.0.1:9/gateway"
chatbots.messaging {{
  rabbit {{
    hosts: ["{RABBIT_HOST}:{rabbit_port}"]
    username: "guest"
    password: "guest"
    virtual-host: "{vhost}"
    queue-prefix: "{queue_prefix}"
  }}
}}
{extra}
"""
    )
    return path


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWITTER_BOT_")}
    env.update(extra)
    return env


@dataclass
class DaemonProcess:
    """A running ``python -m twitter_bot run``; its stderr is collected in ``logs``."""

    process: asyncio.subprocess.Process
    port: int
    logs: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    async def start(cls, config: Path, port: int, role: str = "all") -> DaemonProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "twitter_bot",
            "run",
            "--role",
            role,
            "--config",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=cli_env(),
        )
        daemon = cls(process, port)
        daemon._reader = asyncio.create_task(daemon._collect())
        return daemon

    async def _collect(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.logs.append(line.decode(errors="replace"))

    async def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise AssertionError("daemon exited:\n" + "".join(self.logs))
                try:
                    async with session.get(self.url + "/health/ready") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("daemon not ready in time:\n" + "".join(self.logs))

    async def wait_exit(self, timeout: float = 20.0) -> int:
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.wait_exit()
