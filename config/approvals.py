"""Settings of the approval gates for critical Argo CD apps (issue 4)."""

from __future__ import annotations

from config.base import Section


class ApprovalsSettings(Section):
    """Filled in by the approvals feature."""
