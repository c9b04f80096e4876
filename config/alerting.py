"""Settings of the Alertmanager relay and of silences from chat (issue 3)."""

from __future__ import annotations

from config.base import Section


class AlertmanagerSettings(Section):
    """Filled in by the Alertmanager feature."""
