"""Each probe kind against the test Kubernetes API server, and readybot's own state.

Prometheus and Alertmanager probes meet the real servers in
tests/integration/test_readiness.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from bot.deadman.switch import DeadmansSwitch
from bot.outbox import Outbox
from bot.readiness.engine import CriterionResult, score
from bot.readiness.probes import ProbeEnv, run_plan, run_probe
from bot.readiness.results import Cause, Mark, ProbeResult
from bot.render.templates import Templates
from bot.schema import MIGRATIONS
from bot.store.database import Database
from config.deadman import DeadmanSettings
from config.readiness_plan import Plan, Probe
from tests.kube.handle import KubeHandle
from tests.stores import StoreBackend
from tests.unit.readiness_env import (
    DAY_S,
    application,
    daemon_set,
    deployment,
    enforce,
    fixture,
    seed_everything_done,
    seed_starting_point,
    shipped_plan,
    stamp,
)

PROBE: TypeAdapter[Probe] = TypeAdapter(Probe)


async def probe(kube: KubeHandle | None, spec: dict[str, Any], **env: Any) -> ProbeResult:
    environment = ProbeEnv(kube=kube.api if kube else None, clock=time.time, **env)
    try:
        return await run_probe(PROBE.validate_python(spec), environment)
    finally:
        await environment.cache.close()


# --- workloads ----------------------------------------------------------------------


async def test_a_deployment_passes_only_with_all_replicas_ready(kube_api: KubeHandle) -> None:
    """1/2 ready fails with the counts; 2/2 passes; 0 replicas fails."""
    spec = {"kind": "workload", "workload": "Deployment", "namespace": "velero", "name": "velero"}
    kube_api.store.put(deployment("velero", "velero", replicas=2, ready=1))
    result = await probe(kube_api, spec)
    assert result.mark is Mark.FAIL and "1/2 replicas ready" in result.found
    kube_api.store.put(deployment("velero", "velero", replicas=2, ready=2))
    assert (await probe(kube_api, spec)).mark is Mark.PASS
    kube_api.store.put(deployment("velero", "velero", replicas=0, ready=0))
    assert "scaled to 0" in (await probe(kube_api, spec)).found


async def test_a_daemon_set_must_be_ready_on_every_node(kube_api: KubeHandle) -> None:
    """Falco on 2 of 3 nodes fails; on 3 of 3 passes."""
    spec = {"kind": "workload", "workload": "DaemonSet", "namespace": "falco", "name": "falco"}
    kube_api.store.put(daemon_set("falco", "falco", nodes=3, ready=2))
    result = await probe(kube_api, spec)
    assert result.mark is Mark.FAIL and "ready on 2/3 nodes" in result.found
    kube_api.store.put(daemon_set("falco", "falco", nodes=3))
    assert (await probe(kube_api, spec)).mark is Mark.PASS


async def test_workload_kinds_are_tried_in_turn_and_none_found_is_a_fail(kube_api: KubeHandle) -> None:
    """Tempo as a Deployment passes a StatefulSet-or-Deployment probe; neither found fails (not unknown)."""
    spec = {
        "kind": "workload",
        "workload": ["StatefulSet", "Deployment"],
        "namespace": "tempo",
        "name": "tempo",
    }
    missing = await probe(kube_api, spec)
    assert (
        missing.mark is Mark.FAIL and missing.found == "no StatefulSet or Deployment tempo in namespace tempo"
    )
    kube_api.store.put(deployment("tempo", "tempo"))
    found = await probe(kube_api, spec)
    assert found.mark is Mark.PASS and found.found.startswith("Deployment tempo/tempo")


# --- objects and fields -----------------------------------------------------------------


async def test_exists_passes_for_an_object_and_fails_without_it(kube_api: KubeHandle) -> None:
    """An existing ConfigMap passes; a missing one fails naming it."""
    spec = {
        "kind": "exists",
        "resource": "configmaps/v1",
        "namespace": "kube-system",
        "name": "cilium-config",
    }
    assert (await probe(kube_api, spec)).found == "configmaps kube-system/cilium-config not found"
    kube_api.store.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cilium-config", "namespace": "kube-system"},
        }
    )
    assert (await probe(kube_api, spec)).mark is Mark.PASS


async def test_a_field_probe_shows_the_value_it_found(kube_api: KubeHandle) -> None:
    """Cilium in audit mode fails with the key's value; in enforce mode it passes."""
    spec = shipped_plan().criteria()[0][2].probe.model_dump(by_alias=True, exclude_unset=True)
    cilium = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cilium-config", "namespace": "kube-system"},
    }
    kube_api.store.put({**cilium, "data": {"policy-audit-mode": "true"}})
    audit = await probe(kube_api, spec)
    assert audit.mark is Mark.FAIL
    assert audit.found == 'cilium-config: data.policy-audit-mode = "true"'
    assert audit.expected == 'configmaps kube-system/cilium-config: data.policy-audit-mode ≠ "true"'
    kube_api.store.put({**cilium, "data": {"policy-audit-mode": "false"}})
    assert (await probe(kube_api, spec)).mark is Mark.PASS


