"""Settings of the Kubernetes access layer (issue 4)."""

from __future__ import annotations

from config.base import Section


class KubernetesSettings(Section):
    """Filled in by the Kubernetes layer."""
