"""KubeApi against the test API server: every method, typed errors, timeouts, the loop kept free."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import Configuration

from bot.kube.client import KubeApi, KubeConfigError, running_in_cluster
from bot.kube.errors import (
    AlreadyExists,
    ClusterUnreachable,
    Conflict,
    Forbidden,
    Invalid,
    MissingCRD,
    NotFound,
    Unauthorized,
)
from bot.kube.resources import (
    ARGO_APPLICATIONS,
    CONFIGMAPS,
    NAMESPACES,
    VELERO_BACKUPS,
)
from config.kubernetes import KubernetesSettings
from tests.kube.handle import KubeHandle, KubeTarget
from tests.kube.objects import application, config_map

GROUP, VERSION, PLURAL = ARGO_APPLICATIONS
# Distinctive, so "not in the message" cannot pass by accident.
TOKEN = "tok-Kube-9fQ2xZr7W"


async def test_custom_object_round_trip(kube_api: KubeHandle) -> None:
    """create, get, list, replace, merge-patch and delete of a namespaced custom object return plain dicts."""
    api, ns = kube_api.api, kube_api.namespace
    created = await api.create_custom_object(
        GROUP, VERSION, ns, PLURAL, application("web", labels={"tier": "a"})
    )
    assert created["metadata"]["uid"]

    read = await api.get_custom_object(GROUP, VERSION, ns, PLURAL, "web")
    assert read["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]

    await api.create_custom_object(GROUP, VERSION, ns, PLURAL, application("db", labels={"tier": "b"}))
    listing = await api.list_resource(GROUP, VERSION, PLURAL, namespace=ns, label_selector="tier=a")
    assert [item["metadata"]["name"] for item in listing.items] == ["web"]
    assert int(listing.resource_version) >= int(read["metadata"]["resourceVersion"])
    assert (
        len(await api.list_custom_objects(GROUP, VERSION, ns, PLURAL, field_selector="metadata.name=db")) == 1
    )

    read["spec"]["source"]["targetRevision"] = "v2"
    replaced = await api.replace_custom_object(GROUP, VERSION, ns, PLURAL, "web", read)
    assert replaced["spec"]["source"]["targetRevision"] == "v2"

    patched = await api.patch_custom_object(
        GROUP, VERSION, ns, PLURAL, "web", {"metadata": {"labels": {"tier": None}}, "operation": {"sync": {}}}
    )
    assert "tier" not in patched["metadata"]["labels"]
    assert patched["operation"] == {"sync": {}}

    await api.delete_custom_object(GROUP, VERSION, ns, PLURAL, "web")
    with pytest.raises(NotFound, match=r'applications.argoproj.io "web" not found in namespace'):
        await api.get_custom_object(GROUP, VERSION, ns, PLURAL, "web")


async def test_merge_patch_is_sent_as_merge_patch_json(kube_api: KubeHandle) -> None:
    """merge_patch_resource sends Content-Type application/merge-patch+json, even for built-in kinds."""
    server = kube_api.require_server()
    api, ns = kube_api.api, kube_api.namespace
    await api.create_resource(*CONFIGMAPS, config_map("settings", {"a": "1"}), namespace=ns)
    await api.create_custom_object(GROUP, VERSION, ns, PLURAL, application("web"))

    patched_map = await api.merge_patch_resource(
        *CONFIGMAPS, "settings", {"data": {"a": None, "b": "2"}}, namespace=ns
    )
    await api.merge_patch_resource(*ARGO_APPLICATIONS, "web", {"spec": {"project": "x"}}, namespace=ns)

    assert patched_map["data"] == {"b": "2"}
    assert [e.content_type for e in server.exchanges if e.method == "PATCH"] == [
        "application/merge-patch+json"
    ] * 2


async def test_conditional_writes_with_a_stale_resource_version_are_conflicts(kube_api: KubeHandle) -> None:
    """A write with a stale resourceVersion raises Conflict; a duplicate create AlreadyExists."""
    api, ns = kube_api.api, kube_api.namespace
    stale = await api.create_custom_object(GROUP, VERSION, ns, PLURAL, application("web"))
    await api.patch_custom_object(GROUP, VERSION, ns, PLURAL, "web", {"spec": {"project": "moved"}})

    with pytest.raises(Conflict, match="stale resourceVersion") as replaced:
        await api.replace_custom_object(GROUP, VERSION, ns, PLURAL, "web", stale)
    assert not isinstance(replaced.value, AlreadyExists)
    condition = {
        "metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]},
        "spec": {"project": "x"},
    }
    with pytest.raises(Conflict):
        await api.patch_custom_object(GROUP, VERSION, ns, PLURAL, "web", condition)
    with pytest.raises(AlreadyExists, match='"web" already exists'):
        await api.create_custom_object(GROUP, VERSION, ns, PLURAL, application("web"))
    assert (await api.get_custom_object(GROUP, VERSION, ns, PLURAL, "web"))["spec"]["project"] == "moved"


async def test_built_in_kinds_the_features_read(kube_api: KubeHandle) -> None:
    """ConfigMap, Namespace list, Deployment/DaemonSet/StatefulSet/CronJob reads and policy lists work."""
    store, api, ns = kube_api.store, kube_api.api, kube_api.namespace
    store.put(config_map("cilium-config", {"policy-audit-mode": "false"}), namespace=ns)
    for kind, api_version in (
        ("Deployment", "apps/v1"),
        ("DaemonSet", "apps/v1"),
        ("StatefulSet", "apps/v1"),
        ("CronJob", "batch/v1"),
    ):
        store.put(
            {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, "status": {"k": kind}},
            namespace=ns,
        )
    for kind, api_version in (
        ("NetworkPolicy", "networking.k8s.io/v1"),
        ("ResourceQuota", "v1"),
        ("LimitRange", "v1"),
    ):
        store.put({"apiVersion": api_version, "kind": kind, "metadata": {"name": "p"}}, namespace=ns)
    store.put(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "tenant-a", "labels": {"vcluster": "yes"}},
        }
    )

    assert (await api.get_config_map(ns, "cilium-config"))["data"] == {"policy-audit-mode": "false"}
    assert (await api.get_deployment(ns, "x"))["status"] == {"k": "Deployment"}
    assert (await api.get_daemon_set(ns, "x"))["status"] == {"k": "DaemonSet"}
    assert (await api.get_stateful_set(ns, "x"))["status"] == {"k": "StatefulSet"}
    assert (await api.get_cron_job(ns, "x"))["status"] == {"k": "CronJob"}
    for listed in (api.list_network_policies(ns), api.list_resource_quotas(), api.list_limit_ranges(ns)):
        assert [item["metadata"]["name"] for item in await listed] == ["p"]
    assert [n["metadata"]["name"] for n in await api.list_namespaces(label_selector="vcluster")] == [
        "tenant-a"
    ]
    assert (await api.server_version())["gitVersion"].startswith("v1.")


async def test_missing_object_and_missing_namespace_are_not_found(kube_api: KubeHandle) -> None:
    """A missing object, or a create in a missing namespace, raises NotFound naming what is missing."""
    api = kube_api.api
    with pytest.raises(NotFound, match=r'configmaps "nope" not found in namespace'):
        await api.get_config_map(kube_api.namespace, "nope")
    with pytest.raises(NotFound, match="namespace rb-no-such-ns not found"):
        await api.create_custom_object(GROUP, VERSION, "rb-no-such-ns", PLURAL, application("web"))


async def test_missing_crd_is_reported_as_missing_crd(kube_api: KubeHandle) -> None:
    """A resource type the cluster does not serve raises MissingCRD (on get and list), not NotFound."""
    kube_api.require_server().unregister(*VELERO_BACKUPS[::2])
    api = kube_api.api
    with pytest.raises(MissingCRD, match=r"backups.velero.io \(velero.io/v1\) is not served"):
        await api.list_resource(*VELERO_BACKUPS, namespace=kube_api.namespace)
    with pytest.raises(MissingCRD):
        await api.get_resource(*VELERO_BACKUPS, "daily", namespace=kube_api.namespace)
    with pytest.raises(MissingCRD):
        await api.get_resource("nope.example.org", "v1", "things", "x", namespace=kube_api.namespace)


async def test_forbidden_says_which_verb_on_which_resource(kube_api: KubeHandle) -> None:
    """A 403 raises Forbidden whose message names the verb, the resource and the namespace."""
    kube_api.require_server().fail(r"/applications", 403, verb="patch")
    api, ns = kube_api.api, kube_api.namespace
    await api.create_custom_object(GROUP, VERSION, ns, PLURAL, application("web"))
    with pytest.raises(Forbidden) as caught:
        await api.patch_custom_object(GROUP, VERSION, ns, PLURAL, "web", {"spec": {"project": "x"}})
    assert str(caught.value) == f"forbidden: the bot may not patch applications.argoproj.io in namespace {ns}"
    assert caught.value.operation.verb == "patch"


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (500, ClusterUnreachable, "cluster unreachable: API server error 500"),
        (503, ClusterUnreachable, "cluster unreachable: API server error 503"),
        (429, ClusterUnreachable, "cluster unreachable: the API server is overloaded (429)"),
        (401, Unauthorized, "the cluster refused the bot's credentials (401)"),
    ],
)
async def test_server_errors_map_to_typed_errors(
    kube_api: KubeHandle, status: int, error: type[Exception], message: str
) -> None:
    """5xx and 429 are ClusterUnreachable, 401 is Unauthorized, each with a fixed safe message."""
    kube_api.require_server().fail(r"/configmaps", status)
    with pytest.raises(error) as caught:
        await kube_api.api.get_config_map(kube_api.namespace, "x")
    assert str(caught.value) == message


async def test_unreachable_cluster_is_reported_quickly_without_secrets(
    kube_api: KubeHandle, tmp_path: Path
) -> None:
    """With the server gone a call raises ClusterUnreachable at once, naming no token, host or URL."""
    server = kube_api.require_server()
    kubeconfig = server.write_kubeconfig(tmp_path / "with-token", token=TOKEN)
    api = KubeApi.from_settings(
        KubernetesSettings(kubeconfig=kubeconfig, in_cluster=False, request_timeout_s=2)
    )
    try:
        await api.list_namespaces()
        assert server.exchanges[-1].authorization == f"Bearer {TOKEN}"  # the token is in use
        server.stop()
        started = time.monotonic()
        with pytest.raises(ClusterUnreachable) as caught:
            await api.get_config_map(kube_api.namespace, "x")
        assert time.monotonic() - started < 1.0
    finally:
        await api.close()
    text = str(caught.value)
    assert text == "cluster unreachable: connection refused"
    for secret in (TOKEN, "127.0.0.1", str(server.port), "http"):
        assert secret not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_a_slow_server_is_cut_off_at_the_request_timeout(kube_api: KubeHandle) -> None:
    """A server silent past request_timeout_s gives ClusterUnreachable after about that long."""
    server = kube_api.require_server()
    server.delay(r"/configmaps", 5.0)
    api = KubeApi.from_settings(
        KubernetesSettings(kubeconfig=kube_api.kubeconfig_path, in_cluster=False, request_timeout_s=0.5)
    )
    started = time.monotonic()
    try:
        with pytest.raises(ClusterUnreachable, match=r"no answer within 0.5 s"):
            await api.get_config_map(kube_api.namespace, "x")
    finally:
        await api.close()
    assert 0.4 < time.monotonic() - started < 2.0


async def test_calls_do_not_block_the_event_loop(kube_api: KubeHandle) -> None:
    """While a slow request is being served, other tasks on the loop keep running."""
    kube_api.require_server().delay(r"/configmaps/slow", 0.6)
    await kube_api.api.create_resource(*CONFIGMAPS, config_map("slow"), namespace=kube_api.namespace)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await kube_api.api.get_config_map(kube_api.namespace, "slow")
    finally:
        task.cancel()
    # 0.6 s at 10 ms per tick; a blocked loop would give ~0.
    assert ticks >= 20


async def test_concurrent_calls_run_in_parallel(kube_api: KubeHandle) -> None:
    """Several slow calls overlap in KubeApi's threads instead of queueing one after the other."""
    kube_api.require_server().delay(r"/configmaps", 0.5, verb="get")
    api, ns = kube_api.api, kube_api.namespace
    for name in ("a", "b", "c", "d"):
        await api.create_resource(*CONFIGMAPS, config_map(name), namespace=ns)
    started = time.monotonic()
    await asyncio.gather(*(api.get_config_map(ns, name) for name in ("a", "b", "c", "d")))
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("name", ["../secrets", "a/b", "", "..", "x%2F"])
async def test_names_that_would_change_the_url_are_refused_before_sending(
    kube_api: KubeHandle, name: str
) -> None:
    """An object name from chat that is not a DNS name raises Invalid and sends nothing."""
    before = len(kube_api.require_server().exchanges)
    with pytest.raises(Invalid, match="not a valid Kubernetes object name"):
        await kube_api.api.get_resource(*ARGO_APPLICATIONS, name, namespace=kube_api.namespace)
    assert len(kube_api.require_server().exchanges) == before


