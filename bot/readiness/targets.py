"""What a person names after ``!readiness status``/``explain``: category, phase, step or criterion. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.errors import UserError
from config.readiness_plan import Criterion, Phase, Plan, Step

TargetKind = Literal["category", "phase", "step", "criterion"]


@dataclass(frozen=True, slots=True)
class Target:
    kind: TargetKind
    id: str
    title: str


def resolve(plan: Plan, text: str) -> Target:
    """``security``, ``Cost controls``, ``infra``, ``1``, ``phase 1``, ``1.3`` or ``1.3.1``.

    A category may be given by id, by name or by the start of either, if
    only one category starts so. Raises ``UserError`` listing what exists.
    """
    wanted = " ".join(text.lower().split()).removeprefix("phase ").strip()
    for phase in plan.phases:
        if wanted == phase.id.lower():
            return Target("phase", phase.id, f"Phase {phase.id}: {phase.title}")
        for step in phase.steps:
            if wanted == step.id.lower():
                return Target("step", step.id, f"{step.id} {step.title}")
            for criterion in step.criteria:
                if wanted == criterion.id.lower():
                    return Target("criterion", criterion.id, f"{criterion.id} {criterion.text}")
    exact = [c for c in plan.categories if wanted in (c.id.lower(), c.name.lower())]
    starting = [
        c for c in plan.categories if c.id.lower().startswith(wanted) or c.name.lower().startswith(wanted)
    ]
    chosen = exact or (starting if len(starting) == 1 else [])
    if wanted and chosen:
        return Target("category", chosen[0].id, chosen[0].name)
    categories = ", ".join(category.id for category in plan.categories)
    phases = ", ".join(phase.id for phase in plan.phases)
    raise UserError(
        f"no category, phase, step or criterion {text!r}. Categories: {categories}; "
        f"phases: {phases}; steps and criteria by number, e.g. 1.3 or 1.3.1."
    )


def criteria_of(plan: Plan, target: Target) -> list[tuple[Phase, Step, Criterion]]:
    """The criteria a target covers, in plan order."""
    chosen = []
    for phase, step, criterion in plan.criteria():
        if (
            (target.kind == "category" and plan.category_of(step, criterion) == target.id)
            or (target.kind == "phase" and phase.id == target.id)
            or (target.kind == "step" and step.id == target.id)
            or (target.kind == "criterion" and criterion.id == target.id)
        ):
            chosen.append((phase, step, criterion))
    return chosen


def steps_of(plan: Plan, target: Target) -> list[tuple[Phase, Step]]:
    """The steps a target covers (deferred ones without criteria included)."""
    found = []
    for phase in plan.phases:
        for step in phase.steps:
            if (
                (target.kind == "phase" and phase.id == target.id)
                or (target.kind == "step" and step.id == target.id)
                or (target.kind == "category" and step.category == target.id and not step.criteria)
            ):
                found.append((phase, step))
    return found
