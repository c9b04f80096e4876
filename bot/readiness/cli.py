"""``readybot readiness``: the scorecard in a terminal, or as JSON, with an exit code that can gate CI.

Exit codes: 0 no criterion fails; 1 at least one fails (with ``--strict``,
an unknown one counts too); 2 an unknown category/phase/step/criterion was
asked for; 78 the configuration or the plan is invalid (or the kubeconfig
cannot be loaded).
Nothing is stored: the bot's own runs (and its change and trend) stay the
bot's. The dead-man's switch is only known to the running bot, so its
criterion is unknown here.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from bot.errors import ConfigError, UserError
from bot.readiness.engine import Scorecard, Tally
from bot.readiness.probes import ProbeEnv
from bot.readiness.prometheus import PrometheusApi
from bot.readiness.render import detail_message, status_message
from bot.readiness.results import ICONS, Mark
from bot.readiness.service import ReadinessService, Report
from bot.readiness.targets import resolve
from bot.render.templates import Templates
from config.readiness_plan import Plan, load_plan

if TYPE_CHECKING:
    from bot.kube.client import KubeApi
    from config.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78


def run(
    config: Path | None,
    *,
    as_json: bool = False,
    strict: bool = False,
    target: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Load, probe, print; the exit code."""
    from config.loading import load_settings

    out = out or sys.stdout
    err = err or sys.stderr
    try:
        settings = load_settings(config)
        plan = load_plan(settings.readiness.plan_path)
        chosen = resolve(plan, target) if target else None
        kube = _kube(settings)
    except ConfigError as error:
        print("configuration invalid:", file=err)
        for problem in error.problems:
            print(f"  {problem}", file=err)
        return EXIT_CONFIG
    except UserError as error:
        print(f"readiness: {error}", file=err)
        return EXIT_USAGE
    report = asyncio.run(_probe(settings, plan, kube))
    card = report.scorecard
    if as_json:
        json.dump(scorecard_json(card), out, indent=2, ensure_ascii=False)
        out.write("\n")
    else:
        templates = Templates()
        message = (
            detail_message(templates, report, chosen) if chosen else status_message(templates, report, None)
        )
        out.write(message.plain + "\n")
        if chosen is None:
            out.write(_not_passing(card))
    failing = card.overall.failed + (card.overall.unknown if strict else 0)
    return EXIT_FAILED if failing else EXIT_OK


async def _probe(settings: Settings, plan: Plan, kube: KubeApi | None) -> Report:
    readiness = settings.readiness
    alertmanager_url = readiness.alertmanager_url or settings.alertmanager.api_url
    from bot.alertmanager.api import AlertmanagerApi
    from bot.readiness.feature import gated_applications

    def environment() -> ProbeEnv:
        return ProbeEnv(
            kube=kube,
            prometheus=PrometheusApi(str(readiness.prometheus_url), timeout_s=readiness.probe_timeout_s)
            if readiness.prometheus_url
            else None,
            alertmanager=AlertmanagerApi(str(alertmanager_url), timeout_s=readiness.probe_timeout_s)
            if alertmanager_url
            else None,
            gated_apps=gated_applications(settings),
            clock=time.time,
        )

    service = ReadinessService(plan, readiness, env_factory=environment, clock=time.time)
    try:
        return await service.run("command")
    finally:
        if kube is not None:
            await kube.close()


def _kube(settings: Settings) -> KubeApi | None:
    if not settings.kubernetes.enabled:
        return None
    from bot.kube.client import KubeApi

    # A kubeconfig that cannot be loaded raises KubeConfigError, a ConfigError (exit 78).
    return KubeApi.from_settings(settings.kubernetes)


def _not_passing(card: Scorecard) -> str:
    lines = []
    for criterion_id, result in card.results.items():
        if result.mark in (Mark.FAIL, Mark.UNKNOWN):
            text = next(c.text for _, _, c in card.plan.criteria() if c.id == criterion_id)
            lines.append(f"{ICONS[result.mark]} {criterion_id} {text}")
            lines.append(f"    found: {result.found}")
            lines.append(f"    expected: {result.expected}")
    return ("\nNot passing:\n" + "\n".join(lines) + "\n") if lines else ""


def scorecard_json(card: Scorecard) -> dict[str, Any]:
    """The whole scorecard for machines: tallies per group and every criterion with its evidence."""
    plan = card.plan
    criteria = []
    for phase, step, criterion in plan.criteria():
        result = card.results[criterion.id]
        criteria.append(
            {
                "id": criterion.id,
                "text": criterion.text,
                "phase": phase.id,
                "step": step.id,
                "category": plan.category_of(step, criterion),
                "mark": result.mark.value,
                "found": result.found,
                "expected": result.expected,
            }
        )
    return {
        "plan": plan.title,
        "at": datetime.fromtimestamp(card.at, UTC).isoformat(),
        "score": card.overall.score,
        "coverage": card.overall.coverage,
        "overall": _tally(card.overall),
        "notices": list(card.notices),
        "categories": {c.id: {"name": c.name, **_tally(card.categories[c.id])} for c in plan.categories},
        "phases": {p.id: {"title": p.title, **_tally(card.phases[p.id])} for p in plan.phases},
        "steps": {
            s.id: {"title": s.title, "deferred": s.deferred, **_tally(card.steps[s.id])}
            for p in plan.phases
            for s in p.steps
        },
        "criteria": criteria,
    }


def _tally(tally: Tally) -> dict[str, Any]:
    return {
        "passed": tally.passed,
        "failed": tally.failed,
        "unknown": tally.unknown,
        "manual": tally.manual,
        "mark": tally.mark,
    }
