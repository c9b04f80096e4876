"""Settings of the Alertmanager relay, silences and the dead-man's switch (issue 3)."""

from __future__ import annotations

from config.base import Section


class AlertmanagerSettings(Section):
    """Filled in by the Alertmanager feature."""


class DeadmanSettings(Section):
    """Filled in by the dead-man's switch feature."""
