"""The sandbox: the real daemon, an X stand-in, a bot and a chat page, in one process.

Each part is served on its own local port by one web application's cleanup
contexts, opened in this order and closed in reverse: the HTTP client, the X
stand-in, the bot platform (echo bot or measuring proxy), the daemon exactly as
``twitter-bot run`` builds it (``create_app(settings, role="all")``) with its X
and gateway URLs pointed at the first two, then the CRC loop. The page itself
is the application those contexts belong to.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from twitter_bot.app import LIFECYCLE, create_app
from twitter_bot.sandbox.fake_x import DM_KINDS, FakeX, XCall
from twitter_bot.sandbox.gateway import EchoBot, GatewayProxy
from twitter_bot.sandbox.hub import Hub
from twitter_bot.sandbox.page import ChatPage, PageActions
from twitter_bot.sandbox.webhook_caller import (
    CrcResult,
    WebhookAnswer,
    WebhookCaller,
    XAccount,
    dm_delivery,
)
from twitter_bot.settings import GapRecoverySettings, Settings

log = structlog.get_logger(__name__)

DEFAULT_PORT = 5757
SANDBOX_USER_ID = 732739706
_LOCAL = "127.0.0.1"
_ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})


@dataclass(frozen=True)
class SandboxOptions:
    """How the sandbox runs: the page's address, the bot, the CRC cadence."""

    host: str = _LOCAL
    port: int = DEFAULT_PORT
    # A real bot platform to proxy to; None: the built-in echo bot.
    gateway_url: str | None = None
    # X re-checks a webhook about hourly; the sandbox does it more often, to be seen.
    crc_interval: float = 60.0
    # How long the echo bot thinks when asked to be "slow".
    think_seconds: float = 2.0


def _sandbox_user(settings: Settings) -> XAccount:
    """The person typing in the page: an X account that is not one of the bots."""
    taken = {bot.user_id for bot in settings.bots}
    user_id = next(str(n) for n in itertools.count(SANDBOX_USER_ID) if str(n) not in taken)
    return XAccount(user_id, "Sandbox User", "sandbox_user")


@contextlib.asynccontextmanager
async def _serving(
    app: web.Application, host: str = _LOCAL, port: int = 0, shutdown_timeout: float = 5.0
) -> AsyncIterator[str]:
    """Serve ``app`` until the block ends; yields its base URL (the bound port when 0)."""
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound_port = runner.addresses[0][1]
        shown = _LOCAL if host in _ANY_ADDRESS else host
        yield f"http://{shown}:{bound_port}"
    finally:
        await runner.cleanup()


