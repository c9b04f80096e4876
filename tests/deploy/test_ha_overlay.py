"""The ``ha`` overlay (two replicas, one leader): rendered offline and checked against what the bot needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from config.settings import StoreSettings
from tests.deploy.helpers import HA_OVERLAY, KubeObject, only, render, require_module

KUBERNETES_VERSIONS = ("1.27.0", "latest")
CUSTOM_KINDS = {"PrometheusRule", "ServiceMonitor"}


@pytest.fixture(scope="module")
def rendered() -> tuple[KubeObject, ...]:
    return render(HA_OVERLAY)


def _statefulset(rendered: tuple[KubeObject, ...]) -> KubeObject:
    return only(rendered, "StatefulSet", "readybot")


def _container(rendered: tuple[KubeObject, ...]) -> KubeObject:
    (container,) = _statefulset(rendered)["spec"]["template"]["spec"]["containers"]
    result: KubeObject = container
    return result


def _config(rendered: tuple[KubeObject, ...]) -> dict[str, Any]:
    volumes = _statefulset(rendered)["spec"]["template"]["spec"]["volumes"]
    name = next(v["configMap"]["name"] for v in volumes if "configMap" in v)
    config: dict[str, Any] = yaml.safe_load(only(rendered, "ConfigMap", name)["data"]["config.yaml"])
    return config


def test_two_replicas_in_a_statefulset_replace_the_deployment_and_its_volume(
    rendered: tuple[KubeObject, ...],
) -> None:
    """A StatefulSet of 2 with one crypto volume per pod; no Deployment and no shared state PVC left."""
    kinds = {o["kind"] for o in rendered}
    assert "Deployment" not in kinds
    assert "PersistentVolumeClaim" not in kinds
    spec = _statefulset(rendered)["spec"]
    assert spec["replicas"] == 2
    assert spec["podManagementPolicy"] == "Parallel"
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {m["name"]: m["mountPath"] for m in _container(rendered)["volumeMounts"]}
    config = _config(rendered)
    assert Path(config["matrix"]["store_dir"]).is_relative_to(Path(mounts[claim["metadata"]["name"]]))
    headless = only(rendered, "Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"


def test_replicas_never_share_a_node_and_a_drain_leaves_one(rendered: tuple[KubeObject, ...]) -> None:
    """Required pod anti-affinity per host, and a PodDisruptionBudget of minAvailable 1 over the same pods."""
    template = _statefulset(rendered)["spec"]["template"]
    labels = template["metadata"]["labels"]
    (term,) = template["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= labels.items()
    budget = only(rendered, "PodDisruptionBudget", "readybot")["spec"]
    assert budget["minAvailable"] == 1
    assert budget["selector"]["matchLabels"].items() <= labels.items()


def test_the_pod_knows_its_name_and_readiness_is_the_leaders(rendered: tuple[KubeObject, ...]) -> None:
    """POD_NAME and POD_NAMESPACE from the downward API; readiness on /readyz (200 only on the leader)."""
    env = {e["name"]: e for e in _container(rendered)["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert _container(rendered)["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert _config(rendered)["ha"]["enabled"] is True
    assert _config(rendered)["kubernetes"]["enabled"] is True


def test_the_database_url_comes_from_its_secret(rendered: tuple[KubeObject, ...]) -> None:
    """store.url is set from a Secret key (CloudNativePG's app Secret), never written in the manifests."""
    env = {e["name"]: e for e in _container(rendered)["env"]}
    ref = env["READYBOT_STORE__URL"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("readybot-db-app", "uri")
    assert "postgresql://" not in yaml.safe_dump_all(rendered)


def test_the_lease_role_grants_that_one_lease_and_create(rendered: tuple[KubeObject, ...]) -> None:
    """get/update on the configured Lease by name, create (cannot be named), bound to the pods' account."""
    role = only(rendered, "Role", "readybot-leader-election")
    namespace = _statefulset(rendered)["metadata"]["namespace"]
    assert role["metadata"]["namespace"] == namespace
    lease = _config(rendered)["ha"]["lease_name"]
    grants = {(tuple(r["verbs"]), tuple(r.get("resourceNames", ()))) for r in role["rules"]}
    assert grants == {(("get", "update"), (lease,)), (("create",), ())}
    assert all(
        r["apiGroups"] == ["coordination.k8s.io"] and r["resources"] == ["leases"] for r in role["rules"]
    )
    binding = only(rendered, "RoleBinding", "readybot-leader-election")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    account = _statefulset(rendered)["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_ha_objects_pass_strict_kubernetes_validation(rendered: tuple[KubeObject, ...], version: str) -> None:
    """Every built-in object of the overlay passes kubernetes-validate --strict."""
    require_module("kubernetes_validate", "kubernetes-validate")
    import kubernetes_validate

    target = kubernetes_validate.latest_version() if version == "latest" else version
    problems = []
    for obj in rendered:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, target, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message} at {list(error.path)}")
    assert not problems, "\n".join(problems)


def test_ha_configuration_passes_check_config(
    rendered: tuple[KubeObject, ...], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The overlay's config.yaml loads with the Secret's files (and a database URL if store.url exists)."""
    from config.loading import load_settings

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_config(rendered)), encoding="utf-8")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("matrix__password", "http__hook_tokens__alertmanager", "http__hook_tokens__falco"):
        (secrets / name).write_text("value\n", encoding="utf-8")
    monkeypatch.setenv("READYBOT_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("POD_NAME", "readybot-1")
    if "url" in StoreSettings.model_fields:  # the PostgreSQL store (issue 16's other half)
        monkeypatch.setenv("READYBOT_STORE__URL", "postgresql://readybot:pw@readybot-db-rw:5432/readybot")
    settings = load_settings(config)
    assert settings.ha.enabled
    assert settings.ha.identity == "readybot-1"
    assert settings.ha.lease_name == "readybot-leader"
