"""The feature catalogue: which features this configuration turns on, in start order.

Imported only by the composition root (``bot.app``): the features import the
protocol (``bot.features``), never this list, so no capability depends on
another through it. The order is the features' dependencies: a feature that
finds another's service in the extensions comes after it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.features import FeatureFactory
    from config.settings import Settings


def enabled_features(settings: Settings) -> list[FeatureFactory]:
    """The features this configuration turns on, in start order."""
    features: list[FeatureFactory] = []
    if settings.kubernetes.enabled:
        # First: approvals, Velero and readiness look its KubeApi up. Imported
        # here so a bot without a cluster never loads the kubernetes client.
        from bot.kube.feature import kubernetes_feature

        features.append(kubernetes_feature)
    if settings.velero.enabled:
        # After the kubernetes feature, whose KubeApi it watches Velero with
        # (it refuses to start without one).
        from bot.velero.feature import velero_feature

        features.append(velero_feature)
    drills = settings.velero.enabled and settings.velero.drills.enabled
    if settings.approvals.apps or drills:
        # After the kubernetes feature, whose KubeApi it looks up.
        from bot.approvals.feature import approvals_feature

        features.append(approvals_feature)
    if drills:
        # After the approvals feature, which gates the drills, and the kubernetes feature.
        from bot.drills.feature import drills_feature

        features.append(drills_feature)
    # Before the Alertmanager feature, which finds the dead-man's switch in the extensions.
    from bot.deadman.feature import deadman_feature

    features.append(deadman_feature)
    if settings.alertmanager.enabled or settings.alertmanager.api_url is not None:
        # After the dead-man's switch, which it hands the Watchdog heartbeats
        # (the relay) and asks what a heartbeat is (silences).
        from bot.alertmanager.feature import alertmanager_feature

        features.append(alertmanager_feature)
    if settings.falco.enabled:
        # Depends on no other feature.
        from bot.falco.feature import falco_feature

        features.append(falco_feature)
    if settings.readiness.enabled:
        # Last: after the kubernetes and dead-man's switch features, whose
        # KubeApi, DeadmansSwitch and AlertmanagerApi it looks up.
        from bot.readiness.feature import readiness_feature

        features.append(readiness_feature)
    return features