class Sandbox:
    """The parts, their wiring and their lifecycle; ``make_app()`` is the page's application."""

    def __init__(self, settings: Settings, options: SandboxOptions | None = None) -> None:
        self.settings = settings
        self.options = options or SandboxOptions()
        auth = settings.auth
        self.x = FakeX(consumer_key=auth.consumer_key, consumer_secret=auth.consumer_secret.value)
        self.accounts: dict[str, XAccount] = {}
        for bot in settings.bots:
            self.x.add_user(
                bot.user_id, token=bot.access_token.value, secret=bot.access_secret.value
            )
            self.accounts[bot.user_id] = XAccount(bot.user_id, bot.bot_id, bot.bot_id)
        self.user = _sandbox_user(settings)
        self.hub = Hub(settings.bots, self.user, self.x.media.get)
        self.x.on_call = self._on_x_call
        self.x.on_rejection = self.hub.x_rejected
        self.x_url = self.gateway_url = self.daemon_url = ""
        self.daemon_app: web.Application | None = None
        self._session: aiohttp.ClientSession | None = None
        self._webhook: WebhookCaller | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting_tasks = False

    # -- the application ----------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application()
        for context in (self._http, self._x_server, self._gateway, self._daemon, self._upkeep):
            app.cleanup_ctx.append(context)
        app.on_shutdown.append(self._end_streams)
        actions = PageActions(send=self.send, crc=self.run_crc, media=self.x.media.get)
        ChatPage(self.hub, actions).add_routes(app)
        return app

    def daemon_settings(self) -> Settings:
        """The configuration with X and the gateway pointed at the sandbox's stand-ins.

        The CRC watchdog and gap recovery are off: they call X's webhook management
        API, which the stand-in does not serve (it runs the CRCs itself).
        """
        s = self.settings
        api_base, upload_url = FakeX.urls(self.x_url)
        return replace(
            s,
            api=replace(
                s.api,
                twitter_base_url=api_base,
                upload_url=upload_url,
                crc_watchdog_interval=None,
                gap_recovery=GapRecoverySettings(),
            ),
            gateway=replace(s.gateway, url=self.gateway_url),
        )

    async def _http(self, app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            self._session = session
            yield

    def _http_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the sandbox is not started")
        return self._session

    async def _x_server(self, app: web.Application) -> AsyncIterator[None]:
        async with _serving(self.x.make_app()) as url:
            self.x_url = url
            yield

    async def _gateway(self, app: web.Application) -> AsyncIterator[None]:
        upstream = self.options.gateway_url
        bot_app: web.Application
        if upstream is None:
            token = self.settings.gateway.token
            bot_app = EchoBot(
                token=token.value if token else None,
                observer=self.hub.gateway_called,
                think_seconds=self.options.think_seconds,
            ).make_app()
        else:
            bot_app = GatewayProxy(
                upstream,
                self._http_session,
                self.hub.gateway_called,
                timeout=self.settings.messaging.message_timeout + 5,
            ).make_app()
        async with _serving(bot_app) as url:
            self.gateway_url = url
            yield

    async def _daemon(self, app: web.Application) -> AsyncIterator[None]:
        settings = self.daemon_settings()
        daemon = create_app(settings, role="all")
        self.daemon_app = daemon
        async with _serving(
            daemon, settings.http.host, settings.http.port, settings.http.shutdown_timeout
        ) as url:
            self.daemon_url = url
            webhook_url = url + settings.webhook.path
            self._webhook = WebhookCaller(
                self._http_session, webhook_url, settings.auth.consumer_secret.value
            )
            self.hub.info.update(self._info(settings, webhook_url))
            yield
            # As on SIGTERM in production: readiness 503, then the grace, then drain.
            daemon[LIFECYCLE].shutting_down = True
            await asyncio.sleep(settings.http.shutdown_grace)

    def _info(self, settings: Settings, webhook_url: str) -> dict[str, Any]:
        if settings.uses_rabbitmq:
            hosts = ", ".join(f"{h.host}:{h.port}" for h in settings.rabbit.hosts)
            queue = f"RabbitMQ ({hosts})"
        else:
            queue = f"embedded SQLite ({settings.sqlite.path})"
        return {
            "daemon_url": self.daemon_url,
            "webhook_url": webhook_url,
            "x_url": self.x_url,
            "gateway": self.options.gateway_url or "built-in echo bot",
            "gateway_url": self.gateway_url,
            "queue": queue,
            "dm_api": settings.api.dm_api,
        }

    async def _upkeep(self, app: web.Application) -> AsyncIterator[None]:
        """The CRC at start and periodically; own-DM echoes run as tasks kept here."""
        await self.run_crc()
        self._accepting_tasks = True
        self._spawn(self._crc_loop())
        yield
        self._accepting_tasks = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _end_streams(self, app: web.Application) -> None:
        self.hub.close()

    # -- what the stand-in X does -------------------------------------------------------

    async def send(
        self, bot_user_id: str, text: str, quick_reply: str | None = None
    ) -> tuple[str, WebhookAnswer]:
        """The user DMs a bot: X posts the signed delivery to the daemon's webhook."""
        webhook = self._require_webhook()
        event_id = self.x.new_id()
        self.hub.user_message(event_id, bot_user_id, text, quick_reply)
        delivery = dm_delivery(
            for_user_id=bot_user_id,
            event_id=event_id,
            sender=self.user,
            recipient=self.accounts[bot_user_id],
            text=text,
            quick_reply_metadata=quick_reply,
        )
        answer = await webhook.deliver(delivery)
        self.hub.webhook_answered(event_id, answer)
        log.info(
            "sandbox.dm_delivered",
            event_id=event_id,
            bot_user_id=bot_user_id,
            status=answer.status,
            queued=answer.queued,
        )
        return event_id, answer

    async def run_crc(self) -> CrcResult:
        """X's challenge-response check of the daemon's webhook."""
        result = await self._require_webhook().crc()
        self.hub.crc_checked(result)
        if result.ok:
            log.info("sandbox.crc_passed", ms=round(result.seconds * 1000, 1))
        else:
            log.warning("sandbox.crc_failed", status=result.status, detail=result.detail)
        return result

    async def _crc_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.crc_interval)
            await self.run_crc()

    def _on_x_call(self, call: XCall) -> None:
        self.hub.x_called(call)
        if call.kind in DM_KINDS and self._accepting_tasks:
            self._spawn(self._echo_own_dm(call, self.hub.active_event(call.user_id)))

    async def _echo_own_dm(self, call: XCall, trip: str | None) -> None:
        """X also delivers the bot's own DM to the webhook; the daemon must drop it."""
        if call.event_id is None or call.recipient_id is None:
            return
        recipient = self.accounts.get(call.recipient_id) or (
            self.user
            if call.recipient_id == self.user.user_id
            else XAccount(call.recipient_id, "", "")
        )
        delivery = dm_delivery(
            for_user_id=call.user_id,
            event_id=call.event_id,
            sender=self.accounts[call.user_id],
            recipient=recipient,
            text=call.text or "",
        )
        answer = await self._require_webhook().deliver(delivery)
        self.hub.own_dm_echoed(trip, answer)

    def _require_webhook(self) -> WebhookCaller:
        if self._webhook is None:
            raise RuntimeError("the sandbox's daemon is not started")
        return self._webhook

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sandbox.task_failed", error=repr(task.exception()))


async def run_sandbox(
    settings: Settings, options: SandboxOptions | None = None, stop: asyncio.Event | None = None
) -> None:
    """Run the sandbox until ``stop`` is set (by SIGTERM or SIGINT when not given)."""
    options = options or SandboxOptions()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sandbox = Sandbox(settings, options)
    try:
        async with _serving(sandbox.make_app(), options.host, options.port) as page_url:
            log.info(
                "sandbox.started",
                page=page_url + "/",
                daemon=sandbox.daemon_url,
                x_stand_in=sandbox.x_url,
                gateway=options.gateway_url or "built-in echo bot",
                queue=sandbox.hub.info.get("queue"),
            )
            await stop.wait()
            log.info("sandbox.stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("sandbox.stopped")
