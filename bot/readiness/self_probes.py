"""Probes of readybot's own state: the dead-man's switch hears the Watchdog, and the gates are set."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from bot.readiness.causes import general
from bot.readiness.results import ProbeResult
from config.durations import format_duration
from config.readiness_plan import Probe, ReadybotProbe

if TYPE_CHECKING:
    from bot.deadman.switch import SourceView
    from bot.drills.service import PassedDrill
    from bot.readiness.probes import ProbeEnv
    from config.deadman import DeadmanSettings


class WatchdogSource(Protocol):
    """What ``bot.deadman.switch.DeadmansSwitch`` offers: its settings and each source's state."""

    settings: DeadmanSettings

    async def status(self) -> Sequence[SourceView]: ...


class DrillHistory(Protocol):
    """What ``bot.drills.service.DrillService`` offers: the last restore drill that passed."""

    async def last_passed(self) -> PassedDrill | None: ...


def describe(probe: Probe) -> str:
    assert isinstance(probe, ReadybotProbe)
    if probe.check == "watchdog":
        return "readybot's dead-man's switch heard a Watchdog heartbeat within its threshold"
    if probe.check == "restore_drill":
        assert probe.max_age is not None
        seconds = probe.max_age.total_seconds()
        age = f"{int(seconds // 86_400)}d" if seconds % 86_400 == 0 else format_duration(probe.max_age)
        return f"a readybot restore drill passed within {age} (!restore-drill)"
    return f"readybot gates the syncs of {', '.join(probe.apps)} (approvals.apps)"


async def run(probe: Probe, env: ProbeEnv) -> ProbeResult:
    assert isinstance(probe, ReadybotProbe)
    expected = describe(probe)
    if probe.check == "watchdog":
        return await _watchdog(env, expected)
    if probe.check == "restore_drill":
        return await _restore_drill(probe, env, expected)
    return _gates(probe, env, expected)


async def _restore_drill(probe: ReadybotProbe, env: ProbeEnv, expected: str) -> ProbeResult:
    """The last passed drill (date, backup, evidence) from the store; failed when none or too old."""
    if env.drills is None:
        reason = "restore drills are off (velero.drills.enabled)"
        return ProbeResult.unknown(reason, expected, [general(reason)])
    last = await env.drills.last_passed()
    if last is None:
        return ProbeResult.failed("no restore drill has passed yet", expected)
    assert probe.max_age is not None
    age = env.clock() - last.ended_at
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(last.ended_at))
    of = f"{last.backup} (schedule {last.schedule})" if last.schedule else last.backup
    found = f"drill {last.id} of {of} passed {when} ({format_duration(max(age, 0.0))} ago): {last.evidence}"
    if age > probe.max_age.total_seconds():
        return ProbeResult.failed(found, expected)
    return ProbeResult.passed(found, expected)


async def _watchdog(env: ProbeEnv, expected: str) -> ProbeResult:
    switch = env.watchdog
    if switch is None:
        return ProbeResult.unknown("only the running bot knows its Watchdog heartbeats", expected)
    if not switch.settings.enabled:
        reason = "the dead-man's switch is off (deadman.enabled)"
        return ProbeResult.unknown(reason, expected, [general(reason)])
    views = await switch.status()
    if not views:
        return ProbeResult.failed("no Watchdog heartbeat received yet", expected)
    now = env.clock()
    threshold = switch.settings.threshold_s
    fresh = [
        view
        for view in views
        if view.state.value == "up" and view.last_seen is not None and now - view.last_seen <= threshold
    ]
    described = "; ".join(
        f"{view.source}: {view.state.value}, last heartbeat "
        + ("never" if view.last_seen is None else f"{format_duration(now - view.last_seen)} ago")
        for view in (fresh or views)
    )
    return ProbeResult.passed(described, expected) if fresh else ProbeResult.failed(described, expected)


def _gates(probe: ReadybotProbe, env: ProbeEnv, expected: str) -> ProbeResult:
    gated = env.gated_apps
    if gated is None:
        return ProbeResult.unknown("the approval gates are not known here", expected)
    missing = [app for app in probe.apps if app not in gated]
    if missing:
        return ProbeResult.failed(f"not gated: {', '.join(missing)}", expected)
    return ProbeResult.passed(f"gated: {', '.join(probe.apps)}", expected)
