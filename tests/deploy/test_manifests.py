"""deploy/ renders, validates and says what the issue asks, all offline.

- the example overlay renders with ``kubectl kustomize`` (the kustomize Argo CD runs);
- core kinds pass ``kubernetes-validate --strict`` (bundled Kubernetes schemas);
- PrometheusRule, ServiceMonitor and the Argo CD Application validate against
  their CRD schemas (tests/deploy/schemas, see SOURCES.md);
- every PromQL expression parses (promql-parser) and names only metrics the bot exposes;
- the Deployment, Service, NetworkPolicy, probes and mounts agree with the
  bot's code, configuration and Dockerfile;
- the examples for Alertmanager, falcosidekick and Argo CD point at what the base deploys;
- yamllint is clean on deploy/, hadolint on the Dockerfile.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.http.server import Health, build_http_app
from bot.metrics import Metrics
from tests.deploy.helpers import (
    BASE,
    DEPLOY,
    OVERLAY,
    ROOT,
    SCHEMAS,
    YAMLLINT_CONFIG,
    KubeObject,
    bot_metrics,
    custom_resource_schemas,
    git_blob_id,
    load_yaml_documents,
    only,
    render,
    require_module,
    require_tool,
)

# Oldest Kubernetes the manifests claim (kustomize v5 in kubectl 1.27) and the newest schemas bundled.
KUBERNETES_VERSIONS = ("1.27.0", "latest")
CUSTOM_KINDS = {"PrometheusRule", "ServiceMonitor", "Application"}
# Series Prometheus itself makes, which rules may use besides the bot's.
PROMETHEUS_SERIES = {"up"}
# Labels the ServiceMonitor's scrape adds to every series of the bot.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container"}


@pytest.fixture(scope="module")
def rendered() -> tuple[KubeObject, ...]:
    return render(OVERLAY)


def _deployment(rendered: tuple[KubeObject, ...]) -> KubeObject:
    return only(rendered, "Deployment", "readybot")


def _container(rendered: tuple[KubeObject, ...]) -> KubeObject:
    containers = _deployment(rendered)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: KubeObject = containers[0]
    return container


def _config(rendered: tuple[KubeObject, ...]) -> dict[str, Any]:
    """The configuration file the pod reads (from the ConfigMap the Deployment mounts)."""
    config_map = _config_map(rendered)
    config: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return config


def _config_map(rendered: tuple[KubeObject, ...]) -> KubeObject:
    volumes = _deployment(rendered)["spec"]["template"]["spec"]["volumes"]
    name = next(v["configMap"]["name"] for v in volumes if "configMap" in v)
    return only(rendered, "ConfigMap", name)


def _mounts(rendered: tuple[KubeObject, ...]) -> dict[str, tuple[KubeObject, KubeObject]]:
    """mountPath -> (volumeMount, volume)."""
    volumes = {v["name"]: v for v in _deployment(rendered)["spec"]["template"]["spec"]["volumes"]}
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in _container(rendered)["volumeMounts"]}


# --- render and validate -------------------------------------------------------------


def test_overlay_renders_every_part_the_issue_lists(rendered: tuple[KubeObject, ...]) -> None:
    """The example overlay renders, with each required kind present in the bot's namespace or cluster-wide."""
    kinds = {o["kind"] for o in rendered}
    assert {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "PersistentVolumeClaim",
        "ConfigMap",
        "Service",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
    } <= kinds
    namespace = only(rendered, "Namespace")["metadata"]["name"]
    for obj in rendered:
        if obj["kind"] in {"Namespace", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}:
            continue
        assert obj["metadata"].get("namespace") == namespace, obj["metadata"]["name"]


def test_base_renders_on_its_own() -> None:
    """The base renders without an overlay (what another overlay would start from)."""
    assert any(o["kind"] == "Deployment" for o in render(BASE))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_kinds_pass_strict_kubernetes_validation(rendered: tuple[KubeObject, ...], version: str) -> None:
    """Every built-in object passes kubernetes-validate --strict (unknown fields are errors)."""
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


def _custom_objects(rendered: tuple[KubeObject, ...]) -> list[KubeObject]:
    application = load_yaml_documents(DEPLOY / "argocd" / "application.yaml")
    return [o for o in rendered if o["kind"] in CUSTOM_KINDS] + application


