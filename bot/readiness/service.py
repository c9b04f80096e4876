"""Runs the plan's probes, scores, compares with the previous run, stores. Used by the commands,
the digest and (without a store) the CLI.

One run per trigger at a time: a second ``!readiness status`` while a run is
in flight gets that run's report instead of probing the cluster twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from bot.readiness.engine import Change, CriterionResult, Scorecard, compare, score
from bot.readiness.probes import ProbeEnv, run_plan
from bot.readiness.store import ReadinessRepo, StoredResult, StoredRun
from config.readiness import ReadinessSettings
from config.readiness_plan import Plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Report:
    scorecard: Scorecard
    change: Change
    # None when nothing was stored (the CLI).
    run_id: int | None = None


class ReadinessService:
    def __init__(
        self,
        plan: Plan,
        settings: ReadinessSettings,
        *,
        env_factory: Callable[[], ProbeEnv],
        clock: Callable[[], float],
        repo: ReadinessRepo | None = None,
    ) -> None:
        self.plan = plan
        self.settings = settings
        self._env_factory = env_factory
        self._clock = clock
        self._repo = repo
        self._inflight: dict[str, asyncio.Task[Report]] = {}

    async def run(self, trigger: str = "command") -> Report:
        """Probe, score, compare and store; concurrent calls with the same trigger share one run."""
        task = self._inflight.get(trigger)
        if task is None or task.done():
            task = asyncio.create_task(self._run(trigger), name=f"readiness-{trigger}")
            self._inflight[trigger] = task
            task.add_done_callback(lambda done: self._forget(trigger, done))
        # Shielded: a cancelled command must not cancel the run others wait for.
        return await asyncio.shield(task)

    def _forget(self, trigger: str, done: asyncio.Task[Report]) -> None:
        # Only this run: a newer one may already have taken its place.
        if self._inflight.get(trigger) is done:
            del self._inflight[trigger]

    async def _run(self, trigger: str) -> Report:
        env = self._env_factory()
        outcomes = await run_plan(self.plan, env, timeout_s=self.settings.probe_timeout_s)
        results = [
            CriterionResult(o.criterion_id, o.result.mark, o.result.found, o.result.expected, o.result.causes)
            for o in outcomes
        ]
        scorecard = score(self.plan, results, self._clock())
        slowest = max(outcomes, key=lambda o: o.seconds, default=None)
        log.info(
            "readiness run (%s): %d passed, %d failed, %d unknown, %d manual; slowest %s %.2f s",
            trigger,
            scorecard.overall.passed,
            scorecard.overall.failed,
            scorecard.overall.unknown,
            scorecard.overall.manual,
            slowest.criterion_id if slowest else "-",
            slowest.seconds if slowest else 0.0,
        )
        if self._repo is None:
            return Report(scorecard, compare(scorecard, None, None, None))
        # The digest says what changed since the last digest; a command, since the last run.
        previous = await self._repo.latest(trigger="digest" if trigger == "digest" else None)
        marks = await self._repo.marks(previous.id) if previous is not None else None
        change = compare(
            scorecard,
            marks,
            previous.at if previous is not None else None,
            previous.overall if previous is not None else None,
        )
        run_id = await self._repo.save(scorecard, trigger=trigger, keep=self.settings.history_runs)
        return Report(scorecard, change, run_id)

    async def history(self) -> list[StoredRun]:
        """The stored runs the trend chart shows, oldest first."""
        if self._repo is None:
            return []
        return await self._repo.recent(self.settings.trend_runs)

    async def last_result(self, criterion_id: str) -> StoredResult | None:
        return None if self._repo is None else await self._repo.last_result(criterion_id)

    async def latest_run(self) -> StoredRun | None:
        return None if self._repo is None else await self._repo.latest()