async def test_argo_cd_automated_sync_counts_as_on_even_when_empty(kube_api: KubeHandle) -> None:
    """`automated: {}` is auto-sync in Argo CD: the manual-sync criterion fails for it."""
    spec = {
        "kind": "field",
        "resource": "applications.argoproj.io/v1alpha1",
        "namespace": "argocd",
        "name": "cilium",
        "where": [
            {
                "any": [
                    {"path": "spec.syncPolicy.automated", "exists": False},
                    {"path": "spec.syncPolicy.automated.enabled", "equals": False},
                ]
            }
        ],
    }
    app = application("cilium", automated=False)
    app["spec"]["syncPolicy"] = {"automated": {}}
    kube_api.store.put(app)
    assert (await probe(kube_api, spec)).mark is Mark.FAIL
    kube_api.store.put(application("cilium", automated=False))
    assert (await probe(kube_api, spec)).mark is Mark.PASS


# --- counts and coverage -------------------------------------------------------------------


def _kyverno_probe() -> dict[str, Any]:
    criterion = next(c for _, _, c in shipped_plan().criteria() if c.id == "1.3.1")
    return criterion.probe.model_dump(by_alias=True, exclude_unset=True)


async def test_all_three_forms_of_enforce_are_counted_and_audit_is_not(kube_api: KubeHandle) -> None:
    """Policy-wide Enforce, per-rule failureAction Enforce and ValidatingPolicy Deny count; Audit does not."""
    for name in (
        "require-labels",
        "disallow-privileged-containers",
        "disallow-ingress-nginx-custom-snippets",
    ):
        kube_api.store.put(fixture(f"kyverno/{name}.yaml"))
    kube_api.store.put(fixture("kyverno/vpol/require-labels.yaml"))
    upstream = await probe(kube_api, _kyverno_probe())
    assert upstream.mark is Mark.FAIL
    assert upstream.found == "1 found: disallow-ingress-nginx-custom-snippets"
    kube_api.store.put(enforce(fixture("kyverno/require-labels.yaml"), per_rule=True))
    vpol = fixture("kyverno/vpol/require-labels.yaml")
    vpol["spec"]["validationActions"] = ["Deny"]
    kube_api.store.put(vpol)
    counted = await probe(kube_api, _kyverno_probe())
    assert counted.mark is Mark.PASS
    assert counted.found == "3 found: disallow-ingress-nginx-custom-snippets, require-labels, require-labels"


async def test_a_missing_crd_among_sources_is_unknown_only_if_the_count_falls_short(
    kube_api: KubeHandle,
) -> None:
    """Without the ValidatingPolicy CRD 3 ClusterPolicies still pass; 1 is unknown (the rest might add up)."""
    server = kube_api.require_server()
    server.unregister("policies.kyverno.io", "validatingpolicies")
    kube_api.store.put(enforce(fixture("kyverno/require-labels.yaml")))
    short = await probe(kube_api, _kyverno_probe())
    assert short.mark is Mark.UNKNOWN
    assert "validatingpolicies.policies.kyverno.io (policies.kyverno.io/v1) is not served" in short.found
    kube_api.store.put(enforce(fixture("kyverno/disallow-privileged-containers.yaml")))
    kube_api.store.put(enforce(fixture("kyverno/disallow-ingress-nginx-custom-snippets.yaml")))
    assert (await probe(kube_api, _kyverno_probe())).mark is Mark.PASS


