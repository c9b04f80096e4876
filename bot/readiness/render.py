"""Scorecards as messages (``readiness_*`` templates): the compact status, a group's details,
an explanation, the digest. The CLI prints the plain text of the same templates.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.readiness.engine import Change, Scorecard, Tally, ids_text, percent
from bot.readiness.probes import describe_probe, leaf_probes
from bot.readiness.results import ICONS, Mark
from bot.readiness.service import Report
from bot.readiness.store import StoredResult
from bot.readiness.targets import Target, criteria_of, steps_of
from bot.render.message import Message
from bot.render.templates import Templates
from config.readiness_plan import ManualProbe, Plan

GROUP_ICONS = {"pass": "✅", "fail": "❌", "unknown": "❔", "manual": "📝", "none": "—"}
DEFERRED_ICON = "⏸"
# Evidence longer than this is cut in chat (the CLI's --json has it whole).
_MAX_EVIDENCE_CHARS = 400


def when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def count_text(tally: Tally) -> str:
    """``5/7``, ``5/7 +2 manual``, ``3 manual`` or ``no criteria``."""
    if not tally.automatic and not tally.manual:
        return "no criteria"
    if not tally.automatic:
        return f"{tally.manual} manual"
    manual = f" +{tally.manual} manual" if tally.manual else ""
    return f"{tally.passed}/{tally.automatic}{manual}"


def status_context(report: Report, prefix: str | None) -> dict[str, Any]:
    """What the compact scorecard (and the digest) show; ``prefix`` None for a terminal (no hints)."""
    card = report.scorecard
    plan = card.plan
    overall = card.overall
    categories = [
        {
            "icon": GROUP_ICONS[card.categories[c.id].mark],
            "name": c.name,
            "count": count_text(card.categories[c.id]),
        }
        for c in plan.categories
    ]
    phases = []
    for phase in plan.phases:
        steps = [
            {
                "id": step.id,
                "icon": DEFERRED_ICON
                if step.deferred and not step.criteria
                else GROUP_ICONS[card.steps[step.id].mark],
                "count": "deferred"
                if step.deferred and not step.criteria
                else count_text(card.steps[step.id]),
            }
            for step in phase.steps
        ]
        tally = card.phases[phase.id]
        phases.append(
            {
                "icon": GROUP_ICONS[tally.mark],
                "id": phase.id,
                "title": phase.title,
                "count": count_text(tally),
                "steps": steps,
            }
        )
    return {
        "title": plan.title,
        "at": when(card.at),
        "score": percent(overall.score),
        "passed": overall.passed,
        "automatic": overall.automatic,
        "coverage": percent(overall.coverage),
        "checked": overall.checked,
        "manual": overall.manual,
        "notices": list(card.notices),
        "categories": categories,
        "phases": phases,
        # Without a store (the CLI) there is nothing to compare with.
        "change": change_context(report.change, card) if report.run_id is not None else None,
        "prefix": prefix,
    }


def change_context(change: Change, card: Scorecard) -> dict[str, Any]:
    if change.first_run or change.since is None:
        return {"first": True, "line": "first run: nothing to compare with yet"}
    delta = change.passed_delta(card.overall)
    # What now fails leads: it is what the reader must act on.
    failing = change.to(Mark.FAIL)
    parts = [f"{ICONS[Mark.FAIL]} now fail: {ids_text(failing)}"] if failing else []
    parts.append(f"{delta:+d} passing" if delta else "no change in passing criteria")
    for mark, words in ((Mark.PASS, "now pass"), (Mark.UNKNOWN, "now unknown")):
        ids = change.to(mark)
        if ids:
            parts.append(f"{ICONS[mark]} {words}: {ids_text(ids)}")
    return {
        "first": False,
        "since": when(change.since),
        "line": f"since {when(change.since)}: " + "; ".join(parts),
        "transitions": [
            {
                "id": t.criterion_id,
                "before": ICONS[t.before],
                "after": ICONS[t.after],
                "text": _criterion_text(card.plan, t.criterion_id),
            }
            for t in change.transitions
        ],
    }


def status_message(templates: Templates, report: Report, prefix: str | None) -> Message:
    return templates.render("readiness_status", **status_context(report, prefix))


def digest_message(templates: Templates, report: Report, prefix: str) -> Message:
    return templates.render("readiness_digest", **status_context(report, prefix))


def detail_message(templates: Templates, report: Report, target: Target) -> Message:
    """A category, phase, step or criterion: each criterion with its mark and evidence."""
    return templates.render("readiness_detail", **detail_context(report.scorecard, target))


def detail_context(card: Scorecard, target: Target) -> dict[str, Any]:
    plan = card.plan
    chosen = criteria_of(plan, target)
    tally = Tally()
    for _, _, criterion in chosen:
        tally = tally.add(card.results[criterion.id].mark)
    deferred = {step.id: step for _, step in steps_of(plan, target) if step.deferred and not step.criteria}
    items: list[dict[str, Any]] = []
    current_step = None
    for phase in plan.phases:
        for step in phase.steps:
            in_target = step.id in deferred or any(s.id == step.id for _, s, _ in chosen)
            if not in_target:
                continue
            if target.kind != "criterion" and step.id != current_step:
                current_step = step.id
                items.append(
                    {
                        "kind": "step",
                        "id": step.id,
                        "title": step.title,
                        "icon": DEFERRED_ICON
                        if step.id in deferred
                        else GROUP_ICONS[card.steps[step.id].mark],
                        "note": (f"deferred: {step.recommendation}" if step.id in deferred else None),
                    }
                )
            for _, s, criterion in chosen:
                if s.id != step.id:
                    continue
                result = card.results[criterion.id]
                items.append(
                    {
                        "kind": "criterion",
                        "id": criterion.id,
                        "icon": ICONS[result.mark],
                        "text": criterion.text,
                        "manual": result.mark is Mark.MANUAL,
                        "found": _clip(result.found),
                        "expected": _clip(result.expected),
                    }
                )
    return {
        "title": target.title,
        "icon": GROUP_ICONS[tally.mark],
        "count": count_text(tally),
        "note": _group_note(plan, target),
        "items": items,
        "at": when(card.at),
    }


def explain_message(
    templates: Templates, plan: Plan, target: Target, last: dict[str, StoredResult | None], prefix: str
) -> Message:
    """What each criterion checks, what passes, how to fix it, and its last stored result."""
    criteria = []
    for _, step, criterion in criteria_of(plan, target):
        stored = last.get(criterion.id)
        checks = [
            ("a person confirms: " + probe.evidence)
            if isinstance(probe, ManualProbe)
            else describe_probe(probe)
            for probe in leaf_probes(criterion.probe)
        ]
        criteria.append(
            {
                "id": criterion.id,
                "text": criterion.text,
                "step": f"{step.id} {step.title}",
                "category": plan.category(plan.category_of(step, criterion)).name,
                "how": _combination(criterion.probe.kind),
                "checks": checks,
                "manual": isinstance(criterion.probe, ManualProbe),
                "fix": criterion.fix,
                "plan_done": criterion.plan.done,
                "plan_note": criterion.plan.note,
                "last": None
                if stored is None
                else {
                    "icon": ICONS[stored.result.mark],
                    "mark": stored.result.mark.value,
                    "found": _clip(stored.result.found),
                    "when": when(stored.at),
                },
            }
        )
    deferred = [
        {"id": step.id, "title": step.title, "recommendation": step.recommendation}
        for _, step in steps_of(plan, target)
        if step.deferred and not step.criteria
    ]
    return templates.render(
        "readiness_explain", title=target.title, criteria=criteria, deferred=deferred, prefix=prefix
    )


def _combination(kind: str) -> str:
    return {"all": "all of these must hold", "any": "one of these suffices"}.get(kind, "")


def _group_note(plan: Plan, target: Target) -> str | None:
    if target.kind == "category":
        category = plan.category(target.id)
        parts = [
            f"rated {category.rating}" if category.rating else None,
            f"gaps: {category.gaps}" if category.gaps else None,
        ]
        return "; ".join(part for part in parts if part) or None
    for phase in plan.phases:
        if target.kind == "phase" and phase.id == target.id:
            return phase.goal
        for step in phase.steps:
            if target.kind == "step" and step.id == target.id:
                return f"before: {step.current_state}" if step.current_state else None
    return None


def _criterion_text(plan: Plan, criterion_id: str) -> str:
    return next((c.text for _, _, c in plan.criteria() if c.id == criterion_id), "")


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_EVIDENCE_CHARS else text[: _MAX_EVIDENCE_CHARS - 1] + "…"
