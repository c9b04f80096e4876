"""The Kubernetes feature: off by default, first when on, a KubeApi in the extensions, closed on stop."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

import pytest

from bot.catalog import enabled_features
from bot.errors import ConfigError
from bot.features import Extensions, FeatureContext
from bot.kube.client import KubeApi
from bot.kube.errors import ClusterUnreachable
from bot.kube.feature import kubernetes_feature
from config.kubernetes import KubernetesSettings
from config.settings import MatrixSettings, Settings
from tests.kube.handle import KubeTarget


def settings_with(kubernetes: KubernetesSettings) -> Settings:
    matrix = MatrixSettings(homeserver="https://matrix.example.org", user_id="@bot:example.org", password="p")
    return Settings(matrix=matrix, kubernetes=kubernetes)


def context(settings: Settings) -> FeatureContext:
    # The feature reads only settings and extensions.
    return cast(FeatureContext, SimpleNamespace(settings=settings, extensions=Extensions()))


def test_an_empty_section_validates_and_leaves_kubernetes_off() -> None:
    """kubernetes: {} is valid, and then no Kubernetes feature is built."""
    settings = settings_with(KubernetesSettings())
    assert settings.kubernetes.enabled is False
    assert all(factory is not kubernetes_feature for factory in enabled_features(settings))


def test_when_enabled_it_is_the_first_feature() -> None:
    """With kubernetes.enabled the Kubernetes feature starts first, before the features that look it up."""
    settings = settings_with(KubernetesSettings(enabled=True))
    assert enabled_features(settings)[0] is kubernetes_feature


async def test_the_feature_provides_a_kube_api_and_closes_it_on_stop(kube: KubeTarget) -> None:
    """The factory puts a working KubeApi into the extensions; its root task closes it when the bot stops."""
    ctx = context(settings_with(kube.settings()))
    parts = await kubernetes_feature(ctx)
    api = ctx.extensions.get(KubeApi)
    assert kube.namespace in [n["metadata"]["name"] for n in await api.list_namespaces()]

    stop = asyncio.Event()
    (root_task,) = parts.root_tasks
    task = asyncio.create_task(root_task(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 2)
    with pytest.raises(ClusterUnreachable, match="closed"):
        await api.list_namespaces()


async def test_an_unloadable_kubeconfig_stops_the_start_as_a_config_error(kube: KubeTarget) -> None:
    """A kubeconfig that does not exist is a ConfigError (exit 78), not a crash or a silent skip."""
    settings = settings_with(kube.settings(kubeconfig=kube.kubeconfig_path.with_name("missing")))
    with pytest.raises(ConfigError):
        await kubernetes_feature(context(settings))
