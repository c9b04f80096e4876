"""RBAC matches the code: the deployed roles allow everything the bot asked of the API in the test suite.

How it works:

- ``tests/deploy/rbac_recorder.py`` (wired in tests/conftest.py) collects,
  from every test API server of the session, each request as (verb, group,
  resource, namespace) with the tests that made it and, for requests for one
  object, its name.
- This module runs last (``RUN_LAST``) and compares that with what the
  example overlay's (Cluster)Roles grant the bot's ServiceAccount through
  their bindings, the way RBAC would decide.

What counts as "the bot asked":

- Not the test API server's own tests and the generic client's (tests/kube/):
  they create, patch and delete arbitrary objects to test the harness.
- Not the requests listed in ``TEST_ACTORS``: a test playing an operator or a
  controller through the API. Each entry says why.
- A namespace a test made up (``rb-…``) stands for the namespace the feature
  is configured with in the deployed configuration (Velero: velero.namespace;
  Argo CD: the approvals apps' namespaces, default argocd). A namespace the
  code or the readiness plan names (kube-system, velero, …) stands for itself.

It fails if a required request is not granted, and reports (as a warning and
in ``.pytest_cache/d/readybot-rbac/report.json``) the grants nothing exercised.
Run the whole suite for a meaningful result: alone it skips.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import pytest
import yaml

from tests.deploy.helpers import HA_OVERLAY, OVERLAY, KubeObject, in_ci, only, render
from tests.deploy.rbac_recorder import RECORDER, Request

# Moved to the end of the session by tests/conftest.py: it needs every other test's requests.
RUN_LAST: Final = True

VERBS: Final = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
# Tests of the test API server and of the generic client, not of the bot's features.
HARNESS_TESTS: Final = ("tests/kube/",)
# (test node id prefix, verb, group, resource): requests a test makes itself, not the bot.
TEST_ACTORS: Final = {
    (
        "tests/unit/velero/test_velero_service.py::test_a_deleted_schedule_takes_its_alert_along",
        "delete",
        "velero.io",
        "schedules",
    ): "the test deletes a Schedule through the API, as an operator would; the relay only watches",
}
TEST_NAMESPACE_PREFIX: Final = "rb-"


class UnexercisedRbacWarning(UserWarning):
    """A granted permission that no test made the bot use."""


@dataclass(frozen=True)
class Grant:
    verb: str
    group: str
    resource: str
    # None: every namespace (a ClusterRole bound cluster-wide).
    namespace: str | None
    names: frozenset[str]  # empty: any name
    source: str

    def allows(self, request: Request, names: Iterable[str]) -> bool:
        if self.verb not in {request.verb, "*"} or self.group not in {request.group, "*"}:
            return False
        if self.resource not in {request.resource, "*"}:
            return False
        if self.namespace is not None and self.namespace != request.namespace:
            return False
        if not self.names:
            return True
        # resourceNames restrict requests for one object; a list or watch is not one.
        wanted = set(names)
        return request.verb in {"get", "update", "patch", "delete"} and bool(wanted) and wanted <= self.names


def grants(objects: tuple[KubeObject, ...]) -> list[Grant]:
    """What the bot's ServiceAccount may do: each rule of each role its bindings reach."""
    account = only(objects, "ServiceAccount")["metadata"]
    me = (account["name"], account["namespace"])
    roles = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")): o for o in objects}
    found: list[Grant] = []
    for binding in objects:
        if binding["kind"] not in {"RoleBinding", "ClusterRoleBinding"}:
            continue
        binding_ns = binding["metadata"].get("namespace")
        subjects = {
            (s["name"], s.get("namespace", binding_ns))
            for s in binding.get("subjects", [])
            if s["kind"] == "ServiceAccount"
        }
        if me not in subjects:
            continue
        ref = binding["roleRef"]
        role = roles.get((ref["kind"], ref["name"], binding_ns if ref["kind"] == "Role" else None))
        assert role is not None, f"{binding['kind']} {binding['metadata']['name']} binds a role not deployed"
        scope = binding_ns if binding["kind"] == "RoleBinding" else None
        source = f"{role['kind']} {role['metadata']['name']}" + (f" ({scope})" if scope else "")
        for rule in role.get("rules", []):
            for verb in rule["verbs"]:
                for group in rule.get("apiGroups", []):
                    for resource in rule.get("resources", []):
                        names = frozenset(rule.get("resourceNames", []))
                        found.append(Grant(verb, group, resource, scope, names, source))
    return found


def feature_namespaces(objects: tuple[KubeObject, ...]) -> dict[str, set[str]]:
    """API group -> the namespaces the deployed configuration points that feature at."""
    from config.approvals import ApprovalsSettings, GatedApp
    from config.velero import VeleroSettings

    config_map = next(o for o in objects if o["kind"] == "ConfigMap" and "config.yaml" in o.get("data", {}))
    config: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"]) or {}
    velero = VeleroSettings.model_validate(config.get("velero") or {})
    approvals = ApprovalsSettings.model_validate(config.get("approvals") or {})
    argo = {app.namespace for app in approvals.apps.values()} or {GatedApp.model_fields["namespace"].default}
    # The leader-election Lease lives in the bot's own namespace (ha.namespace: POD_NAMESPACE).
    own = {only(objects, "ServiceAccount")["metadata"]["namespace"]}
    return {"velero.io": {velero.namespace}, "argoproj.io": argo, "coordination.k8s.io": own}


@dataclass(frozen=True)
class Required:
    request: Request
    names: frozenset[str]
    tests: frozenset[str]
    stands_for: str  # how a test namespace was mapped, for the report


