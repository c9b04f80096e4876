"""The Kubernetes feature: puts a ``KubeApi`` into the extensions for the features after it.

Approvals, the Velero relay and readiness look it up with
``ctx.extensions.find(KubeApi)`` (None: Kubernetes is not enabled) or
``services.extensions.get(KubeApi, what="Kubernetes access")`` in a command
(a UserError saying it is not configured).

An unreachable cluster at start-up is not an error: the bot starts, logs it,
and the features report "unknown/unreachable" until the API answers. A
connection that cannot even be set up (no kubeconfig, unknown context) is a
configuration error and stops the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from bot.features import FeatureParts
from bot.kube.client import KubeApi
from bot.kube.errors import KubeError

if TYPE_CHECKING:
    from bot.features import FeatureContext

log = logging.getLogger(__name__)


async def kubernetes_feature(ctx: FeatureContext) -> FeatureParts:
    # Loading reads the kubeconfig or service account files: off the loop.
    api = await asyncio.to_thread(KubeApi.from_settings, ctx.settings.kubernetes)
    ctx.extensions.put(KubeApi, api)

    async def probe_then_close(stop: asyncio.Event) -> None:
        """Say once whether the cluster answers; close the client when the bot stops."""
        probe = asyncio.create_task(log_cluster_version(api), name="kube-probe")
        try:
            await stop.wait()
        finally:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
            await api.close()

    return FeatureParts(root_tasks=[probe_then_close])


async def log_cluster_version(api: KubeApi) -> None:
    try:
        version = await api.server_version()
    except KubeError as error:
        log.warning("Kubernetes API: %s; cluster features report 'unknown' until it answers", error)
        return
    log.info("Kubernetes API reachable: %s", version.get("gitVersion", "unknown version"))
