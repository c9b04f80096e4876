"""Argo CD Applications through ``KubeApi``: the cluster side of ``ArgoApplications``.

Three verbs on ``applications.argoproj.io`` and nothing else: get (read one
app), list (``!apps``) and patch (write the sync operation as a conditional
JSON merge patch). ``deploy/base/rbac-approvals.yaml`` grants exactly these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.kube.client import KubeApi
from bot.kube.resources import ARGO_APPLICATIONS


class KubeArgoApplications:
    """``ArgoApplications`` over the Kubernetes API (errors are ``bot.kube.errors``)."""

    def __init__(self, api: KubeApi) -> None:
        self._api = api

    async def get(self, namespace: str, name: str) -> Mapping[str, Any]:
        return await self._api.get_resource(*ARGO_APPLICATIONS, name, namespace=namespace)

    async def list(self, namespace: str) -> list[Mapping[str, Any]]:
        listing = await self._api.list_resource(*ARGO_APPLICATIONS, namespace=namespace)
        return list(listing.items)

    async def patch(self, namespace: str, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        return await self._api.merge_patch_resource(
            *ARGO_APPLICATIONS, name, dict(patch), namespace=namespace
        )
