"""Evaluating the plan's conditions on Kubernetes objects (plain dicts). Pure.

See ``config.readiness_plan.Condition`` for the operators and how a path
with ``[]`` and a missing path behave.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

from config.readiness_plan import AnyCondition, Condition, parse_path, prometheus_duration_s

KubeObject = dict[str, Any]
_MAX_SHOWN_CHARS = 80


def values_at(obj: Any, path: str) -> list[Any]:
    """Every value at ``path`` (``[]`` fans out over a list); empty when the path is missing."""
    return _resolve([obj], parse_path(path))


def _resolve(nodes: list[Any], segments: Sequence[tuple[str, bool]]) -> list[Any]:
    for key, fan_out in segments:
        found: list[Any] = []
        for node in nodes:
            if not isinstance(node, dict) or key not in node:
                continue
            value = node[key]
            if fan_out:
                if isinstance(value, list):
                    found.extend(value)
            else:
                found.append(value)
        nodes = found
    return nodes


def holds(obj: KubeObject, condition: Condition | AnyCondition) -> bool:
    """Whether ``obj`` satisfies one condition (or one of an ``any`` group)."""
    if isinstance(condition, AnyCondition):
        return any(holds(obj, inner) for inner in condition.any)
    segments = parse_path(condition.path)
    if condition.each:
        # "Every element": split the path at its first [] and test the rest
        # on each element, so an element lacking the key counts against it.
        split = next((index for index, (_, fan) in enumerate(segments) if fan), None)
        if split is not None:
            elements = _resolve([obj], segments[: split + 1])
            rest = segments[split + 1 :]
            return bool(elements) and all(_test(_resolve([e], rest), condition) for e in elements)
    return _test(_resolve([obj], segments), condition)


def holds_all(obj: KubeObject, where: Sequence[Condition | AnyCondition]) -> bool:
    return all(holds(obj, condition) for condition in where)


def failing(obj: KubeObject, where: Sequence[Condition | AnyCondition]) -> list[Condition | AnyCondition]:
    """The conditions ``obj`` does not meet."""
    return [condition for condition in where if not holds(obj, condition)]


def _test(values: list[Any], condition: Condition) -> bool:  # noqa: PLR0911 - one branch per operator
    operator, operand = condition.operator, condition.operand
    present = [value for value in values if value is not None]
    if operator == "equals":
        return any(_same(value, operand) for value in values)
    if operator == "not_equals":
        return not any(_same(value, operand) for value in values)
    if operator == "in":
        return any(_same(value, item) for value in values for item in operand)
    if operator == "not_in":
        return not any(_same(value, item) for value in values for item in operand)
    if operator == "exists":
        return bool(present) is bool(operand)
    if operator == "empty":
        return all(_is_empty(value) for value in values) is bool(operand)
    if operator == "matches":
        pattern = re.compile(operand)
        return any(pattern.search(text) for text in _strings(values))
    if operator == "mentions":
        texts = set(_strings(values))
        return all(item in texts for item in operand)
    if operator == "longer_than":
        limit = prometheus_duration_s(operand) or 0.0
        return any(
            isinstance(value, str) and (prometheus_duration_s(value) or 0.0) > limit for value in values
        )
    raise ValueError(f"unknown operator {operator}")  # pragma: no cover - the model allows no other


def _same(value: Any, expected: Any) -> bool:
    # YAML's false and the API's false are the same; "false" (a ConfigMap
    # string) is not the boolean false, as in kubectl's eyes.
    if isinstance(value, bool) or isinstance(expected, bool):
        return type(value) is type(expected) and value == expected
    return bool(value == expected)


def _is_empty(value: Any) -> bool:
    if value is None or value in ("", [], {}):
        return True
    if isinstance(value, dict):
        return all(_is_empty(inner) for inner in value.values())
    if isinstance(value, list):
        return all(_is_empty(inner) for inner in value)
    return False


def _strings(values: list[Any]) -> Iterator[str]:
    for value in values:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            yield from _strings(list(value.values()))
        elif isinstance(value, list):
            yield from _strings(value)


# --- words for evidence -----------------------------------------------------------


def describe(condition: Condition | AnyCondition) -> str:
    """``data.policy-audit-mode ≠ "true"``: the condition in a few words."""
    if isinstance(condition, AnyCondition):
        return "(" + " or ".join(describe(inner) for inner in condition.any) + ")"
    every = "every " if condition.each else ""
    return f"{every}{condition.path} {_operator_words(condition.operator, condition.operand)}"


def _operator_words(operator: str, operand: Any) -> str:  # noqa: PLR0911 - one phrase per operator
    if operator == "equals":
        return f"= {_show(operand)}"
    if operator == "not_equals":
        return f"≠ {_show(operand)}"
    if operator in ("in", "not_in"):
        return f"{operator.replace('_', ' ')} {_show(operand)}"
    if operator == "exists":
        return "is set" if operand else "is not set"
    if operator == "empty":
        return "is empty" if operand else "is not empty"
    if operator == "matches":
        return f"matches /{operand}/"
    if operator == "mentions":
        return f"names {', '.join(str(item) for item in operand)}"
    return f"longer than {operand}"


def describe_all(where: Sequence[Condition | AnyCondition]) -> str:
    return " and ".join(describe(condition) for condition in where)


def shown_at(obj: KubeObject, condition: Condition | AnyCondition) -> str:
    """What ``obj`` holds where the condition looks: ``data.policy-audit-mode = "true"``."""
    if isinstance(condition, AnyCondition):
        return "; ".join(dict.fromkeys(shown_at(obj, inner) for inner in condition.any))
    values = values_at(obj, condition.path)
    if not values:
        return f"{condition.path} is not set"
    if condition.operator in ("matches", "mentions"):
        # A whole subtree would drown the point: show only the strings that matter.
        return _strings_shown(values, condition)
    if len(values) == 1:
        return f"{condition.path} = {_show(values[0])}"
    return f"{condition.path} = {_show(values)}"


def _strings_shown(values: list[Any], condition: Condition) -> str:
    texts = list(dict.fromkeys(_strings(values)))
    if condition.operator == "matches":
        pattern = re.compile(condition.operand)
        hits = [text for text in texts if pattern.search(text)]
        if not hits:
            return f"no string under {condition.path} matches /{condition.operand}/"
        return f"{condition.path} has {_show(hits[:3])}"
    present = [item for item in condition.operand if item in texts]
    absent = [item for item in condition.operand if item not in texts]
    named = f"names {', '.join(present)}" if present else "names none of them"
    return f"{condition.path} {named}" + (f"; not {', '.join(absent)}" if absent else "")


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= _MAX_SHOWN_CHARS else text[: _MAX_SHOWN_CHARS - 1] + "…"
