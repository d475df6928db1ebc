"""Running the application: bind, serve until SIGTERM/SIGINT, then drain and close."""

from __future__ import annotations

import asyncio
import gc
import signal

import structlog
from aiohttp import web

from twitter_bot.app import LIFECYCLE, Role, create_app
from twitter_bot.settings import Settings

log = structlog.get_logger(__name__)


async def serve(settings: Settings, role: Role = "all", stop: asyncio.Event | None = None) -> None:
    """Serve ``role`` until ``stop`` is set (by SIGTERM or SIGINT when not given)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = create_app(settings, role=role)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.http.shutdown_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.http.host, settings.http.port, reuse_address=True)
        await site.start()
        # Everything built so far (modules, settings, clients, metric families) lives
        # as long as the process: keep it out of the cyclic collector, whose full
        # collections would otherwise walk it all and pause the loop for tens of ms.
        gc.freeze()
        log.info("daemon.started", host=settings.http.host, port=settings.http.port, role=role)
        await stop.wait()
        # Readiness turns 503 at once, so a load balancer stops routing to us
        # while in-flight deliveries finish.
        app[LIFECYCLE].shutting_down = True
        log.info("daemon.stopping", grace_seconds=settings.http.shutdown_grace)
        await asyncio.sleep(settings.http.shutdown_grace)
    finally:
        # Stops listening, waits for in-flight requests, then closes resources.
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("daemon.stopped")
