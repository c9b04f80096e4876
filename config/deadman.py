"""Settings of the dead-man's switch on Alertmanager's Watchdog (issue 3)."""

from __future__ import annotations

from config.base import Section


class DeadmanSettings(Section):
    """Filled in by the dead-man's switch feature."""