def required(objects: tuple[KubeObject, ...]) -> tuple[list[Required], int]:
    """The bot's recorded requests in deployed namespaces, and the count left out (harness, test actors)."""
    mapping = feature_namespaces(objects)
    needed: list[Required] = []
    left_out = 0
    for request, tests in RECORDER.seen.items():
        bot_tests = {
            t
            for t in tests
            if not t.startswith(HARNESS_TESTS)
            and not any(
                t.startswith(prefix) and (verb, group, resource) == request[:3]
                for (prefix, verb, group, resource) in TEST_ACTORS
            )
        }
        if not bot_tests:
            left_out += 1
            continue
        names = frozenset(RECORDER.names.get(request, ()))
        namespace = request.namespace
        if namespace is not None and namespace.startswith(TEST_NAMESPACE_PREFIX):
            targets = mapping.get(request.group)
            if targets is None:
                # No feature namespace known for this group: any namespace will do, flagged in the report.
                needed.append(Required(request._replace(namespace="*"), names, frozenset(bot_tests), "any"))
                continue
            needed += [
                Required(request._replace(namespace=ns), names, frozenset(bot_tests), f"rb-… -> {ns}")
                for ns in sorted(targets)
            ]
        else:
            needed.append(Required(request, names, frozenset(bot_tests), ""))
    return needed, left_out


def _granted(need: Required, granted: list[Grant]) -> list[Grant]:
    request = need.request
    if request.namespace == "*":
        return [g for g in granted if g.allows(request._replace(namespace=g.namespace), need.names)]
    return [g for g in granted if g.allows(request, need.names)]


def _describe(request: Request) -> str:
    resource = f"{request.resource}.{request.group}" if request.group else request.resource
    where = "cluster-wide" if request.namespace is None else f"in {request.namespace}"
    return f"{request.verb} {resource} {where}"


def test_deployed_rbac_allows_everything_the_bot_asked_for_in_the_test_suite() -> None:
    """Every (verb, group, resource, namespace) the bot sent the test API is granted to its ServiceAccount."""
    suite_ran = {t.split("/")[1] for t in RECORDER.tests_run if t.startswith("tests/")}
    objects = render(OVERLAY)
    needed, left_out = required(objects)
    if not needed:
        if in_ci() and {"unit", "integration"} <= suite_ran:
            pytest.fail(
                "the whole suite ran but no feature test's API request was recorded: is the recorder wired?"
            )
        pytest.skip("no feature test in this session talked to the test Kubernetes API: run the whole suite")
    # Two replicas (ha.enabled) are the ha overlay's: its Lease Role, on top of the example's roles.
    granted = grants(objects) + [g for g in grants(render(HA_OVERLAY)) if g.group == "coordination.k8s.io"]
    missing = []
    used: set[Grant] = set()
    for need in needed:
        allowing = _granted(need, granted)
        used.update(allowing)
        if not allowing:
            names = f" (names: {', '.join(sorted(need.names))})" if need.names else ""
            tests = ", ".join(sorted(need.tests)[:3]) + (" …" if len(need.tests) > 3 else "")
            missing.append(f"{_describe(need.request)}{names}: asked by {tests}")
    unexercised = sorted(
        {
            f"{g.verb} {g.resource}.{g.group or 'core'} {g.namespace or 'cluster-wide'} [{g.source}]"
            for g in granted
        }
        - {
            f"{g.verb} {g.resource}.{g.group or 'core'} {g.namespace or 'cluster-wide'} [{g.source}]"
            for g in used
        }
    )
    report = {
        "required": sorted({_describe(n.request) for n in needed}),
        "mapped_test_namespaces": sorted({n.stands_for for n in needed if n.stands_for}),
        "granted_rules": len(granted),
        "missing": missing,
        "unexercised": unexercised,
        "requests_left_out_as_harness_or_test_actor": left_out,
        "tests_that_used_the_api": len({t for tests in RECORDER.seen.values() for t in tests}),
    }
    if RECORDER.path is not None:
        (RECORDER.path.parent / "report.json").write_text(
            json.dumps(report, indent=1) + "\n", encoding="utf-8"
        )
    if unexercised:
        warnings.warn(
            UnexercisedRbacWarning(
                f"{len(unexercised)} granted permission(s) no test made the bot use:\n  "
                + "\n  ".join(unexercised)
            ),
            stacklevel=1,
        )
    assert not missing, "the deployed RBAC does not allow:\n  " + "\n  ".join(missing)


def test_rbac_comparison_catches_a_missing_grant() -> None:
    """The comparison above fails for a request no rule allows, and honours namespaces and resourceNames."""
    get_cm = Grant("get", "", "configmaps", "kube-system", frozenset({"cilium-config"}), "Role x")
    list_velero = Grant("list", "velero.io", "backups", None, frozenset(), "ClusterRole y")
    cilium = Required(
        Request("get", "", "configmaps", "kube-system"), frozenset({"cilium-config"}), frozenset(), ""
    )
    other_cm = Required(
        Request("get", "", "configmaps", "kube-system"), frozenset({"coredns"}), frozenset(), ""
    )
    elsewhere = Required(
        Request("get", "", "configmaps", "default"), frozenset({"cilium-config"}), frozenset(), ""
    )
    list_cm = Required(Request("list", "", "configmaps", "kube-system"), frozenset(), frozenset(), "")
    backups = Required(Request("list", "velero.io", "backups", "velero"), frozenset(), frozenset(), "")
    watch = Required(Request("watch", "velero.io", "backups", "velero"), frozenset(), frozenset(), "")
    rules = [get_cm, list_velero]
    assert _granted(cilium, rules) == [get_cm]
    assert _granted(backups, rules) == [list_velero]
    for denied in (other_cm, elsewhere, list_cm, watch):
        assert not _granted(denied, rules), denied
