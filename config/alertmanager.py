"""Settings of the Alertmanager relay and of silences from chat (issue 3).

Every field has a default, so an empty ``alertmanager`` section validates; the
relay is off until ``enabled: true``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from pydantic import AnyHttpUrl, ConfigDict, Field, field_validator, model_validator

from config.base import Section, check_room_ids
from config.durations import Duration

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Matcher values: "value" (equal), "=~regex", "!=value", "!~regex" (regexes
# are anchored, as in Alertmanager).
MATCHER_OPERATORS = ("=~", "!=", "!~")


class AlertRoute(Section):
    """Where the groups of some receivers and/or labels go.

    A route matches a group when its receiver is one of ``receivers`` (or
    ``receivers`` is empty) and every matcher holds on the group's common
    labels (the labels all its alerts share; a missing label reads as "").
    Routes are tried in order and the first match wins, unless it sets
    ``continue: true`` (as in Alertmanager): then later routes are tried too
    and the group goes to the rooms of every matching route.
    """

    # Allow the field to be given as "continue" (Alertmanager's word) in YAML.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    receivers: list[str] = Field(default_factory=list)
    matchers: dict[str, str] = Field(default_factory=dict)
    rooms: list[str] = Field(min_length=1)
    continue_: bool = Field(default=False, alias="continue")

    @field_validator("rooms")
    @classmethod
    def _room_ids(cls, value: list[str]) -> list[str]:
        return check_room_ids(value)

    @field_validator("matchers")
    @classmethod
    def _matcher_shape(cls, value: dict[str, str]) -> dict[str, str]:
        for name, expected in value.items():
            if not _LABEL_NAME.match(name):
                raise ValueError("label names must match [a-zA-Z_][a-zA-Z0-9_]*")
            if expected.startswith(("=~", "!~")):
                try:
                    re.compile(expected[2:])
                except re.error as error:
                    raise ValueError(f"matcher for {name}: invalid regex ({error.msg})") from None
        return value


class SendBudget(Section):
    """The bot user's message rate limit on the homeserver, as the relay plans with it.

    Synapse's defaults (``rc_message``: burst 10, 0.2/s) are what a production
    homeserver enforces for a bot. The limit is per user, shared by all rooms.
    When a new alert group's message could not be sent within
    ``max_delay_s`` under this budget (counting what is already queued), the
    relay folds new groups into one digest message per room instead.
    """

    burst: int = Field(default=10, ge=1, le=100_000)
    per_minute: float = Field(default=12.0, gt=0, le=1_000_000)
    # A third of the minute promised to operators: the rest is left for the
    # digest's own message and edits, and for estimation error. At least 15 s
    # (three events at 12/min), or with the bucket empty even a lone new
    # group would be folded.
    max_delay_s: float = Field(default=20.0, ge=1, le=600)
    # Once 3 or more events are queued (a storm), the wait that folds: under
    # the budget, or at the rate the outbox is measured to send at (over the
    # last 10 s, once it sent 8 events in them; 10/s assumed before that).
    # A storm's digest then goes out within a second or two, also with a
    # budget raised past what the homeserver and the network carry; after a
    # fold, new groups keep folding for this long (the storm is underway).
    # A lone group is judged by max_delay_s alone.
    fold_after_s: float = Field(default=1.0, ge=0.5, le=600)


class AlertmanagerSettings(Section):
    """The Alertmanager webhook relay: routing, looks and storm behaviour."""

    enabled: bool = False
    # Routes are tried in order (see AlertRoute); a group no route takes goes
    # to default_rooms. With neither, the group is accepted and not posted.
    routes: list[AlertRoute] = Field(default_factory=list)
    default_rooms: list[str] = Field(default_factory=list)
    # The label holding an alert's severity, and the severities that mention
    # the room (@room) when a group first fires. The bot needs the room's
    # "notifications.room" power level (50 by default) for the mention to notify.
    severity_label: str = "severity"
    mention_room_severities: list[str] = Field(default_factory=lambda: ["critical"])
    # A directory with alert_group / alert_digest / alert_thread_line
    # templates (NAME.txt.j2 + NAME.html.j2) that replace the shipped ones.
    templates_dir: Path | None = None
    send_budget: SendBudget = Field(default_factory=SendBudget)
    # Links use Alertmanager's externalURL unless this overrides it (an
    # Alertmanager behind a proxy often knows only its internal address).
    external_url: AnyHttpUrl | None = None
    # A prefilled "silence this group" link to Alertmanager's UI.
    silence_link: bool = True
    # Annotations whose value is a dashboard URL, shown as links.
    dashboard_annotation_keys: list[str] = Field(
        default_factory=lambda: ["dashboard_url", "grafana_url", "dashboard"]
    )
    # Labels never listed per alert (the alert name and severity are shown
    # anyway; the others are noise from the Prometheus operator).
    labels_hidden: list[str] = Field(
        default_factory=lambda: ["alertname", "severity", "prometheus", "endpoint", "metrics_path"]
    )
    # Alerts listed in a group message before "… and N more".
    max_alerts_shown: int = Field(default=20, ge=1, le=500)
    # A short line in the group message's thread for each change.
    thread_updates: bool = True
    # Resolved groups are kept this long (so a late retry of their last
    # notification is still recognised), then forgotten.
    resolved_retention_s: float = Field(default=86_400.0, ge=60, le=90 * 86_400)

    # -- silences and queries from chat (!alerts, !silence, 🔕); set by the silences feature --
    # Alertmanager's API base (its URL, route prefix included); unset: those commands are off.
    api_url: AnyHttpUrl | None = None
    api_timeout_s: float = Field(default=10.0, gt=0, le=120)
    # How long a 🔕 reaction silences a group; the longest !silence accepted.
    silence_default_duration: Duration = timedelta(hours=2)
    silence_max_duration: Duration = timedelta(days=7)

    @field_validator("default_rooms")
    @classmethod
    def _room_ids(cls, value: list[str]) -> list[str]:
        return check_room_ids(value)

    @field_validator("templates_dir")
    @classmethod
    def _templates_dir_exists(cls, value: Path | None) -> Path | None:
        # Caught by check-config, not at the first alert.
        if value is not None and not value.is_dir():
            raise ValueError("must be an existing directory")
        return value

    @field_validator("severity_label")
    @classmethod
    def _label_name(cls, value: str) -> str:
        if not _LABEL_NAME.match(value):
            raise ValueError("must be a label name ([a-zA-Z_][a-zA-Z0-9_]*)")
        return value

    @model_validator(mode="after")
    def _somewhere_to_post(self) -> AlertmanagerSettings:
        if self.enabled and not self.default_rooms and not self.routes:
            raise ValueError("alertmanager.enabled needs default_rooms or routes: where should alerts go?")
        return self
