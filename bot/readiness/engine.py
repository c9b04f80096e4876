"""The scorecard: marks tallied per category, phase and step, the score, the coverage, the change. Pure.

Scoring rules:

- A criterion is pass, fail, unknown (the probe could not run) or manual
  (a person confirms it; the bot does not check it).
- The **score** is passed / automatic criteria, where automatic = pass +
  fail + unknown: an unknown is never a pass, so a cluster the bot cannot
  reach scores low rather than high.
- The **coverage** is checked / automatic, where checked = pass + fail: how
  much of what the bot could check it actually checked.
- Manual criteria are counted apart and never change either number.
- A group's mark: ❌ when any criterion fails, else ❔ when any is unknown,
  else ✅ when at least one passes, else 📝 (manual only), ⏸ (deferred step)
  or — (nothing to check).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bot.readiness.results import Cause, Mark
from config.readiness_plan import Plan

# A cause of "unknown" of one probe's own (not general) shared by this many criteria becomes a notice.
_NOTICE_MIN_CRITERIA = 2
_MAX_NOTICES = 5
_UNREACHABLE = "cluster unreachable"


@dataclass(frozen=True, slots=True)
class CriterionResult:
    criterion_id: str
    mark: Mark
    found: str
    expected: str
    # Why it is unknown (see ``results.Cause``); not stored, so empty for stored results.
    causes: tuple[Cause, ...] = ()


@dataclass(frozen=True, slots=True)
class Tally:
    passed: int = 0
    failed: int = 0
    unknown: int = 0
    manual: int = 0

    def add(self, mark: Mark) -> Tally:
        return Tally(
            self.passed + (mark is Mark.PASS),
            self.failed + (mark is Mark.FAIL),
            self.unknown + (mark is Mark.UNKNOWN),
            self.manual + (mark is Mark.MANUAL),
        )

    @property
    def automatic(self) -> int:
        """Criteria the bot checks (whether or not it could)."""
        return self.passed + self.failed + self.unknown

    @property
    def checked(self) -> int:
        return self.passed + self.failed

    @property
    def score(self) -> float | None:
        return self.passed / self.automatic if self.automatic else None

    @property
    def coverage(self) -> float | None:
        return self.checked / self.automatic if self.automatic else None

    @property
    def mark(self) -> str:
        """``pass``/``fail``/``unknown``/``manual`` or ``none`` for the group as a whole."""
        if self.failed:
            return Mark.FAIL.value
        if self.unknown:
            return Mark.UNKNOWN.value
        if self.passed:
            return Mark.PASS.value
        return Mark.MANUAL.value if self.manual else "none"


@dataclass(frozen=True)
class Scorecard:
    plan: Plan
    at: float
    # In plan order.
    results: Mapping[str, CriterionResult]
    overall: Tally
    categories: Mapping[str, Tally]
    phases: Mapping[str, Tally]
    steps: Mapping[str, Tally]
    # "cluster unreachable: connection refused (31 criteria unknown)", …
    notices: tuple[str, ...] = ()

    @property
    def failed(self) -> list[CriterionResult]:
        return [result for result in self.results.values() if result.mark is Mark.FAIL]


def score(plan: Plan, results: Iterable[CriterionResult], at: float) -> Scorecard:
    """Tally the results of one run over the plan's groups."""
    by_id = {result.criterion_id: result for result in results}
    ordered: dict[str, CriterionResult] = {}
    overall = Tally()
    categories = {category.id: Tally() for category in plan.categories}
    phases = {phase.id: Tally() for phase in plan.phases}
    steps = {step.id: Tally() for phase in plan.phases for step in phase.steps}
    for phase, step, criterion in plan.criteria():
        result = by_id.get(criterion.id) or CriterionResult(
            criterion.id, Mark.UNKNOWN, "not probed in this run", "a result"
        )
        ordered[criterion.id] = result
        overall = overall.add(result.mark)
        category = plan.category_of(step, criterion)
        categories[category] = categories[category].add(result.mark)
        phases[phase.id] = phases[phase.id].add(result.mark)
        steps[step.id] = steps[step.id].add(result.mark)
    return Scorecard(
        plan=plan,
        at=at,
        results=ordered,
        overall=overall,
        categories=categories,
        phases=phases,
        steps=steps,
        notices=notices(ordered.values()),
    )


def notices(results: Iterable[CriterionResult]) -> tuple[str, ...]:
    """Why criteria are unknown, one line per cause (an unreachable cluster first, then the most common).

    Criteria are grouped by the cause of their unknown, not by their
    evidence: "Velero is not installed: schedules.velero.io, restores.velero.io
    are not served (4 criteria unknown)". General causes (the cluster, a
    missing CRD, RBAC, something not configured) always get a line; a cause
    of one probe's own only when several criteria share it. A result without
    causes (read back from the store) counts under its evidence.
    """
    criteria: Counter[str] = Counter()
    missing: dict[str, dict[str, None]] = {}
    shown: set[str] = set()
    for result in results:
        if result.mark is not Mark.UNKNOWN:
            continue
        causes = result.causes or (Cause(result.found),)
        for headline in dict.fromkeys(cause.headline for cause in causes):
            criteria[headline] += 1
        for cause in causes:
            if cause.missing:
                missing.setdefault(cause.headline, {})[cause.missing] = None
            if cause.general or cause.headline.startswith(_UNREACHABLE):
                shown.add(cause.headline)
    ranked = sorted(
        criteria.items(), key=lambda item: (not item[0].startswith(_UNREACHABLE), -item[1], item[0])
    )
    lines = []
    for headline, count in ranked:
        if headline not in shown and count < _NOTICE_MIN_CRITERIA:
            continue
        types = list(missing.get(headline, ()))
        served = f": {', '.join(types)} {'is' if len(types) == 1 else 'are'} not served" if types else ""
        lines.append(f"{headline}{served} ({count} {'criterion' if count == 1 else 'criteria'} unknown)")
    if len(lines) > _MAX_NOTICES:
        more = len(lines) - _MAX_NOTICES + 1
        lines[_MAX_NOTICES - 1 :] = [f"… and {more} more causes (each criterion's evidence says which)"]
    return tuple(lines)


# --- change since the previous run ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transition:
    criterion_id: str
    before: Mark
    after: Mark


@dataclass(frozen=True)
class Change:
    """How this run differs from a stored earlier one."""

    since: float | None
    previous: Tally | None
    transitions: tuple[Transition, ...] = field(default=())

    @property
    def first_run(self) -> bool:
        return self.since is None

    def to(self, mark: Mark) -> list[str]:
        """Criteria that changed to ``mark``."""
        return [t.criterion_id for t in self.transitions if t.after is mark]

    def passed_delta(self, now: Tally) -> int:
        return now.passed - (self.previous.passed if self.previous else 0)


def compare(
    current: Scorecard, previous_marks: Mapping[str, Mark] | None, since: float | None, previous: Tally | None
) -> Change:
    """The criteria whose mark changed since the stored run (criteria new to the plan are left out)."""
    if previous_marks is None:
        return Change(since=None, previous=None)
    transitions = tuple(
        Transition(criterion_id, previous_marks[criterion_id], result.mark)
        for criterion_id, result in current.results.items()
        if criterion_id in previous_marks and previous_marks[criterion_id] is not result.mark
    )
    return Change(since=since, previous=previous, transitions=transitions)


def percent(value: float | None) -> str:
    return "—" if value is None else f"{round(value * 100)}%"


def ids_text(ids: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" … and {len(ids) - limit} more" if len(ids) > limit else "")