async def test_every_names_the_counted_objects_that_miss_a_condition(kube_api: KubeHandle) -> None:
    """An Enforce policy without the system-namespace exclusions is named (1.3.2)."""
    criterion = next(c for _, _, c in shipped_plan().criteria() if c.id == "1.3.2")
    spec = criterion.probe.model_dump(by_alias=True, exclude_unset=True)
    kube_api.store.put(enforce(fixture("kyverno/require-labels.yaml")))
    kube_api.store.put(fixture("kyverno/disallow-ingress-nginx-custom-snippets.yaml"))
    result = await probe(kube_api, spec)
    assert result.mark is Mark.FAIL
    assert result.found.endswith("argocd: disallow-ingress-nginx-custom-snippets")


async def test_coverage_names_the_namespaces_missing_their_object(kube_api: KubeHandle) -> None:
    """Two of three labelled namespaces without a ResourceQuota are named; all covered passes."""
    spec = {
        "kind": "coverage",
        "resource": "resourcequotas/v1",
        "namespaces": {"label_selector": "tier=tenant"},
    }
    for name in ("demo", "test", "media"):
        kube_api.store.put(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {"tier": "tenant"}},
            }
        )
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q", "namespace": "demo"}}
    kube_api.store.put(quota)
    result = await probe(kube_api, spec)
    assert result.mark is Mark.FAIL and result.found == "1/3 namespaces covered; missing in: media, test"
    for name in ("test", "media"):
        kube_api.store.put({**quota, "metadata": {"name": "q", "namespace": name}})
    assert (await probe(kube_api, spec)).found == "3/3 namespaces covered"


async def test_coverage_with_no_namespace_selected_is_unknown_and_a_named_absent_one_fails(
    kube_api: KubeHandle,
) -> None:
    """A selector matching nothing cannot judge (unknown); a namespace named but absent is a fail."""
    nothing = await probe(
        kube_api,
        {"kind": "coverage", "resource": "limitranges/v1", "namespaces": {"label_selector": "no=such"}},
    )
    assert nothing.mark is Mark.UNKNOWN and "no namespace matches" in nothing.found
    named = await probe(
        kube_api, {"kind": "coverage", "resource": "limitranges/v1", "namespaces": {"names": ["ghost"]}}
    )
    assert named.mark is Mark.FAIL and "namespaces not found: ghost" in named.found


# --- schedules --------------------------------------------------------------------------------


def _cron_job(
    schedule: str, *, last_success: float | None, created: float, suspend: bool = False
) -> dict[str, Any]:
    status = {} if last_success is None else {"lastSuccessfulTime": stamp(last_success)}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": "etcd-snapshot",
            "namespace": "kube-system",
            "creationTimestamp": stamp(created),
        },
        "spec": {"schedule": schedule, "suspend": suspend, "jobTemplate": {}},
        "status": status,
    }


ETCD = {
    "kind": "cronjob",
    "namespace": "kube-system",
    "name": "etcd-snapshot",
    "max_interval": "6h",
    "grace": "1h",
}


async def test_a_cron_job_that_succeeded_since_its_last_run_passes(kube_api: KubeHandle) -> None:
    """Every 6 hours with a success a minute ago passes."""
    now = time.time()
    kube_api.store.put(_cron_job("0 */6 * * *", last_success=now - 60, created=now - 30 * DAY_S))
    result = await probe(kube_api, ETCD)
    assert result.mark is Mark.PASS and "last success" in result.found


async def test_a_cron_job_whose_last_success_predates_a_due_run_fails(kube_api: KubeHandle) -> None:
    """A success two days old with runs every 6 hours fails, saying when a run was due."""
    now = time.time()
    kube_api.store.put(_cron_job("0 */6 * * *", last_success=now - 2 * DAY_S, created=now - 30 * DAY_S))
    result = await probe(kube_api, ETCD)
    assert result.mark is Mark.FAIL and "but a run was due" in result.found


