"""The trend chart's data: the overall and per-category scores of the stored runs. Pure.

Drawing is one small module (``chart_png``, on Pillow), so what is plotted is
tested without pixels and the backend can be swapped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.readiness.store import StoredRun
from config.readiness_plan import Plan

# Colour-blind-safe (Okabe-Ito), overall first in black.
OVERALL_COLOUR = (0, 0, 0)
PALETTE = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (204, 121, 167),
    (0, 114, 178),
    (213, 94, 0),
    (240, 228, 66),
    (120, 120, 120),
)

Colour = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    # Percent 0-100 per run; None where nothing could be scored (no automatic criteria).
    values: tuple[float | None, ...]
    colour: Colour
    width: int


@dataclass(frozen=True, slots=True)
class ChartSpec:
    title: str
    # One label per run, oldest first.
    labels: tuple[str, ...]
    series: tuple[Series, ...]

    @property
    def runs(self) -> int:
        return len(self.labels)


def trend_spec(plan: Plan, runs: Sequence[StoredRun]) -> ChartSpec:
    """Overall score and each category's score per run; categories never scored are left out."""
    labels = tuple(datetime.fromtimestamp(run.at, UTC).strftime("%m-%d %H:%M") for run in runs)
    series = [Series("overall", tuple(_percent(run.overall.score) for run in runs), OVERALL_COLOUR, 4)]
    for index, category in enumerate(plan.categories):
        values = tuple(
            _percent(run.categories[category.id].score) if category.id in run.categories else None
            for run in runs
        )
        if any(value is not None for value in values):
            series.append(Series(category.name, values, PALETTE[index % len(PALETTE)], 2))
    return ChartSpec(title=f"{plan.title}: score per run (%)", labels=labels, series=tuple(series))


def _percent(score: float | None) -> float | None:
    return None if score is None else round(score * 100, 1)
