"""Fuzz: every relay message, from arbitrary input of any size, renders and fits a Matrix event."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings

from bot.velero.model import RunKind, parse_run
from tests.fuzz.conftest import FUZZ
from tests.fuzz.fuzz_renderers import (
    RENDER_ALERTS,
    RENDER_APPROVALS,
    RENDER_FALCO,
    RENDER_READINESS,
    RENDER_VELERO,
)


@settings(FUZZ, max_examples=150)
@given(RENDER_ALERTS.strategy)
def test_alert_group_messages_fit_an_encrypted_edit(case: Any) -> None:
    """Group message, thread line and digest of any valid Alertmanager payload stay under 65,536 bytes."""
    RENDER_ALERTS.check(case)


@settings(FUZZ, max_examples=200)
@given(RENDER_FALCO.strategy)
def test_falco_messages_fit_an_encrypted_edit(case: Any) -> None:
    """Event, digest and mute summary of any valid falcosidekick events stay under 65,536 bytes."""
    RENDER_FALCO.check(case)


@settings(FUZZ, max_examples=200)
@given(RENDER_VELERO.strategy)
def test_velero_messages_fit_an_encrypted_edit(case: Any) -> None:
    """Outcome, summary, digest and location messages of any Backup/Restore object stay under 65,536 bytes."""
    RENDER_VELERO.check(case)


@settings(FUZZ, max_examples=200)
@given(RENDER_APPROVALS.strategy)
def test_approval_messages_fit_an_encrypted_edit(case: Any) -> None:
    """Prompt (with mentions), outcome and list of requests in any state stay under 65,536 bytes."""
    RENDER_APPROVALS.check(case)


@settings(FUZZ, max_examples=200)
@given(RENDER_READINESS.strategy)
def test_readiness_messages_fit_an_encrypted_edit(case: Any) -> None:
    """Scorecard, digest and details with any marks and probe findings stay under 65,536 bytes."""
    RENDER_READINESS.check(case)


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_velero_timestamp_at_the_calendar_edge_does_not_break_the_view(stamp: str) -> None:
    """A Backup started at year 1 or 9999 with an offset has no start time; parsing never raises."""
    run = parse_run(RunKind.BACKUP, {"metadata": {"name": "b"}, "status": {"startTimestamp": stamp}})
    assert run.started is None