def test_custom_resources_validate_against_their_crd_schemas(rendered: tuple[KubeObject, ...]) -> None:
    """PrometheusRule, ServiceMonitor and the Argo CD Application match their CRD schemas (strict)."""
    require_module("jsonschema", "jsonschema")
    import jsonschema

    schemas = custom_resource_schemas()
    objects = _custom_objects(rendered)
    assert {o["kind"] for o in objects} == CUSTOM_KINDS
    problems = []
    for obj in objects:
        schema = schemas[(obj["apiVersion"], obj["kind"])]
        validator = jsonschema.Draft7Validator(schema)
        problems += [
            f"{obj['kind']}/{obj['metadata']['name']}: {e.message} at {list(e.absolute_path)}"
            for e in validator.iter_errors(obj)
        ]
    assert not problems, "\n".join(problems)


def test_schema_validation_refuses_a_misspelt_field(rendered: tuple[KubeObject, ...]) -> None:
    """The CRD schemas used above do reject an unknown field in each custom resource (the check can fail)."""
    require_module("jsonschema", "jsonschema")
    import jsonschema

    schemas = custom_resource_schemas()
    for obj in _custom_objects(rendered):
        broken = yaml.safe_load(yaml.safe_dump(obj))
        broken["spec"]["destinaton" if obj["kind"] == "Application" else "endpionts"] = []
        errors = list(
            jsonschema.Draft7Validator(schemas[(obj["apiVersion"], obj["kind"])]).iter_errors(broken)
        )
        assert errors, obj["kind"]


def test_vendored_argo_cd_crd_is_the_upstream_blob() -> None:
    """schemas/argocd-application-crd.yaml is byte for byte the upstream file SOURCES.md names."""
    assert git_blob_id(SCHEMAS / "argocd-application-crd.yaml") == "a65a6b9e26d9e38722373629efbc7fc2b9d59893"


# --- the bot's own alerts ------------------------------------------------------------


def _rules(rendered: tuple[KubeObject, ...]) -> list[KubeObject]:
    rule = only(rendered, "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def _selectors(expr: str) -> list[Any]:
    import promql_parser

    found: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def test_every_alert_expression_parses_as_promql(rendered: tuple[KubeObject, ...]) -> None:
    """Each rule's expr is valid PromQL (promql-parser), and a broken one would be caught."""
    require_module("promql_parser", "promql-parser")
    import promql_parser

    for rule in _rules(rendered):
        promql_parser.parse(str(rule["expr"]))
    with pytest.raises(ValueError, match="parenthesis"):
        promql_parser.parse("rate(readybot_sync_errors_total[5m]")


def test_alerts_use_only_metrics_and_labels_the_bot_exposes(rendered: tuple[KubeObject, ...]) -> None:
    """Every series an alert reads is defined in bot/ (or is `up`), with its own labels or the scrape's."""
    require_module("promql_parser", "promql-parser")
    metrics = bot_metrics()
    problems = []
    for rule in _rules(rendered):
        for selector in _selectors(str(rule["expr"])):
            name = selector.name
            if name in PROMETHEUS_SERIES:
                continue
            if name not in metrics:
                problems.append(f"{rule['alert']}: {name} is not a metric of the bot")
                continue
            for matcher in selector.matchers.matchers:
                if matcher.name not in set(metrics[name]) | TARGET_LABELS:
                    problems.append(f"{rule['alert']}: {name} has no label {matcher.name}")
    assert not problems, "\n".join(problems)
    assert (
        "readybot_deadman_source_up" in metrics
    )  # the scan finds features' metrics, not only bot/metrics.py


def test_alerts_cover_what_the_issue_asks(rendered: tuple[KubeObject, ...]) -> None:
    """Alerts for: down, outbox growing / old, homeserver unreachable, dead-man's switch, sync failures."""
    require_module("promql_parser", "promql-parser")
    read = {rule["alert"]: {s.name for s in _selectors(str(rule["expr"]))} for rule in _rules(rendered)}

    def alerts_on(metric: str) -> set[str]:
        return {alert for alert, names in read.items() if metric in names}

    assert alerts_on("up"), "down"
    assert alerts_on("readybot_outbox_depth"), "outbox backlog growing"
    assert alerts_on("readybot_outbox_oldest_age_seconds"), "outbox message old"
    assert alerts_on("readybot_ready"), "homeserver unreachable at start"
    assert len(alerts_on("readybot_sync_errors_total")) >= 2, "homeserver unreachable and sync failures"
    assert alerts_on("readybot_deadman_source_up"), "dead-man's switch"
    for rule in _rules(rendered):
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]


