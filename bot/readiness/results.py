"""What a probe says about a criterion: a mark and its evidence (found vs expected)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Mark(StrEnum):
    PASS = "pass"  # noqa: S105 (a check result)
    FAIL = "fail"
    # The probe could not run (unreachable, forbidden, missing CRD, timeout):
    # never counted as a pass, and never as a fail either.
    UNKNOWN = "unknown"
    # Not checked by the bot; a person confirms it.
    MANUAL = "manual"


ICONS = {Mark.PASS: "✅", Mark.FAIL: "❌", Mark.UNKNOWN: "❔", Mark.MANUAL: "📝"}


@dataclass(frozen=True, slots=True)
class Cause:
    """Why a criterion is unknown, for the scorecard's ⚠️ lines: criteria are grouped by ``headline``.

    ``missing`` names a resource type the cluster does not serve
    (``schedules.velero.io``); the missing types of one headline ("Velero is
    not installed") are listed together. ``general`` causes (the cluster,
    a missing CRD, RBAC, something not configured) get a line even for one
    criterion; the others (evidence of one probe) only when shared.
    """

    headline: str
    missing: str = ""
    general: bool = False


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """``found``: what the probe saw (or why it could not look); ``expected``: what passes.

    ``causes``: why an unknown result is unknown (empty for the other marks).
    """

    mark: Mark
    found: str
    expected: str
    causes: tuple[Cause, ...] = field(default=())

    @classmethod
    def passed(cls, found: str, expected: str) -> ProbeResult:
        return cls(Mark.PASS, found, expected)

    @classmethod
    def failed(cls, found: str, expected: str) -> ProbeResult:
        return cls(Mark.FAIL, found, expected)

    @classmethod
    def unknown(cls, reason: str, expected: str, causes: Sequence[Cause] | None = None) -> ProbeResult:
        """Unknown because of ``causes`` (by default the reason itself, a cause of this probe only)."""
        return cls(Mark.UNKNOWN, reason, expected, tuple(causes) if causes else (Cause(reason),))


def causes_of(results: Iterable[ProbeResult]) -> tuple[Cause, ...]:
    """The causes of the unknown results among ``results``, each once, in order."""
    return tuple(
        dict.fromkeys(cause for result in results if result.mark is Mark.UNKNOWN for cause in result.causes)
    )


def all_of(results: Sequence[ProbeResult]) -> ProbeResult:
    """Kleene AND: a fail decides; else any unknown leaves it unknown; else pass."""
    expected = _joined(result.expected for result in results)
    for mark in (Mark.FAIL, Mark.UNKNOWN):
        chosen = [result for result in results if result.mark is mark]
        if chosen:
            return ProbeResult(mark, _joined(result.found for result in chosen), expected, causes_of(chosen))
    return ProbeResult.passed(_joined(result.found for result in results), expected)


def any_of(results: Sequence[ProbeResult]) -> ProbeResult:
    """Kleene OR: a pass decides; else any unknown leaves it unknown; else fail."""
    expected = _joined((result.expected for result in results), " — or — ")
    passing = [result for result in results if result.mark is Mark.PASS]
    if passing:
        return ProbeResult.passed(passing[0].found, expected)
    unknown = [result for result in results if result.mark is Mark.UNKNOWN]
    if unknown:
        # The unknown ones might have passed; the fails are context.
        return ProbeResult.unknown(_joined(result.found for result in results), expected, causes_of(unknown))
    return ProbeResult.failed(_joined(result.found for result in results), expected)


def _joined(texts: Iterable[str], separator: str = "; ") -> str:
    # Five probes that could not reach the cluster say so once.
    return separator.join(dict.fromkeys(texts))
