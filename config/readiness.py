"""Settings of the production-readiness scorecard (issue 6).

Every key has a default, so an empty ``readiness:`` section validates; the
feature is off until ``enabled: true`` (and needs ``kubernetes.enabled`` for
the cluster probes).
"""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AnyHttpUrl, Field, field_validator

from config.base import Section, check_room_ids
from config.cron import parse_cron


class ReadinessSettings(Section):
    """Where the plan is, where the probes look, and when the digest is posted."""

    enabled: bool = False
    # The plan file; None: the one shipped with readybot (config/readiness.yaml).
    plan: Path | None = None
    # Prometheus' base URL for the "prometheus" and "prometheus_rule" probes;
    # unset: those criteria are unknown.
    prometheus_url: AnyHttpUrl | None = None
    # Alertmanager's base URL for the "alertmanager" probes; unset:
    # alertmanager.api_url, else those criteria are unknown.
    alertmanager_url: AnyHttpUrl | None = None
    # Bound of one criterion's probe (all its requests); slower is "unknown".
    probe_timeout_s: float = Field(default=10.0, gt=0, le=120)
    # Cron expression (five fields) of the digest posted to `rooms`; null: no digest.
    digest_schedule: str | None = "0 9 * * 1"
    # The time zone digest_schedule is read in.
    timezone: str = "UTC"
    # Room ids (!…) the digest is posted to.
    rooms: list[str] = Field(default_factory=list)
    # Stored runs kept for the change and the trend chart; older ones are pruned.
    history_runs: int = Field(default=500, ge=2, le=100_000)
    # Runs the trend chart shows (the newest ones).
    trend_runs: int = Field(default=60, ge=2, le=1_000)

    @field_validator("plan")
    @classmethod
    def _plan_is_a_file(cls, value: Path | None) -> Path | None:
        # Caught by check-config, not at the first !readiness.
        if value is not None and not value.is_file():
            raise ValueError("must be an existing file")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be a time zone name such as UTC or Europe/Berlin") from None
        return value

    @field_validator("digest_schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_cron(value)
            except ValueError as error:
                raise ValueError(f"not a cron expression: {error}") from None
        return value

    @field_validator("rooms")
    @classmethod
    def _room_ids(cls, value: list[str]) -> list[str]:
        return check_room_ids(value)

    @property
    def plan_path(self) -> Path:
        from config.readiness_plan import SHIPPED_PLAN

        return self.plan or SHIPPED_PLAN
