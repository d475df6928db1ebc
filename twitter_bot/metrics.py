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
        self.echoes_queued = Counter(
            "twitter_bot_echoes_queued",
            "X's echoes of the bots' own DMs queued (or held while the broker link is down).",
            registry=r,
        )
        self.echoes_read = Counter(
            "twitter_bot_bridge_echoes_read",
            "X's echoes read from the echo stream by this worker (again after a reconnect).",
            registry=r,
        )
        self.finished_answers = Counter(
            "twitter_bot_bridge_finished_answers",
            "Answers finished after a crash before their messages came back: recorded for "
            "every worker, or found recorded for a message delivered again.",
            ["event"],
            registry=r,
        )
        self.echo_confirmed_resends = Counter(
            "twitter_bot_bridge_echo_confirmed_replies",
            "Replies in doubt after a crash that X's echo showed were out: not sent again.",
            registry=r,
        )
        self.push_requests = Counter(
            "twitter_bot_push_requests",
            "Push API requests by outcome: accepted, unauthorized, unknown_bot, invalid, "
            "unavailable.",
            ["outcome"],
            registry=r,
        )
        self.push_messages_queued = Counter(
            "twitter_bot_push_messages_queued",
            "Messages in pushes durably queued (publisher-confirmed).",
            registry=r,
        )
        self.crc_requests = Counter(
            "twitter_bot_webhook_crc_requests", "CRC challenges answered.", registry=r
        )
        self.crc_last_answered = Gauge(
            "twitter_bot_webhook_crc_last_answered_timestamp_seconds",
            "Unix time of the last CRC challenge this instance answered.",
            registry=r,
        )
        # The CRC watchdog's view of the webhook; NaN until its first check.
        self.webhook_valid = Gauge(
            "twitter_bot_webhook_valid",
            "1 when the CRC watchdog last found the webhook registered and valid, else 0.",
            registry=r,
        )
        self.webhook_last_check = Gauge(
            "twitter_bot_webhook_last_check_timestamp_seconds",
            "Unix time of the CRC watchdog's last successful check with X.",
            registry=r,
        )
        self.webhook_last_crc = Gauge(
            "twitter_bot_webhook_last_crc_timestamp_seconds",
            "Unix time of the last CRC the watchdog had X run on the webhook.",
            registry=r,
        )
        for gauge in (self.webhook_valid, self.webhook_last_check, self.webhook_last_crc):
            gauge.set(float("nan"))
        self.webhook_crc_triggers = Counter(
            "twitter_bot_webhook_crc_triggers",
            "CRCs the watchdog had X run, by outcome (valid, invalid, error).",
            ["outcome"],
            registry=r,
        )
        self.publish_confirm_seconds = Histogram(
            "twitter_bot_publish_confirm_seconds",
            "Time from publish to broker confirm of one delivery's messages.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.publish_pack_size = Histogram(
            "twitter_bot_publish_pack_size",
            "Messages per broker message published: more than 1 when deliveries to one shard "
            "arrive while its previous publish is in flight (rabbit.pack-publishes).",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.messages_bridged = Counter(
            "twitter_bot_bridge_messages",
            "Queued messages finished by the bridge, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.retries = Counter(
            "twitter_bot_bridge_retries",
            "Attempts that failed transiently and were scheduled again, by error kind.",
            ["kind"],
            registry=r,
        )
        self.dead_letters = Counter(
            "twitter_bot_bridge_dead_letters",
            "Messages moved to the dead-letter queue, by error kind.",
            ["kind"],
            registry=r,
        )
        self.bridge_duplicates_dropped = Counter(
            "twitter_bot_bridge_duplicates_dropped",
            "Messages dropped by a worker because it had already bridged their id.",
            registry=r,
        )
        self.parked = Counter(
            "twitter_bot_bridge_parked",
            "Messages parked (queued again at the head of their shard with a retry time).",
            registry=r,
        )
        self.deliveries_abandoned = Counter(
            "twitter_bot_bridge_deliveries_abandoned",
            "Deliveries a worker stopped working on because their broker link dropped"
            " (the broker delivers them again).",
            registry=r,
        )
        self.loop_lag = Histogram(
            "twitter_bot_event_loop_lag_seconds",
            "How late the event loop ran a due timer, sampled every 5 ms: the wait a new"
            " request sees before it is read.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.bridge_concurrency_limit = Gauge(
            "twitter_bot_bridge_concurrency_limit",
            "In --role all: how many messages the bridge may work on at once, adapted to"
            " the event-loop lag so the webhook stays prompt.",
            registry=r,
        )
        self.rate_limit_pauses = Counter(
            "twitter_bot_bridge_rate_limit_pauses",
            "Times a bot's sending was paused by an X rate limit, by bot id.",
            ["bot_id"],
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "twitter_bot_bridge_end_to_end_seconds",
            "From webhook accept to the last reply sent.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.gateway_seconds = Histogram(
            "twitter_bot_gateway_request_seconds",
            "Gateway call latency, by outcome (ok, permanent, transient, timeout).",
            ["outcome"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.dms = Counter(
            "twitter_bot_dms",
            "DMs sent to X, by bot, outcome (sent, failed) and X error code.",
            ["bot_id", "outcome", "code"],
            registry=r,
        )
        self.instance_info = Gauge(
            "twitter_bot_instance_info",
            "1, labelled with this instance's role (webhook, worker, all).",
            ["role"],
            registry=r,
        )
        self.shard_active = Gauge(
            "twitter_bot_shard_active",
            "1 for each shard this instance is currently the active consumer of.",
            ["shard"],
            registry=r,
        )
        self.broker_connected = Gauge(
            "twitter_bot_broker_connected",
            "1 while the broker connection is usable.",
            registry=r,
        )
