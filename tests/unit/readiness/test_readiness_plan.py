"""config/readiness.yaml against the plan document, and the plan loader's error lines.

The plan document is the operators' ``../shared/seed/production-readiness-plan.md``:
the two tests that read it skip without ``../shared`` (and fail under CI).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from bot.errors import ConfigError
from config.readiness_plan import (
    SHIPPED_PLAN,
    AllProbe,
    AnyProbe,
    CountProbe,
    CronJobProbe,
    FieldProbe,
    ManualProbe,
    Probe,
    PrometheusProbe,
    PrometheusRuleProbe,
    VeleroSchedulesProbe,
    load_plan,
    prometheus_duration_s,
)
from tests.places import shared_path
from tests.unit.readiness_env import shipped_plan

# --- the plan document, parsed ----------------------------------------------------

_PHASE = re.compile(r"^## Phase (\d+): (.+)$")
_STEP = re.compile(r"^### (\d+\.\d+) (.+)$")
_CRITERION = re.compile(r"^- \[( |x)\] (.+?)(?: _\((.+)\)_)?$")


@dataclass
class DocStep:
    id: str
    title: str
    criteria: list[tuple[str, bool, str | None]] = field(default_factory=list)


@dataclass
class DocPhase:
    id: str
    title: str
    steps: list[DocStep] = field(default_factory=list)


def parse_document(text: str) -> list[DocPhase]:
    """Phases (## Phase N: …), steps (### N.M …) and the acceptance criteria (- [ ] / - [x]) of each."""
    phases: list[DocPhase] = []
    in_criteria = False
    for line in text.splitlines():
        if match := _PHASE.match(line):
            phases.append(DocPhase(match[1], match[2]))
        elif line.startswith("## "):
            phases.append(DocPhase("", line))  # "Tracking & Progress" etc. end the last phase
        elif (match := _STEP.match(line)) and phases and phases[-1].id:
            phases[-1].steps.append(DocStep(match[1], match[2]))
            in_criteria = False
        elif line.startswith("**Acceptance Criteria:**"):
            in_criteria = True
        elif in_criteria and (match := _CRITERION.match(line)):
            phases[-1].steps[-1].criteria.append((match[2], match[1] == "x", match[3]))
        elif line.startswith("**"):
            in_criteria = False
    return [phase for phase in phases if phase.id]


@pytest.fixture(scope="module")
def document() -> list[DocPhase]:
    """The operators' plan, parsed (from ../shared: a skip without it, a failure under CI)."""
    path = shared_path("seed/production-readiness-plan.md")
    return parse_document(path.read_text(encoding="utf-8"))


def test_the_document_parser_finds_the_plans_shape(document: list[DocPhase]) -> None:
    """The parser reads 6 phases, 15 steps and 46 criteria, so a broken parse cannot pass the test below."""
    assert [phase.id for phase in document] == ["1", "2", "3", "4", "5", "6"]
    assert sum(len(phase.steps) for phase in document) == 15
    assert sum(len(step.criteria) for phase in document for step in phase.steps) == 46


def test_every_phase_step_and_criterion_of_the_document_is_in_the_plan_file(document: list[DocPhase]) -> None:
    """Phases, steps and criteria of the plan document appear in readiness.yaml, in order, word for word."""
    plan = shipped_plan()
    assert [(p.id, p.title) for p in plan.phases] == [(p.id, p.title) for p in document]
    for phase, doc_phase in zip(plan.phases, document, strict=True):
        assert [(s.id, s.title) for s in phase.steps] == [(s.id, s.title) for s in doc_phase.steps]
        for step, doc_step in zip(phase.steps, doc_phase.steps, strict=True):
            texts = [(c.text, c.plan.done, c.plan.note) for c in step.criteria]
            assert texts == doc_step.criteria, f"step {step.id}"


def test_the_deferred_step_without_criteria_is_kept_as_deferred() -> None:
    """5.3 Progressive Delivery has no acceptance criteria in the document: it is in the plan, deferred."""
    step = next(s for p in shipped_plan().phases for s in p.steps if s.id == "5.3")
    assert step.deferred and not step.criteria and step.recommendation


def test_the_seven_categories_of_the_maturity_table_are_there() -> None:
    """All seven categories of the plan's maturity table, with their ratings, are in the file."""
    ratings = {c.name: c.rating for c in shipped_plan().categories}
    assert ratings == {
        "Observability": "Strong",
        "Security": "Moderate",
        "Infrastructure lifecycling": "Moderate",
        "Change management": "Moderate",
        "Team readiness": "Strong",
        "Cost controls": "Weak",
        "Cultural readiness": "Strong",
    }


def _criterion_probe(criterion_id: str) -> Probe:
    return next(c.probe for _, _, c in shipped_plan().criteria() if c.id == criterion_id)


def _leaves(probe: Probe) -> list[Probe]:
    if isinstance(probe, AllProbe | AnyProbe):
        return [leaf for inner in probe.probes for leaf in _leaves(inner)]
    return [probe]


def test_the_probes_default_to_the_plans_own_alerts_metrics_and_schedules() -> None:
    """Trivy/Velero alert names and expressions, Velero crons, 6 h etcd, 15 d retention come from the plan."""
    trivy = _criterion_probe("1.2.3")
    assert isinstance(trivy, PrometheusRuleProbe)
    assert (
        "CriticalVulnerabilityDetected" in trivy.alert and "TrivyCriticalVulnerabilityDetected" in trivy.alert
    )
    assert trivy.expr == 'trivy_image_vulnerabilities{severity="Critical"} > 0'
    velero_alert = _criterion_probe("2.1.4")
    assert isinstance(velero_alert, PrometheusRuleProbe)
    assert velero_alert.alert == ["VeleroBackupFailed"]
    assert velero_alert.expr == "velero_backup_failure_total > velero_backup_success_total"
    schedules = _criterion_probe("2.1.2")
    assert isinstance(schedules, VeleroSchedulesProbe)
    assert [s.cron for s in schedules.schedules] == ["0 2 * * *", "0 3 * * 0"]
    etcd = _criterion_probe("2.2.1")
    assert isinstance(etcd, CronJobProbe) and etcd.max_interval == timedelta(hours=6)
    cilium = _criterion_probe("1.1.1")
    assert isinstance(cilium, FieldProbe) and cilium.names == ["cilium-config"]
    assert cilium.where[0].path == "data.policy-audit-mode"  # type: ignore[union-attr]
    kyverno = _criterion_probe("1.3.1")
    assert isinstance(kyverno, CountProbe) and kyverno.min == 3
    queries = [leaf.query for leaf in _leaves(_criterion_probe("3.2.1")) if isinstance(leaf, PrometheusProbe)]
    assert queries == ['up{job=~".*opencost.*"}']
    retention = [leaf for leaf in _leaves(_criterion_probe("4.2.1")) if isinstance(leaf, CountProbe)]
    assert retention[0].sources[0].where[0].longer_than == "15d"  # type: ignore[union-attr]


def test_every_manual_criterion_says_where_its_evidence_lives() -> None:
    """A manual criterion carries evidence text, and every criterion says how to fix it."""
    for _, _, criterion in shipped_plan().criteria():
        if isinstance(criterion.probe, ManualProbe):
            assert len(criterion.probe.evidence) > 10, criterion.id
        assert criterion.fix, criterion.id


# --- validation errors --------------------------------------------------------------

BASE = """\
categories:
  - {id: security, name: Security}
phases:
  - id: "1"
    title: Phase one
    steps:
      - id: "1.1"
        title: Step
        category: security
        criteria:
"""


def problems(tmp_path: Path, criteria_yaml: str, base: str = BASE) -> list[str]:
    path = tmp_path / "plan.yaml"
    path.write_text(base + criteria_yaml)
    with pytest.raises(ConfigError) as raised:
        load_plan(path)
    prefix = f"readiness plan {path}: "
    assert all(line.startswith(prefix) for line in raised.value.problems)
    return [line.removeprefix(prefix) for line in raised.value.problems]


def test_the_shipped_plan_loads() -> None:
    """config/readiness.yaml validates, with 46 criteria in 6 phases."""
    plan = load_plan(SHIPPED_PLAN)
    assert len(plan.criteria()) == 46 and len(plan.phases) == 6


def test_a_missing_field_is_reported_at_its_criterion_by_id(tmp_path: Path) -> None:
    """A missing probe field names the criterion by its id, not by list positions."""
    lines = problems(
        tmp_path,
        '          - id: "1.1.1"\n            text: x\n'
        "            probe: {kind: workload, workload: Deployment, namespace: a}\n",
    )
    assert lines == ["phases[1].steps[1.1].criteria[1.1.1].probe.name: Field required"]


def test_an_unknown_probe_kind_lists_the_kinds(tmp_path: Path) -> None:
    """A misspelt kind is refused with the list of probe kinds."""
    lines = problems(tmp_path, '          - {id: "1.1.1", text: x, probe: {kind: workloads}}\n')
    assert len(lines) == 1 and lines[0].startswith(
        "phases[1].steps[1.1].criteria[1.1.1].probe: unknown probe kind"
    )
    assert "velero_schedules" in lines[0]


def test_unknown_keys_and_bad_values_are_each_one_line(tmp_path: Path) -> None:
    """An unknown key, a bad resource and a condition with two operators give one line each."""
    lines = problems(
        tmp_path,
        '          - id: "1.1.1"\n            text: x\n'
        "            probe: {kind: count, sources: [{resource: configmaps, colour: red}]}\n"
        '          - id: "1.1.2"\n            text: y\n'
        "            probe: {kind: field, resource: configmaps/v1, name: a,"
        " where: [{path: a, equals: 1, in: [2]}]}\n",
    )
    assert (
        "phases[1].steps[1.1].criteria[1.1.1].probe.sources[0].resource: must be plural[.group]/version"
        in lines[0]
    )
    assert lines[1] == "phases[1].steps[1.1].criteria[1.1.1].probe.sources[0].colour: unknown key"
    assert lines[2].startswith("phases[1].steps[1.1].criteria[1.1.2].probe.where[0]: set exactly one of")


def test_cross_checks_report_unknown_categories_misnumbered_and_repeated_ids(tmp_path: Path) -> None:
    """Ids that do not nest, repeat, or name an unknown category are reported one per line."""
    base = BASE.replace("category: security", "category: securty")
    lines = problems(
        tmp_path,
        '          - {id: "2.1.1", text: x, probe: {kind: manual, evidence: e}}\n'
        '          - {id: "2.1.1", text: y, probe: {kind: manual, evidence: e}}\n',
        base,
    )
    assert lines == [
        "step 1.1: unknown category 'securty'",
        "criterion 2.1.1: its id must start with its step's id 1.1.",
        "criterion id '2.1.1' is used twice",
        "criterion 2.1.1: its id must start with its step's id 1.1.",
    ]


def test_a_bad_cron_and_a_manual_part_of_a_composite_are_refused(tmp_path: Path) -> None:
    """A Velero schedule's cron must parse; a manual probe cannot be half of an all/any."""
    lines = problems(
        tmp_path,
        '          - {id: "1.1.1", text: x,'
        ' probe: {kind: velero_schedules, schedules: [{cron: "0 2 * *"}]}}\n'
        '          - {id: "1.1.2", text: y, probe: {kind: all, probes: [{kind: manual, evidence: e}]}}\n',
    )
    assert lines[0].startswith("phases[1].steps[1.1].criteria[1.1.1].probe.schedules[0]: cron: ")
    assert "manual probe cannot be part of all/any" in lines[1]


def test_yaml_problems_give_the_position_and_duplicate_keys_are_refused(tmp_path: Path) -> None:
    """Broken YAML says where; a key repeated in one mapping is an error, as in the settings file."""
    path = tmp_path / "plan.yaml"
    path.write_text("categories: [\n")
    with pytest.raises(ConfigError) as raised:
        load_plan(path)
    assert raised.value.problems == [f"readiness plan {path}: not valid YAML (line 2, column 1)"]
    path.write_text(BASE.replace("title: Step", "title: Step\n        title: Again") + "          []\n")
    with pytest.raises(ConfigError) as raised:
        load_plan(path)
    assert "duplicate key" in raised.value.problems[0]
    with pytest.raises(ConfigError, match="file not found"):
        load_plan(tmp_path / "missing.yaml")


def test_prometheus_durations_are_read_as_prometheus_writes_them() -> None:
    """90d, 1y, 2w, 12h30m and 500ms convert to seconds; junk is None."""
    assert prometheus_duration_s("90d") == 90 * 86_400
    assert prometheus_duration_s("1y") == 365 * 86_400
    assert prometheus_duration_s("12h30m") == 45_000
    assert prometheus_duration_s("500ms") == 0.5
    assert prometheus_duration_s("15 days") is None
    assert prometheus_duration_s("") is None
