"""Probes that ask the monitoring stack: Prometheus queries and rules, Alertmanager's configuration."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeGuard

from bot.readiness.alertmanager_config import AlertmanagerConfigError, parse_config
from bot.readiness.causes import general
from bot.readiness.results import ProbeResult
from config.readiness_plan import AlertmanagerProbe, Probe, PrometheusProbe, PrometheusRuleProbe

if TYPE_CHECKING:
    # Annotations only: commands reach this module and must not load aiohttp.
    from bot.readiness.probes import ProbeEnv
    from bot.readiness.prometheus import AlertingRule, Sample

MonitoringProbe = PrometheusProbe | PrometheusRuleProbe | AlertmanagerProbe
_MAX_SAMPLES_SHOWN = 3
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
}
_NO_PROMETHEUS = "Prometheus is not configured (readiness.prometheus_url)"
_NO_ALERTMANAGER = "Alertmanager is not configured (readiness.alertmanager_url or alertmanager.api_url)"


def handles(probe: Probe) -> TypeGuard[MonitoringProbe]:
    return isinstance(probe, PrometheusProbe | PrometheusRuleProbe | AlertmanagerProbe)


def describe(probe: MonitoringProbe) -> str:
    if isinstance(probe, PrometheusProbe):
        which = "every sample" if probe.match == "all" else "a sample"
        return f"Prometheus: {' '.join(probe.query.split())} gives {which} {probe.op} {probe.value:g}"
    if isinstance(probe, PrometheusRuleProbe):
        names = " or ".join(probe.alert)
        expr = f" (or any alert with expr {normalize_expr(probe.expr)})" if probe.expr else ""
        return f"Prometheus has loaded the alerting rule {names}{expr}"
    if probe.route_labels:
        labels = ",".join(f"{name}={value}" for name, value in probe.route_labels.items())
        return (
            f"Alertmanager routes an alert with {labels} to at least {probe.min_receivers} "
            "receivers that deliver"
        )
    return f"Alertmanager has at least {probe.min_receivers} receivers that deliver somewhere"


async def run(probe: MonitoringProbe, env: ProbeEnv) -> ProbeResult:
    expected = describe(probe)
    if isinstance(probe, PrometheusProbe):
        return await _query(probe, env, expected)
    if isinstance(probe, PrometheusRuleProbe):
        return await _rule(probe, env, expected)
    return await _alertmanager(probe, env, expected)


async def _query(probe: PrometheusProbe, env: ProbeEnv, expected: str) -> ProbeResult:
    prometheus = env.prometheus
    if prometheus is None:
        return ProbeResult.unknown(_NO_PROMETHEUS, expected, [general(_NO_PROMETHEUS)])
    samples: list[Sample] = await env.cache.get(("query", probe.query), lambda: prometheus.query(probe.query))
    if not samples:
        found = "the query returned no series"
        return (
            ProbeResult.passed(found, expected)
            if probe.empty == "pass"
            else ProbeResult.failed(found, expected)
        )
    compare = _COMPARE[probe.op]
    # NaN compares false with everything, as in PromQL.
    verdicts = [not math.isnan(sample.value) and compare(sample.value, probe.value) for sample in samples]
    ok = all(verdicts) if probe.match == "all" else any(verdicts)
    shown = "; ".join(sample.describe() for sample in samples[:_MAX_SAMPLES_SHOWN])
    more = f" … and {len(samples) - _MAX_SAMPLES_SHOWN} more" if len(samples) > _MAX_SAMPLES_SHOWN else ""
    found = f"{len(samples)} series: {shown}{more}"
    return ProbeResult.passed(found, expected) if ok else ProbeResult.failed(found, expected)


async def _rule(probe: PrometheusRuleProbe, env: ProbeEnv, expected: str) -> ProbeResult:
    prometheus = env.prometheus
    if prometheus is None:
        return ProbeResult.unknown(_NO_PROMETHEUS, expected, [general(_NO_PROMETHEUS)])
    rules: list[AlertingRule] = await env.cache.get(("rules",), prometheus.alerting_rules)
    wanted_expr = normalize_expr(probe.expr) if probe.expr else None
    for rule in rules:
        if rule.name in probe.alert or (
            wanted_expr is not None and normalize_expr(rule.query) == wanted_expr
        ):
            health = "" if rule.health in ("ok", "unknown") else f", health {rule.health}"
            return ProbeResult.passed(
                f"alerting rule {rule.name} (group {rule.group}): {rule.query}{health}", expected
            )
    return ProbeResult.failed(f"not among the {len(rules)} alerting rules Prometheus has loaded", expected)


def normalize_expr(expr: str) -> str:
    """An expression without white space, so the plan's and Prometheus' spellings compare equal."""
    return re.sub(r"\s+", "", expr)


async def _alertmanager(probe: AlertmanagerProbe, env: ProbeEnv, expected: str) -> ProbeResult:
    alertmanager = env.alertmanager
    if alertmanager is None:
        return ProbeResult.unknown(_NO_ALERTMANAGER, expected, [general(_NO_ALERTMANAGER)])
    status: dict[str, Any] = await env.cache.get(("alertmanager-status",), alertmanager.status)
    try:
        config = parse_config(status)
    except AlertmanagerConfigError as error:
        return ProbeResult.unknown(f"Alertmanager: {error}", expected)
    if probe.route_labels:
        labels = ",".join(f"{name}={value}" for name, value in probe.route_labels.items())
        reached = config.reached_by(dict(probe.route_labels))
        delivering = [receiver for receiver in reached if receiver.delivers]
        found = f"an alert with {labels} reaches " + (
            ", ".join(receiver.describe() for receiver in reached) or "no receiver"
        )
    else:
        delivering = config.delivering()
        silent = [name for name, receiver in config.receivers.items() if not receiver.delivers]
        found = f"{len(delivering)} receivers deliver: " + (
            ", ".join(receiver.describe() for receiver in delivering) or "none"
        )
        if silent:
            found += f" (without integrations: {', '.join(silent)})"
    ok = len(delivering) >= probe.min_receivers
    return ProbeResult.passed(found, expected) if ok else ProbeResult.failed(found, expected)