async def test_a_daily_schedule_is_too_sparse_for_six_hours_and_suspended_fails(kube_api: KubeHandle) -> None:
    """A daily etcd snapshot misses "every 6 hours"; a suspended CronJob fails whatever its history."""
    now = time.time()
    kube_api.store.put(_cron_job("0 2 * * *", last_success=now - 60, created=now - 30 * DAY_S))
    assert "runs only every 1d" in (await probe(kube_api, ETCD)).found
    kube_api.store.put(
        _cron_job("0 */6 * * *", last_success=now - 60, created=now - 30 * DAY_S, suspend=True)
    )
    assert (await probe(kube_api, ETCD)).found == "CronJob kube-system/etcd-snapshot is suspended"


async def test_a_cron_job_created_after_its_last_due_run_cannot_be_judged(kube_api: KubeHandle) -> None:
    """Created a minute ago, with no run due since: unknown, not a fail."""
    now = time.time()
    kube_api.store.put(_cron_job("0 0 1 1 *", last_success=None, created=now - 60))
    result = await probe(kube_api, {**ETCD, "max_interval": None})
    assert result.mark is Mark.UNKNOWN and "no run was due yet" in result.found


def _velero_spec() -> dict[str, Any]:
    criterion = next(c for _, _, c in shipped_plan().criteria() if c.id == "2.1.2")
    return criterion.probe.model_dump(by_alias=True, exclude_unset=True)


async def test_velero_schedules_pass_with_recent_completed_backups(kube_api: KubeHandle) -> None:
    """The plan's daily and weekly schedules, each with a backup since its last run that Completed, pass."""
    seed_everything_done(kube_api.store)
    result = await probe(kube_api, _velero_spec())
    assert result.mark is Mark.PASS
    assert "daily-cluster (Schedule velero-daily-cluster)" in result.found
    assert "newest backup velero-weekly-full-latest Completed" in result.found


async def test_velero_paused_stale_or_partially_failed_schedules_fail(kube_api: KubeHandle) -> None:
    """A paused daily schedule, a stale weekly one and a PartiallyFailed newest backup each fail, named."""
    seed_everything_done(kube_api.store)
    store = kube_api.store
    daily = store.find("velero.io", "schedules", "velero-daily-cluster", "velero")
    assert daily is not None
    store.put({**daily, "spec": {**daily["spec"], "paused": True}})
    result = await probe(kube_api, _velero_spec())
    assert result.mark is Mark.FAIL and "Schedule velero-daily-cluster is paused" in result.found
    store.put({**daily, "spec": {**daily["spec"], "paused": False}})
    weekly = store.find("velero.io", "schedules", "velero-weekly-full", "velero")
    assert weekly is not None
    store.put({**weekly, "status": {"lastBackup": stamp(time.time() - 9 * DAY_S)}})
    assert "but a run was due" in (await probe(kube_api, _velero_spec())).found
    store.put({**weekly, "status": {"lastBackup": stamp(time.time())}})
    backup = store.find("velero.io", "backups", "velero-daily-cluster-latest", "velero")
    assert backup is not None
    store.put({**backup, "status": {"phase": "PartiallyFailed"}})
    assert (
        "newest backup velero-daily-cluster-latest PartiallyFailed"
        in (await probe(kube_api, _velero_spec())).found
    )


# --- what "unknown" means ------------------------------------------------------------------------


async def test_a_missing_crd_is_unknown_not_fail(kube_api: KubeHandle) -> None:
    """Without the Velero Schedule CRD the schedules criterion is unknown, naming the missing type."""
    kube_api.require_server().unregister("velero.io", "schedules")
    result = await probe(kube_api, _velero_spec())
    assert result.mark is Mark.UNKNOWN
    assert (
        result.found
        == "schedules.velero.io (velero.io/v1) is not served by the cluster: is its CRD installed?"
    )


async def test_forbidden_is_unknown_and_names_the_verb(kube_api: KubeHandle) -> None:
    """RBAC refusing the list of CronJobs makes the criterion unknown with the forbidden message."""
    kube_api.require_server().fail(r"/cronjobs", 403)
    result = await probe(kube_api, ETCD)
    assert result.mark is Mark.UNKNOWN
    assert result.found == "forbidden: the bot may not get cronjobs.batch in namespace kube-system"


