"""Small builders of the objects the Kubernetes tests create."""

from __future__ import annotations

from typing import Any


def application(name: str, *, labels: dict[str, str] | None = None, revision: str = "main") -> dict[str, Any]:
    """A minimal Argo CD Application that the upstream CRD's schema accepts."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": {
            "project": "default",
            "source": {
                "repoURL": "https://git.example.org/platform.git",
                "path": name,
                "targetRevision": revision,
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
        },
    }


def config_map(
    name: str, data: dict[str, str] | None = None, *, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "data": dict(data or {}),
    }
