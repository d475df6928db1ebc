"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from twitter_bot.metrics import Metrics
from twitter_bot.queue.base import Publisher


@dataclass
class Lifecycle:
    """Process-wide state the probes report: set once SIGTERM arrives."""

    shutting_down: bool = False


class HealthHandler:
    """``/health/live``, ``/health/ready`` and ``/metrics``."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        publisher: Publisher,
        metrics: Metrics,
        role: str,
        active_shards: Callable[[], list[int] | None] | None = None,
        *,
        webhook: Callable[[], dict[str, object]] | None = None,
    ) -> None:
        self._lifecycle = lifecycle
        self._publisher = publisher
        self._metrics = metrics
        self._role = role
        self._active_shards = active_shards
        self._webhook = webhook
        metrics.instance_info.labels(role).set(1)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/health/live", self.live)
        app.router.add_get("/health/ready", self.ready)
        app.router.add_get("/metrics", self.metrics)

    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "live"})

    async def ready(self, request: web.Request) -> web.Response:
        broker_ok = self._publisher.ready
        checks: dict[str, object] = {
            "broker": "connected" if broker_ok else "unavailable",
            "shutting_down": self._lifecycle.shutting_down,
        }
        if self._webhook is not None:
            # The CRC watchdog's view, for information: readiness is about taking
            # deliveries (the broker), and an instance can't fix X's side by restarting.
            checks["webhook"] = self._webhook()
        status = "ready" if broker_ok and not self._lifecycle.shutting_down else "not ready"
        body: dict[str, object] = {"status": status, "role": self._role, "checks": checks}
        shards = self._active_shards() if self._active_shards is not None else None
        if shards is not None:
            body["active_shards"] = shards
        return web.json_response(body, status=200 if status == "ready" else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        self._metrics.broker_connected.set(1 if self._publisher.ready else 0)
        body = generate_latest(self._metrics.registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response
