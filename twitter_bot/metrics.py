"""Prometheus metrics, one registry per application so tests and roles stay isolated."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Every metric the daemon exports on ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.deliveries = Counter(
            "twitter_bot_webhook_deliveries",
            "Webhook deliveries by outcome.",
            ["outcome"],
            registry=r,
        )
        self.signature_failures = Counter(
            "twitter_bot_webhook_signature_failures",
            "Deliveries rejected for a missing or wrong signature.",
            registry=r,
        )
        self.events_dropped = Counter(
            "twitter_bot_webhook_events_dropped",
            "Events in accepted deliveries that are not bridged, by reason.",
            ["reason"],
            registry=r,
        )
        self.duplicates_dropped = Counter(
            "twitter_bot_webhook_duplicates_dropped",
            "DM events dropped because their id was accepted recently.",
            registry=r,
        )
        self.messages_queued = Counter(
            "twitter_bot_messages_queued",
            "DMs durably queued (publisher-confirmed).",
            registry=r,
        )
        self.crc_requests = Counter(
            "twitter_bot_webhook_crc_requests", "CRC challenges answered.", registry=r
        )
        self.publish_confirm_seconds = Histogram(
            "twitter_bot_publish_confirm_seconds",
            "Time from publish to broker confirm of one delivery's messages.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.broker_connected = Gauge(
            "twitter_bot_broker_connected",
            "1 while the broker connection is usable.",
            registry=r,
        )
