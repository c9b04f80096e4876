"""Prometheus metrics, in a registry per application instance.

A registry per instance (not the global default) lets several bots run in one
test process without their counters mixing.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.commands_handled = Counter(
            "readybot_commands_handled",
            "Chat commands handled, by command and outcome.",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.messages_sent = Counter(
            "readybot_messages_sent",
            "Matrix events sent from the outbox, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.send_failures = Counter(
            "readybot_outbox_send_failures",
            "Failed send attempts from the outbox, by reason (rate_limited, transient, permanent).",
            ["reason"],
            registry=self.registry,
        )
        self.messages_dropped = Counter(
            "readybot_outbox_messages_failed",
            "Outbox messages given up after repeated permanent refusals.",
            registry=self.registry,
        )
        self.outbox_resume_lookups = Counter(
            "readybot_outbox_resume_lookups",
            "Rows an earlier process had begun sending, looked for in the room before sending again,"
            " by outcome (found, absent, unknown: beyond the look-back).",
            ["outcome"],
            registry=self.registry,
        )
        self.outbox_depth = Gauge(
            "readybot_outbox_depth",
            "Messages waiting in the outbox.",
            registry=self.registry,
        )
        self.outbox_oldest_age = Gauge(
            "readybot_outbox_oldest_age_seconds",
            "Age of the oldest message waiting in the outbox (0 when empty).",
            registry=self.registry,
        )
        self.sync_errors = Counter(
            "readybot_sync_errors",
            "Failed sync requests to the homeserver.",
            registry=self.registry,
        )
        self.undecryptable_events = Counter(
            "readybot_undecryptable_events",
            "Encrypted events the bot could not decrypt.",
            registry=self.registry,
        )
        self.device_cross_signed = Gauge(
            "readybot_device_cross_signed",
            "1 when the bot's Matrix device is cross-signed by the bot's own identity; Element in its "
            "2026 default mode neither reads nor sends to the bot's device otherwise. No series while "
            "encryption or cross-signing is off.",
            ["device"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "readybot_ready",
            "1 once the first sync is done and the store is open.",
            registry=self.registry,
        )
        self.leader = Gauge(
            "readybot_leader",
            "1 while this replica holds the leader Lease and acts, 0 while it is a standby "
            "(no series while ha.enabled is off).",
            ["identity"],
            registry=self.registry,
        )
        self.leadership_transitions = Counter(
            "readybot_leadership_transitions",
            "Times this replica gained or lost the lead, by direction (gained, lost).",
            ["direction"],
            registry=self.registry,
        )
