"""What the approval service needs from the cluster: three calls on Argo CD Applications.

The service and the commands depend on this Protocol only, so neither imports
the Kubernetes client: ``bot.approvals.argocd`` adapts ``KubeApi`` to it and
tests use an in-memory fake. Failures are the Kubernetes layer's own errors
(``bot.kube.errors``, which does not import the client either): their
messages are safe to show in the room.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class ArgoApplications(Protocol):
    async def get(self, namespace: str, name: str) -> Mapping[str, Any]:
        """The Application object as the API returns it."""
        ...

    async def list(self, namespace: str) -> list[Mapping[str, Any]]:
        """Every Application in the namespace."""
        ...

    async def patch(self, namespace: str, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        """Apply a JSON merge patch; conditional (409 → ``Conflict``) when it carries a resourceVersion."""
        ...
