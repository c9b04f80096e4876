"""Conditions on Kubernetes objects, and cron expressions read as Kubernetes and Velero read them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from bot.readiness.conditions import describe, holds, shown_at, values_at
from config.cron import parse_cron
from config.readiness_plan import Where, WhereItem, parse_path

WHERE = TypeAdapter(Where)
ITEM = TypeAdapter(WhereItem)

POLICY: dict[str, Any] = {
    "metadata": {"name": "p", "labels": {"app.kubernetes.io/name": "kyverno"}},
    "spec": {
        "validationFailureAction": "Audit",
        "rules": [
            {
                "name": "a",
                "validate": {"failureAction": "Enforce"},
                "exclude": {"namespaces": ["kube-system"]},
            },
            {"name": "b", "validate": {}},
        ],
        "podSelector": {"matchLabels": {}},
        "automated": {},
        "enabled": False,
    },
    "data": {"policy-audit-mode": "false"},
}


def check(condition: dict[str, Any], obj: dict[str, Any] = POLICY) -> bool:
    return holds(obj, ITEM.validate_python(condition))


def test_paths_read_dots_lists_and_quoted_keys() -> None:
    """a.b, a[].b and a["x.y"] are parsed into keys and list fan-outs."""
    assert parse_path("spec.rules[].validate.failureAction") == [
        ("spec", False),
        ("rules", True),
        ("validate", False),
        ("failureAction", False),
    ]
    assert values_at(POLICY, 'metadata.labels["app.kubernetes.io/name"]') == ["kyverno"]
    assert values_at(POLICY, "spec.rules[].name") == ["a", "b"]
    with pytest.raises(ValueError, match="ends with a dot"):
        parse_path("spec.")


def test_equals_and_in_need_a_value_while_their_negations_pass_on_a_missing_path() -> None:
    """A missing path fails equals/in and passes not_equals/not_in (absent is not "true")."""
    assert check({"path": "data.policy-audit-mode", "not_equals": "true"})
    assert check({"path": "data.missing", "not_equals": "true"})
    assert not check({"path": "data.missing", "equals": "true"})
    assert check({"path": "spec.validationFailureAction", "in": ["Enforce", "Audit"]})
    assert not check({"path": "spec.validationFailureAction", "not_in": ["Audit"]})


def test_booleans_and_strings_never_compare_equal() -> None:
    """`false` in YAML is the boolean, never the ConfigMap string "false"."""
    assert check({"path": "spec.enabled", "equals": False})
    assert not check({"path": "data.policy-audit-mode", "equals": False})


def test_through_a_list_any_element_suffices_unless_each_is_set() -> None:
    """rules[].x holds when one rule has it; with each: true every rule must (lacking the key fails)."""
    assert check({"path": "spec.rules[].validate.failureAction", "equals": "Enforce"})
    assert not check({"path": "spec.rules[].validate.failureAction", "equals": "Enforce", "each": True})
    assert not check({"path": "spec.rules[].exclude", "mentions": ["kube-system"], "each": True})
    assert check({"path": "spec.rules[].exclude", "mentions": ["kube-system"]})


def test_exists_counts_an_empty_mapping_and_empty_looks_inside() -> None:
    """`automated: {}` exists (Argo CD treats it as on); podSelector {matchLabels: {}} is empty."""
    assert check({"path": "spec.automated", "exists": True})
    assert check({"path": "spec.nothing", "exists": False})
    assert check({"path": "spec.podSelector", "empty": True})
    assert check({"path": "spec.nothing", "empty": True})
    assert not check({"path": "spec.rules", "empty": True})


def test_matches_mentions_and_longer_than_read_strings_and_durations() -> None:
    """matches searches strings below the path; mentions needs each string; longer_than compares durations."""
    assert check({"path": "spec", "matches": "Enf.rce"})
    assert not check({"path": "spec", "matches": "ebpf"})
    assert not check({"path": "spec.rules[].exclude", "mentions": ["kube-system", "argocd"]})
    obj = {"spec": {"retention": "90d"}}
    assert check({"path": "spec.retention", "longer_than": "15d"}, obj)
    assert not check({"path": "spec.retention", "longer_than": "90d"}, obj)
    assert not check({"path": "spec.retention", "longer_than": "15d"}, {"spec": {}})


def test_any_group_holds_when_one_member_holds() -> None:
    """{any: [...]} is a disjunction; a where list is a conjunction."""
    assert check({"any": [{"path": "spec.nope", "exists": True}, {"path": "spec.enabled", "equals": False}]})
    where = WHERE.validate_python(
        [{"path": "spec.enabled", "equals": False}, {"path": "spec.nope", "exists": True}]
    )
    assert not all(holds(POLICY, condition) for condition in where)


def test_a_condition_needs_exactly_one_operator_and_a_valid_regex() -> None:
    """Zero or two operators, or a broken regex, are refused when the plan is read."""
    with pytest.raises(ValidationError, match="exactly one of"):
        ITEM.validate_python({"path": "a"})
    with pytest.raises(ValidationError, match="not a regular expression"):
        ITEM.validate_python({"path": "a", "matches": "("})
    assert ITEM.validate_python({"path": "a", "equals": None}).operator == "equals"


def test_descriptions_say_the_condition_and_what_was_found() -> None:
    """Evidence names the path, the expectation and the value found (or that it is not set)."""
    condition = ITEM.validate_python({"path": "data.policy-audit-mode", "not_equals": "true"})
    assert describe(condition) == 'data.policy-audit-mode ≠ "true"'
    assert shown_at(POLICY, condition) == 'data.policy-audit-mode = "false"'
    assert shown_at({}, condition) == "data.policy-audit-mode is not set"
    matches = ITEM.validate_python({"path": "spec", "matches": "Enforce"})
    assert shown_at(POLICY, matches) == 'spec has ["Enforce"]'


# --- cron (config/cron.py, the one reader; its table and properties are in test_cron.py) ---

WEDNESDAY_NOON = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def test_the_scorecard_reads_both_restricted_day_fields_as_either() -> None:
    """`0 3 1 * 1` last ran on Monday 30 November, not on the last 1st that was a Monday (June)."""
    assert parse_cron("0 3 1 * 1").previous_fire(datetime(2026, 12, 1, 2, tzinfo=UTC)) == datetime(
        2026, 11, 30, 3, tzinfo=UTC
    )


def test_the_scorecard_reads_a_cron_tz_prefix() -> None:
    """`CRON_TZ=Europe/Paris 0 3 * * *` is read (Velero accepts it): 03:00 in Paris is 02:00 UTC in winter."""
    assert parse_cron("CRON_TZ=Europe/Paris 0 3 * * *").previous_fire(WEDNESDAY_NOON) == datetime(
        2026, 3, 4, 2, tzinfo=UTC
    )


def test_malformed_cron_expressions_are_refused() -> None:
    """Four fields, day 7 or 8 (robfig's weekdays are 0-6), a backwards weekday range are errors."""
    for bad in ("0 2 * *", "0 0 * * 7", "0 0 * * 8", "0 0 * * 5-1", "61 * * * *"):
        with pytest.raises(ValueError, match=r"."):
            parse_cron(bad)
