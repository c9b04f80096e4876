"""`readybot readiness`: the scorecard in a terminal and as JSON, and exit codes that can gate CI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bot.cli import EXIT_CONFIG, EXIT_OK, EXIT_USAGE, main
from tests.kube.handle import KubeTarget
from tests.unit.readiness_env import seed_starting_point

EXIT_FAILED = 1

PASSING_PLAN = """\
categories: [{id: security, name: Security}]
phases:
  - id: "1"
    title: One
    steps:
      - id: "1.1"
        title: Cilium
        category: security
        criteria:
          - id: "1.1.1"
            text: Cilium enforces
            probe:
              kind: field
              resource: configmaps/v1
              namespace: kube-system
              name: cilium-config
              where: [{path: "data.policy-audit-mode", not_equals: "true"}]
          - {id: "1.1.2", text: Hubble checked, probe: {kind: manual, evidence: Hubble}}
"""


@pytest.fixture(autouse=True)
def _no_readybot_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A READYBOT_* variable of the developer's shell must not leak into these configurations.
    for name in list(os.environ):
        if name.upper().startswith("READYBOT_"):
            monkeypatch.delenv(name)


def write_config(
    tmp_path: Path, kube: KubeTarget | None, *, plan: Path | None = None, extra: str = ""
) -> Path:
    kubernetes = (
        f"kubernetes:\n  enabled: true\n  in_cluster: false\n  kubeconfig: {kube.kubeconfig_path}\n"
        "  request_timeout_s: 2\n"
        if kube
        else ""
    )
    readiness = "readiness:\n  enabled: true\n  probe_timeout_s: 5\n" + (f"  plan: {plan}\n" if plan else "")
    path = tmp_path / "readybot.yaml"
    path.write_text(
        "matrix:\n  homeserver: https://matrix.example.org\n  user_id: '@bot:example.org'\n  password: p\n"
        + kubernetes
        + readiness
        + extra
    )
    return path


def test_the_starting_point_fails_and_lists_what_does_not_pass(
    kube: KubeTarget, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Against the plan's starting point: exit 1, the scorecard, then each failing criterion with evidence."""
    seed_starting_point(kube.store)
    assert main(["readiness", "-c", str(write_config(tmp_path, kube))]) == EXIT_FAILED
    out = capsys.readouterr().out
    assert out.startswith("Production Readiness Plan: ")
    assert "1.1 ✅ 2/2 +1 manual" in out
    assert "Not passing:" in out
    assert (
        "❌ 1.3.1 At least 3 enforce-mode ClusterPolicies active\n    found: 1 found: disallow-ingress" in out
    )
    assert "Details:" not in out  # no chat hints in a terminal


def test_json_holds_every_criterion_with_mark_and_evidence(
    kube: KubeTarget, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json: tallies per group and all 46 criteria with mark, found and expected; still exit 1 on a fail."""
    seed_starting_point(kube.store)
    assert main(["readiness", "--json", "-c", str(write_config(tmp_path, kube))]) == EXIT_FAILED
    data = json.loads(capsys.readouterr().out)
    assert len(data["criteria"]) == 46
    marks = {c["id"]: c["mark"] for c in data["criteria"]}
    assert marks["1.1.1"] == "pass" and marks["1.3.1"] == "fail" and marks["1.1.2"] == "manual"
    assert marks["1.2.3"] == "unknown"  # no Prometheus configured
    assert data["categories"]["security"]["passed"] == 3  # 1.1.1, 1.1.3, 1.2.1
    assert data["steps"]["5.3"]["deferred"] is True
    cilium = next(c for c in data["criteria"] if c["id"] == "1.1.1")
    assert cilium["found"] == 'cilium-config: data.policy-audit-mode = "false"'
    assert 0 < data["score"] < 1 and 0 < data["coverage"] < 1


def test_no_failing_criterion_exits_0_and_strict_makes_unknown_count(
    kube: KubeTarget, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plan that passes exits 0; an unknown criterion exits 0 too, unless --strict (then 1)."""
    seed_starting_point(kube.store)
    plan = tmp_path / "plan.yaml"
    plan.write_text(PASSING_PLAN)
    config = write_config(tmp_path, kube, plan=plan)
    assert main(["readiness", "-c", str(config)]) == EXIT_OK
    plan.write_text(
        PASSING_PLAN + "          - {id: '1.1.3', text: rule, probe: {kind: prometheus_rule, alert: X}}\n"
    )
    assert main(["readiness", "-c", str(config)]) == EXIT_OK
    assert main(["readiness", "--strict", "-c", str(config)]) == EXIT_FAILED
    assert "Prometheus is not configured (readiness.prometheus_url)" in capsys.readouterr().out


def test_an_unreachable_cluster_is_unknown_everywhere_and_says_so(
    kube: KubeTarget, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the API down: "cluster unreachable" at the top, nothing failed, exit 0 (1 with --strict)."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(PASSING_PLAN)
    config = write_config(tmp_path, kube, plan=plan)
    with kube.require_server().unreachable():
        assert main(["readiness", "-c", str(config)]) == EXIT_OK
        out = capsys.readouterr().out
        assert "⚠️ cluster unreachable: connection refused (1 criterion unknown)" in out
        assert main(["readiness", "--strict", "-c", str(config)]) == EXIT_FAILED


def test_a_target_prints_its_criteria_and_an_unknown_one_exits_2(
    kube: KubeTarget, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`readybot readiness security` prints its criteria; a misspelt target exits 2 with the choices."""
    seed_starting_point(kube.store)
    config = write_config(tmp_path, kube)
    assert main(["readiness", "security", "-c", str(config)]) == EXIT_FAILED
    out = capsys.readouterr().out
    assert out.startswith("❌ Security: ") and "1.3.2 System namespaces exempted" in out
    assert main(["readiness", "securty", "-c", str(config)]) == EXIT_USAGE
    assert "no category, phase, step or criterion 'securty'" in capsys.readouterr().err


def test_an_invalid_plan_exits_78_in_readiness_and_in_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken plan file: one line per problem on stderr and exit 78, from both subcommands."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(PASSING_PLAN.replace("kind: field", "kind: feld"))
    config = write_config(tmp_path, None, plan=plan)
    assert main(["readiness", "-c", str(config)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"  readiness plan {plan}: phases[1].steps[1.1].criteria[1.1.1].probe: unknown probe kind" in err
    assert main(["check-config", "-c", str(config)]) == EXIT_CONFIG
    assert "unknown probe kind" in capsys.readouterr().err
    plan.write_text(PASSING_PLAN)
    assert main(["check-config", "-c", str(config)]) == EXIT_OK


def test_an_unloadable_kubeconfig_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """kubernetes.enabled with a kubeconfig that does not exist is a configuration error."""
    config = write_config(
        tmp_path,
        None,
        extra=f"kubernetes:\n  enabled: true\n  in_cluster: false\n  kubeconfig: {tmp_path / 'no'}\n",
    )
    assert main(["readiness", "-c", str(config)]) == EXIT_CONFIG
    assert "kubernetes: cannot load the kubeconfig" in capsys.readouterr().err