async def test_an_unreachable_cluster_makes_every_cluster_criterion_unknown_at_once(
    kube_api: KubeHandle,
) -> None:
    """With the API down, a run takes no longer than one refused request and says "cluster unreachable"."""
    plan = shipped_plan()
    environment = ProbeEnv(kube=kube_api.api, clock=time.time)
    with kube_api.require_server().unreachable():
        began = time.monotonic()
        outcomes = await run_plan(plan, environment, timeout_s=5)
        elapsed = time.monotonic() - began
    cluster = [o for o in outcomes if "cluster unreachable: connection refused" in o.result.found]
    # 2.1.3 reads readybot's own restore drills, not the cluster.
    assert len(cluster) == 17
    assert all(o.result.mark is Mark.UNKNOWN for o in outcomes if o.result.mark is not Mark.MANUAL)
    results = [
        CriterionResult(o.criterion_id, o.result.mark, o.result.found, "", o.result.causes) for o in outcomes
    ]
    card = score(plan, results, 0)
    assert card.notices[0] == "cluster unreachable: connection refused (17 criteria unknown)"
    assert card.overall.passed == 0 and card.overall.failed == 0
    assert elapsed < 2


async def test_a_slow_answer_is_unknown_after_the_probe_timeout(kube_api: KubeHandle) -> None:
    """A criterion whose request hangs past probe_timeout_s is unknown ("no answer within"); others finish."""
    seed_starting_point(kube_api.store)
    kube_api.require_server().delay(r"/configmaps/cilium-config", 3)
    plan = Plan.model_validate(
        {
            "categories": [{"id": "s", "name": "S"}],
            "phases": [
                {
                    "id": "1",
                    "title": "P",
                    "steps": [
                        {
                            "id": "1.1",
                            "title": "S",
                            "category": "s",
                            "criteria": [
                                {"id": "1.1.1", "text": "slow", "probe": _cilium_spec()},
                                {
                                    "id": "1.1.2",
                                    "text": "fast",
                                    "probe": {
                                        "kind": "workload",
                                        "workload": "Deployment",
                                        "namespace": "trivy-system",
                                        "name": "trivy-operator",
                                    },
                                },
                            ],
                        }
                    ],
                }
            ],
        }
    )
    outcomes = await run_plan(plan, ProbeEnv(kube=kube_api.api, clock=time.time), timeout_s=0.5)
    slow, fast = outcomes
    assert slow.result.mark is Mark.UNKNOWN and slow.result.found == "no answer within 0.5 s"
    assert fast.result.mark is Mark.PASS


def _cilium_spec() -> dict[str, Any]:
    return shipped_plan().criteria()[0][2].probe.model_dump(by_alias=True, exclude_unset=True)


async def test_without_kubernetes_access_the_cluster_criteria_say_what_to_configure() -> None:
    """No KubeApi: unknown, pointing at kubernetes.enabled."""
    result = await probe(None, _cilium_spec())
    assert result == ProbeResult(
        Mark.UNKNOWN,
        "Kubernetes access is not configured (kubernetes.enabled)",
        'configmaps kube-system/cilium-config: data.policy-audit-mode ≠ "true"',
        (Cause("Kubernetes access is not configured (kubernetes.enabled)", general=True),),
    )


async def test_one_run_lists_the_namespaces_once_for_all_coverage_probes(kube_api: KubeHandle) -> None:
    """Three coverage criteria share one namespace list within a run (requests are cached per run)."""
    seed_everything_done(kube_api.store)
    server = kube_api.require_server()
    server.requests.clear()
    await run_plan(shipped_plan(), ProbeEnv(kube=kube_api.api, clock=time.time), timeout_s=5)
    namespace_lists = [r for r in server.requests if r.verb == "list" and r.resource == "namespaces"]
    assert len(namespace_lists) == 2  # all namespaces (1.1.3), vcluster-labelled ones (3.1.1 and 3.1.2)


# --- readybot's own state -----------------------------------------------------------------------


@pytest.fixture
async def db(tmp_path: Path, store_backend: StoreBackend) -> AsyncIterator[Database]:
    database = await store_backend.open(tmp_path / "store.sqlite3", migrations=MIGRATIONS)
    yield database
    await database.close()


def switch(db: Database, *, enabled: bool = True) -> DeadmansSwitch:
    return DeadmansSwitch(
        DeadmanSettings(enabled=enabled, threshold_s=300, check_interval_s=30),
        db=db,
        outbox=Outbox(db),
        templates=Templates(),
        rooms=[],
        clock=time.time,
        started_at=time.time(),
    )


