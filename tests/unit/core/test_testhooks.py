"""The test-only hold point: inert unless asked, and accepted by the settings loader."""

from __future__ import annotations

import pytest

from bot.testhooks import HOLD_ENV, hold_point
from config.loading import load_settings
from tests.unit.core.test_config import EXAMPLE, SECRET


def test_hold_point_returns_at_once_when_not_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset, another point, or text not in the detail: the call returns (a held call would never return)."""
    monkeypatch.delenv(HOLD_ENV, raising=False)
    hold_point("outbox.sent", "anything")
    monkeypatch.setenv(HOLD_ENV, "outbox.sent:🔴")
    hold_point("other.point", "🔴 alarm")
    hold_point("outbox.sent", "🟢 recovered")


def test_loader_accepts_the_hold_variable_as_no_setting() -> None:
    """READYBOT_TEST_HOLD_AT configures the tests, not the bot: the loader does not refuse it."""
    settings = load_settings(
        EXAMPLE, environ={"READYBOT_MATRIX__PASSWORD": SECRET, HOLD_ENV: "outbox.sent:x"}
    )
    assert settings.matrix.password is not None