async def test_a_closed_client_reports_unreachable(kube_api: KubeHandle) -> None:
    """After close(), calls raise ClusterUnreachable instead of hanging or crashing."""
    await kube_api.api.close()
    with pytest.raises(ClusterUnreachable, match="closed"):
        await kube_api.api.list_namespaces()


def test_building_from_settings_leaves_the_global_configuration_alone(kube: KubeTarget) -> None:
    """from_settings builds its own Configuration: the client's global default stays as it was."""
    before: Any = Configuration._default
    api = KubeApi.from_settings(KubernetesSettings(kubeconfig=kube.kubeconfig_path, in_cluster=False))
    assert Configuration._default is before
    asyncio.run(api.close())


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (
            {"kubeconfig": "/nonexistent/kubeconfig", "in_cluster": False},
            "kubernetes: cannot load the kubeconfig",
        ),
        pytest.param(
            {"in_cluster": True},
            "kubernetes: cannot load the in-cluster service account",
            marks=pytest.mark.skipif(running_in_cluster(), reason="the tests run in a pod"),
        ),
        ({"context": "no-such-context", "in_cluster": False}, "kubernetes: cannot load the kubeconfig"),
    ],
)
def test_unusable_connection_settings_are_config_errors(
    kube: KubeTarget, settings: dict[str, Any], problem: str
) -> None:
    """No kubeconfig, no service account or an unknown context raise KubeConfigError, one line each."""
    values: dict[str, Any] = {"kubeconfig": kube.kubeconfig_path, **settings}
    with pytest.raises(KubeConfigError) as caught:
        KubeApi.from_settings(KubernetesSettings(**values))
    (line,) = caught.value.problems
    assert line.startswith(problem)


async def test_namespaces_are_cluster_scoped(kube_api: KubeHandle) -> None:
    """Namespaces are read without a namespace in the path; the test namespace is among them."""
    names = [n["metadata"]["name"] for n in await kube_api.api.list_namespaces()]
    assert kube_api.namespace in names
    read = await kube_api.api.get_resource(*NAMESPACES, kube_api.namespace)
    assert read["metadata"]["name"] == kube_api.namespace