def test_alert_job_label_is_the_service_the_servicemonitor_scrapes(rendered: tuple[KubeObject, ...]) -> None:
    """The alerts' job="…" is the Service's name, which the ServiceMonitor (no jobLabel) makes the job."""
    require_module("promql_parser", "promql-parser")
    service = only(rendered, "Service", "readybot")
    monitor = only(rendered, "ServiceMonitor")
    assert "jobLabel" not in monitor["spec"]
    jobs = {
        m.value
        for rule in _rules(rendered)
        for s in _selectors(str(rule["expr"]))
        for m in s.matchers.matchers
        if m.name == "job"
    }
    assert jobs == {service["metadata"]["name"]}


# --- the Deployment against the code -------------------------------------------------


def test_deployment_is_one_replica_recreated_with_the_sigterm_grace(rendered: tuple[KubeObject, ...]) -> None:
    """replicas 1, strategy Recreate (SQLite state), 30 s grace for the bot's SIGTERM shutdown."""
    spec = _deployment(rendered)["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] == 30


def test_pod_runs_as_the_dockerfile_user_locked_down(rendered: tuple[KubeObject, ...]) -> None:
    """Non-root as the Dockerfile's USER, seccomp RuntimeDefault, read-only root, no escalation or caps."""
    user = re.search(r"^USER\s+(\d+):(\d+)\s*$", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.M)
    assert user is not None
    pod = _deployment(rendered)["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert (str(pod["runAsUser"]), str(pod["runAsGroup"])) == user.groups()
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    container = _container(rendered)["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in container["capabilities"]


def test_container_has_requests_and_limits(rendered: tuple[KubeObject, ...]) -> None:
    """CPU and memory are both requested and limited."""
    resources = _container(rendered)["resources"]
    for part in ("requests", "limits"):
        assert set(resources[part]) == {"cpu", "memory"}, part


def test_probes_use_the_bots_health_endpoints_on_its_port(rendered: tuple[KubeObject, ...]) -> None:
    """Liveness on /healthz and readiness on /readyz, on the container port the bot listens on (http.port)."""
    container = _container(rendered)
    port = next(p for p in container["ports"] if p["name"] == "http")
    assert port["containerPort"] == _config(rendered)["http"]["port"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    app = build_http_app(metrics=Metrics(), health=Health(), hook_tokens={}, hooks={}, max_body_bytes=1024)
    routes = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert {"/healthz", "/readyz", "/metrics"} <= routes


def test_service_links_are_off_because_the_bot_refuses_unknown_readybot_variables(
    rendered: tuple[KubeObject, ...], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """enableServiceLinks is false: the READYBOT_PORT Kubernetes would inject stops the bot from starting."""
    assert _deployment(rendered)["spec"]["template"]["spec"]["enableServiceLinks"] is False
    from bot.errors import ConfigError
    from config.loading import load_settings

    config = tmp_path / "config.yaml"
    config.write_text(_config_map(rendered)["data"]["config.yaml"], encoding="utf-8")
    monkeypatch.setenv("READYBOT_MATRIX__PASSWORD", "x")
    monkeypatch.delenv("READYBOT_SECRETS_DIR", raising=False)
    load_settings(config)  # fine without the injected variables
    service = only(rendered, "Service", "readybot")["metadata"]["name"].upper()
    monkeypatch.setenv(f"{service}_PORT", "tcp://10.0.0.1:8080")
    with pytest.raises(ConfigError, match="unknown key"):
        load_settings(config)


def test_config_secrets_state_and_tmp_are_mounted_where_the_bot_looks(
    rendered: tuple[KubeObject, ...],
) -> None:
    """Config where `run` reads it, Secret files at READYBOT_SECRETS_DIR, state on the PVC, /tmp emptyDir."""
    container = _container(rendered)
    mounts = _mounts(rendered)
    config_mount, config_volume = mounts["/etc/readybot/config.yaml"]
    assert config_mount["subPath"] == "config.yaml"
    assert "configMap" in config_volume
    assert container["args"] == ["run", "--config", "/etc/readybot/config.yaml"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    secrets_mount, secrets_volume = mounts[env["READYBOT_SECRETS_DIR"]]
    assert secrets_mount["readOnly"] is True
    assert secrets_volume["secret"]["secretName"]
    state_mount, state_volume = mounts["/var/lib/readybot/state"]
    claim = state_volume["persistentVolumeClaim"]["claimName"]
    assert only(rendered, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "emptyDir" in mounts["/tmp"][1]  # noqa: S108 - the mount path in the pod
    assert not state_mount.get("readOnly")


def test_everything_the_bot_writes_is_on_the_state_volume(rendered: tuple[KubeObject, ...]) -> None:
    """store.path and matrix.store_dir lie under the PVC mount: the only writable place besides /tmp."""
    config = _config(rendered)
    state = Path("/var/lib/readybot/state")
    assert Path(config["store"]["path"]).parent == state
    assert Path(config["matrix"]["store_dir"]).is_relative_to(state)
    assert config["http"]["host"] == "0.0.0.0"


@pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "overlay"])
def test_rendered_configuration_passes_check_config(
    directory: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The ConfigMap's config.yaml, with secrets as files like the Secret's, passes the bot's loader."""
    from config.loading import load_settings

    objects = render(directory)
    config_map = next(o for o in objects if o["kind"] == "ConfigMap")
    config = tmp_path / "config.yaml"
    config.write_text(config_map["data"]["config.yaml"], encoding="utf-8")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("matrix__password", "http__hook_tokens__alertmanager", "http__hook_tokens__falco"):
        (secrets / name).write_text("value\n", encoding="utf-8")
    monkeypatch.setenv("READYBOT_SECRETS_DIR", str(secrets))
    settings = load_settings(config)
    assert settings.http.port == 8080


# --- the network ---------------------------------------------------------------------


def test_service_and_servicemonitor_reach_the_pod_port(rendered: tuple[KubeObject, ...]) -> None:
    """The Service selects the pod's http port; the ServiceMonitor selects it and scrapes /metrics."""
    pod_labels = _deployment(rendered)["spec"]["template"]["metadata"]["labels"]
    service = only(rendered, "Service", "readybot")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (8080, "http")
    monitor = only(rendered, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == (port["name"], "/metrics")


def _peer(rule_peer: KubeObject) -> tuple[str, str]:
    namespace = rule_peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    return namespace, rule_peer["podSelector"]["matchLabels"].get("app.kubernetes.io/name") or str(
        rule_peer["podSelector"]["matchLabels"]
    )


def test_network_policy_lets_in_only_alertmanager_falcosidekick_and_prometheus(
    rendered: tuple[KubeObject, ...],
) -> None:
    """Ingress: exactly those three (each by namespace and pod labels together), to the http port only."""
    policy = only(rendered, "NetworkPolicy")["spec"]
    pod_labels = _deployment(rendered)["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = policy["ingress"]
    assert {_peer(p)[1] for p in ingress["from"]} == {"alertmanager", "falcosidekick", "prometheus"}
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_network_policy_lets_out_only_dns_the_homeserver_the_api_alertmanager_and_prometheus(
    rendered: tuple[KubeObject, ...],
) -> None:
    """Egress: DNS (53 UDP+TCP, kube-dns), Alertmanager 9093, Prometheus 9090, API 6443, HTTPS 443."""
    egress = only(rendered, "NetworkPolicy")["spec"]["egress"]
    allowed = set()
    for rule in egress:
        for peer in rule["to"]:
            target = peer["ipBlock"]["cidr"] if "ipBlock" in peer else _peer(peer)[1]
            allowed |= {(target, p["port"], p["protocol"]) for p in rule["ports"]}
    assert allowed == {
        ("{'k8s-app': 'kube-dns'}", 53, "UDP"),
        ("{'k8s-app': 'kube-dns'}", 53, "TCP"),
        ("alertmanager", 9093, "TCP"),
        ("prometheus", 9090, "TCP"),
        ("0.0.0.0/0", 6443, "TCP"),
        ("0.0.0.0/0", 443, "TCP"),
    }
    config = _config(rendered)
    assert ":9093" in config["alertmanager"]["api_url"]
    assert ":9090" in config["readiness"]["prometheus_url"]


# --- the examples point at what the base deploys --------------------------------------


def _service_url(rendered: tuple[KubeObject, ...]) -> str:
    service = only(rendered, "Service", "readybot")
    port = service["spec"]["ports"][0]["port"]
    return f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{port}"


def test_alertmanager_example_posts_to_the_bots_hook(rendered: tuple[KubeObject, ...]) -> None:
    """The Alertmanager example posts to <the Service>/hooks/<the relay's hook> with a bearer token."""
    from bot.alertmanager.feature import HOOK_NAME

    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yaml").read_text(encoding="utf-8"))
    webhooks = [w for r in config["receivers"] for w in r.get("webhook_configs", [])]
    assert webhooks
    for webhook in webhooks:
        assert webhook["url"] == f"{_service_url(rendered)}/hooks/{HOOK_NAME}"
        assert webhook["http_config"]["authorization"]["type"] == "Bearer"


def test_falcosidekick_values_post_to_the_bots_hook_with_the_bearer_header(
    rendered: tuple[KubeObject, ...],
) -> None:
    """falcosidekick values post to <the Service>/hooks/falco, the Authorization header from a Secret."""
    from bot.falco.feature import HOOK_NAME

    values = yaml.safe_load((DEPLOY / "falcosidekick" / "values.yaml").read_text(encoding="utf-8"))
    webhook = values["config"]["webhook"]
    assert webhook["address"] == f"{_service_url(rendered)}/hooks/{HOOK_NAME}"
    assert webhook["method"] == "POST"
    (env,) = values["config"]["extraEnv"]
    assert env["name"] == "WEBHOOK_CUSTOMHEADERS"
    assert "secretKeyRef" in env["valueFrom"]
    text = (DEPLOY / "falcosidekick" / "values.yaml").read_text(encoding="utf-8")
    assert "Authorization:Bearer $TOKEN" in text


def test_argo_cd_application_deploys_the_example_overlay(rendered: tuple[KubeObject, ...]) -> None:
    """The Application's path is the overlay, its destination namespace the overlay's, automated sync on."""
    (app,) = load_yaml_documents(DEPLOY / "argocd" / "application.yaml")
    assert (ROOT / app["spec"]["source"]["path"]).resolve() == OVERLAY.resolve()
    assert app["spec"]["destination"]["namespace"] == only(rendered, "Namespace")["metadata"]["name"]
    assert app["spec"]["syncPolicy"]["automated"]["selfHeal"] is True


def test_state_volume_is_never_pruned_or_deleted_by_argo_cd(rendered: tuple[KubeObject, ...]) -> None:
    """The PVC carries Prune=false,Delete=false: a sync or deleting the Application keeps the bot's state."""
    claim = only(rendered, "PersistentVolumeClaim")
    options = claim["metadata"]["annotations"]["argocd.argoproj.io/sync-options"].split(",")
    assert {"Prune=false", "Delete=false"} <= {o.strip() for o in options}


# --- linters -------------------------------------------------------------------------


def test_yamllint_is_clean_on_deploy() -> None:
    """yamllint (tests/deploy/yamllint.yaml) finds nothing in deploy/."""
    require_module("yamllint", "yamllint")
    from yamllint import config as yamllint_config
    from yamllint import linter

    conf = yamllint_config.YamlLintConfig(file=str(YAMLLINT_CONFIG))
    problems = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        problems += [f"{path.relative_to(ROOT)}:{p.line}: {p}" for p in linter.run(path.read_text(), conf)]
    assert not problems, "\n".join(problems)


def test_hadolint_is_clean_on_the_dockerfile() -> None:
    """hadolint reports nothing on the Dockerfile."""
    hadolint = require_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