WATCHDOG = {"kind": "readybot", "check": "watchdog"}


async def test_the_watchdog_criterion_follows_the_dead_mans_switch(db: Database) -> None:
    """No heartbeat yet fails; a fresh one passes; a switch turned off or absent is unknown."""
    deadman = switch(db)
    silent = await probe(None, WATCHDOG, watchdog=deadman)
    assert silent.mark is Mark.FAIL and silent.found == "no Watchdog heartbeat received yet"
    await deadman.heartbeat("https://alertmanager.example.org")
    fresh = await probe(None, WATCHDOG, watchdog=deadman)
    assert fresh.mark is Mark.PASS and fresh.found.startswith(
        "https://alertmanager.example.org: up, last heartbeat"
    )
    assert (await probe(None, WATCHDOG, watchdog=switch(db, enabled=False))).mark is Mark.UNKNOWN
    assert (await probe(None, WATCHDOG)).found == "only the running bot knows its Watchdog heartbeats"


async def test_the_gates_criterion_names_the_apps_without_a_gate() -> None:
    """Gates on cilium only: cert-manager and metallb are named; all three gated passes."""
    spec = {"kind": "readybot", "check": "approval_gates", "apps": ["cilium", "cert-manager", "metallb"]}
    partial = await probe(None, spec, gated_apps=frozenset({"cilium"}))
    assert partial.mark is Mark.FAIL and partial.found == "not gated: cert-manager, metallb"
    full = await probe(None, spec, gated_apps=frozenset({"cilium", "cert-manager", "metallb", "other"}))
    assert full.mark is Mark.PASS


async def test_the_probes_of_one_run_run_concurrently(kube_api: KubeHandle) -> None:
    """Two criteria each delayed 0.4 s finish together in well under 0.8 s."""
    seed_starting_point(kube_api.store)
    kube_api.require_server().delay(r"/deployments/", 0.4)
    plan = shipped_plan()
    began = asyncio.get_running_loop().time()
    await run_plan(plan, ProbeEnv(kube=kube_api.api, clock=time.time), timeout_s=5)
    assert asyncio.get_running_loop().time() - began < 0.8 + 0.4


_KYVERNO_AND_VELERO_TYPES = (
    ("kyverno.io", "clusterpolicies"),
    ("kyverno.io", "policies"),
    ("policies.kyverno.io", "validatingpolicies"),
    ("velero.io", "schedules"),
    ("velero.io", "backups"),
    ("velero.io", "restores"),
    ("velero.io", "backupstoragelocations"),
)


async def test_unknown_criteria_are_grouped_by_cause_naming_the_missing_crds(kube_api: KubeHandle) -> None:
    """Kyverno and Velero CRDs missing: a ⚠️ line per product naming its unserved types, none per evidence."""
    seed_starting_point(kube_api.store)
    server = kube_api.require_server()
    for group, plural in _KYVERNO_AND_VELERO_TYPES:
        server.unregister(group, plural)
    plan = shipped_plan()
    environment = ProbeEnv(kube=kube_api.api, clock=time.time)
    outcomes = await run_plan(plan, environment, timeout_s=5)
    results = [
        CriterionResult(o.criterion_id, o.result.mark, o.result.found, "", o.result.causes) for o in outcomes
    ]
    velero = [
        o.criterion_id for o in outcomes if "velero.io" in o.result.found and o.result.mark is Mark.UNKNOWN
    ]
    kyverno = [
        o.criterion_id for o in outcomes if "kyverno.io" in o.result.found and o.result.mark is Mark.UNKNOWN
    ]
    notices = score(plan, results, 0).notices
    assert not any(notice.startswith("0 found") for notice in notices), notices
    velero_line = next(notice for notice in notices if notice.startswith("Velero is not installed: "))
    # Only schedules: the test restore (2.1.3) is proven by readybot's drills, which need no CRD read here.
    assert "schedules.velero.io" in velero_line
    assert velero_line.endswith(f"({len(velero)} criterion unknown)") and len(velero) == 1
    kyverno_line = next(notice for notice in notices if notice.startswith("Kyverno is not installed: "))
    assert "clusterpolicies.kyverno.io" in kyverno_line
    assert kyverno_line.endswith(f"({len(kyverno)} criteria unknown)")
