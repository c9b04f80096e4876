"""Alert groups as room messages: views for the templates, and the size rules.

Templates (overridable, see ``config.alertmanager.AlertmanagerSettings.templates_dir``):

- ``alert_group``: one group's own message (severity at a glance, summary,
  description, the labels that tell alerts apart, links);
- ``alert_thread_line``: the short line added to its thread on a change;
- ``alert_digest_line`` / ``alert_digest``: one compact line per group, and
  the digest message holding them during an alert storm.

Every text from Alertmanager is cut to a few hundred bytes before rendering,
and a group lists as many alerts as fit in ``MAX_FIELD_BYTES`` (then "… and N
more"), so no event can outgrow Matrix's 65,536-byte limit even as an
encrypted edit, which carries the text twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from markupsafe import Markup

from bot.alertmanager.groups import AlertState, GroupChange, GroupState
from bot.render.message import MAX_FIELD_BYTES, Message, clip, escaped_size
from bot.render.templates import Templates
from config.alertmanager import AlertmanagerSettings

# Room left in a field for the digest's header and footer.
DIGEST_HEADER_BYTES = 600
# Caps on single texts, in escaped bytes (what they cost inside the event).
_MAX_LABEL_NAME = 64
_MAX_LABEL_VALUE = 200
_MAX_TITLE = 200
_MAX_SUMMARY = 600
_MAX_DESCRIPTION = 2_000
_MAX_URL = 1_000
_MAX_LABELS_SHOWN = 12

SEVERITY_ORDER = ("critical", "error", "high", "warning", "medium", "info", "low", "none")
_SEVERITY_LOOK: dict[str, tuple[str, str]] = {
    "critical": ("🔴", "#d0021b"),
    "error": ("🔴", "#d0021b"),
    "high": ("🟠", "#f5a623"),
    "warning": ("🟠", "#f5a623"),
    "medium": ("🟡", "#d4b106"),
    "info": ("🔵", "#4a90e2"),
    "low": ("🔵", "#4a90e2"),
}
_UNKNOWN_LOOK = ("⚪", "#9b9b9b")
RESOLVED_LOOK = ("✅", "#2e7d32")


def safe_url(url: str | None) -> str | None:
    """The URL if it is a plain http(s) link of sane length; None otherwise (no javascript: links)."""
    if not url or escaped_size(url) > _MAX_URL:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return url


def severity_of(state: GroupState, label: str) -> str:
    """The group's severity: the highest among its firing alerts (or all, once resolved)."""
    alerts = state.firing or list(state.alerts)
    found = {a.labels.get(label, "") for a in alerts} | {state.common_labels.get(label, "")}
    for severity in SEVERITY_ORDER:
        if severity in found:
            return severity
    return next((s for s in sorted(found) if s), "")


def silence_url(base: str, labels: Mapping[str, str]) -> str | None:
    """Alertmanager's "new silence" page, prefilled with matchers for ``labels``."""
    if not labels or safe_url(base) is None:
        return None
    matchers = ", ".join(f'{name}="{_quote_value(value)}"' for name, value in sorted(labels.items()))
    return safe_url(f"{base.rstrip('/')}/#/silences/new?filter={quote('{' + matchers + '}', safe='')}")


def _quote_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def duration_text(seconds: float) -> str:
    """``3725`` → ``1h 2m``; seconds only under a minute."""
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = rest // 60
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    return " ".join(p for p in parts if p)


def since_text(started: float, now: float) -> str:
    """``02:41 UTC`` the same UTC day as ``now``, else ``2026-03-03 23:41 UTC``."""
    moment = datetime.fromtimestamp(started, UTC)
    same_day = moment.date() == datetime.fromtimestamp(now, UTC).date()
    return moment.strftime("%H:%M UTC" if same_day else "%Y-%m-%d %H:%M UTC")


def alert_order(alert: AlertState) -> tuple[float, tuple[tuple[str, str], ...], str]:
    """Alerts in a group by start, then labels: a key that does not change when one resolves."""
    return (alert.starts_at, tuple(sorted(alert.labels.items())), alert.fingerprint)


@dataclass(frozen=True)
class DigestEntry:
    """One digest line, rendered: both variants, and what it may cost at most."""

    plain: str
    html: Markup
    cost: int


class AlertRenderer:
    """Builds the alert messages from templates; every result fits one Matrix event."""

    def __init__(self, templates: Templates, settings: AlertmanagerSettings) -> None:
        self._templates = templates
        self._settings = settings

    def self_check(self) -> None:
        """Render every template once with a sample group; raises if one is broken."""
        alert = AlertState(
            "0", "firing", {"alertname": "Sample", "pod": "a"}, {"summary": "s"}, 0.0, None, ""
        )
        state = GroupState(
            group_key="{}:{}",
            receiver="sample",
            status="firing",
            group_labels={"alertname": "Sample"},
            common_labels={"alertname": "Sample"},
            common_annotations={},
            external_url="http://alertmanager.invalid",
            alerts=(alert, replace(alert, fingerprint="1", status="resolved", ends_at=60.0)),
            first_seen=0.0,
            updated_at=0.0,
        )
        self.group(state, mention=True)
        self.thread_line(state, GroupChange(new=(alert,), resolved=state.alerts[1:]))
        self.digest([state])

    # -- a group's own message --------------------------------------------------

    def group(self, state: GroupState, *, mention: bool = False, now: float | None = None) -> Message:
        """The group's message, listing as many alerts as fit.

        ``now`` (the relay's clock; the group's last update by default) is
        what "Firing since 02:41 UTC, 12m" counts to: the message says how
        long as of when it was rendered, and each edit renders it again.
        """
        at = state.updated_at if now is None else now
        shown = min(len(state.alerts), self._settings.max_alerts_shown)
        message = self._group_with(state, shown, mention, at)
        if _fits(message):
            return message
        low, high = 0, shown - 1
        while low < high:  # the most alerts that still fit
            middle = (low + high + 1) // 2
            if _fits(self._group_with(state, middle, mention, at)):
                low = middle
            else:
                high = middle - 1
        message = self._group_with(state, low, mention, at)
        # The header alone is capped far below the limit; this is a last resort.
        return message if _fits(message) else Message(plain=message.plain)

    def _group_with(self, state: GroupState, shown: int, mention: bool, now: float) -> Message:
        view = self.group_view(state, shown=shown, mention=mention, now=now)
        return self._templates.render("alert_group", **view)

    def should_mention(self, state: GroupState) -> bool:
        return severity_of(state, self._settings.severity_label) in self._settings.mention_room_severities

    def group_view(
        self, state: GroupState, *, shown: int, mention: bool = False, now: float | None = None
    ) -> dict[str, Any]:
        """Everything the ``alert_group`` templates may show."""
        at = state.updated_at if now is None else now
        settings = self._settings
        severity = severity_of(state, settings.severity_label)
        resolved = state.status == "resolved"
        emoji, color = RESOLVED_LOOK if resolved else _SEVERITY_LOOK.get(severity, _UNKNOWN_LOOK)
        hidden = set(settings.labels_hidden)
        # A stable order (not firing first): an alert keeps its line when it resolves.
        ordered = sorted(state.alerts, key=alert_order)
        common_annotations = state.common_annotations
        alerts = [self._alert_view(a, state, hidden) for a in ordered[:shown]]
        fired_for = state.fired_for()
        started = state.started_at()
        return {
            "status": state.status,
            "resolved": resolved,
            "emoji": emoji,
            "color": color,
            "severity": clip(severity, _MAX_LABEL_VALUE),
            "title": self._title(state),
            "group_labels": _label_pairs(state.group_labels, hidden | {"alertname"}),
            "common_labels": _label_pairs(
                {k: v for k, v in state.common_labels.items() if k not in state.group_labels}, hidden
            ),
            "summary": _annotation(common_annotations, "summary", _MAX_SUMMARY),
            "description": _annotation(common_annotations, "description", _MAX_DESCRIPTION)
            or _annotation(common_annotations, "message", _MAX_DESCRIPTION),
            "firing_count": len(state.firing),
            "resolved_count": len(state.resolved),
            "alerts": alerts,
            "more": len(state.alerts) - len(alerts),
            # Of those not listed, how many still fire.
            "more_firing": sum(1 for a in ordered[shown:] if a.status == "firing"),
            "firing_since": None if resolved else since_text(started, at),
            "firing_for": None if resolved else duration_text(max(0.0, at - started)),
            "links": self._group_links(state),
            "fired_for": duration_text(fired_for) if fired_for is not None else None,
            "mention": mention,
            "receiver": clip(state.receiver, _MAX_LABEL_VALUE),
        }

    def _alert_view(self, alert: AlertState, state: GroupState, hidden: set[str]) -> dict[str, Any]:
        own_labels = {k: v for k, v in alert.labels.items() if state.common_labels.get(k) != v}
        summary = None
        if "summary" not in state.common_annotations:
            summary = _annotation(alert.annotations, "summary", _MAX_SUMMARY)
        runbook = None
        if "runbook_url" not in state.common_annotations:
            runbook = safe_url(alert.annotations.get("runbook_url"))
        return {
            "status": alert.status,
            "resolved": alert.status == "resolved",
            "labels": _label_pairs(own_labels, hidden),
            "summary": summary,
            "source_url": safe_url(alert.generator_url),
            "runbook_url": runbook,
        }

    def _title(self, state: GroupState) -> str:
        name = state.group_labels.get("alertname") or state.common_labels.get("alertname") or "alerts"
        return clip(name, _MAX_TITLE)

    def _group_links(self, state: GroupState) -> list[tuple[str, str]]:
        links: list[tuple[str, str]] = []
        runbook = safe_url(state.common_annotations.get("runbook_url"))
        if runbook:
            links.append(("Runbook", runbook))
        for key in self._settings.dashboard_annotation_keys:
            url = safe_url(state.common_annotations.get(key))
            if url and all(url != existing for _, existing in links):
                links.append(("Dashboard", url))
        # A resolved group has nothing left to silence.
        if self._settings.silence_link and state.status != "resolved":
            base = str(self._settings.external_url) if self._settings.external_url else state.external_url
            matchers = state.group_labels or state.common_labels
            url = silence_url(base, matchers)
            if url:
                links.append(("Silence", url))
        if len({a.generator_url for a in state.alerts}) == 1:
            source = safe_url(state.alerts[0].generator_url) if state.alerts else None
            if source:
                links.append(("Source", source))
        return links

    # -- thread lines -----------------------------------------------------------

    def thread_line(self, state: GroupState, change: GroupChange) -> Message:
        """The short note on what changed, for the group message's thread."""
        hidden = set(self._settings.labels_hidden)

        def described(alerts: Sequence[AlertState]) -> list[str]:
            texts = []
            for alert in alerts:
                own = {k: v for k, v in alert.labels.items() if state.common_labels.get(k) != v}
                pairs = _label_pairs(own, hidden) or _label_pairs(dict(alert.labels), hidden | {"alertname"})
                texts.append(", ".join(f"{k}={v}" for k, v in pairs[:3]) or alert.fingerprint[:16])
            return texts

        fired_for = state.fired_for()
        view = {
            "new": described(change.new[:10]),
            "new_more": max(0, len(change.new) - 10),
            "resolved": described(change.resolved[:10]),
            "resolved_more": max(0, len(change.resolved) - 10),
            "group_resolved": change.group_resolved,
            "fired_for": duration_text(fired_for) if fired_for is not None else None,
            "firing_count": len(state.firing),
        }
        message = self._templates.render("alert_thread_line", **view)
        return message if _fits(message) else Message(plain=message.plain)

    # -- digests ----------------------------------------------------------------

    def digest_entry(self, state: GroupState) -> DigestEntry:
        """The group's digest line, and its cost: the largest of its variants (it may resolve later)."""
        entry = self._digest_line(state)
        cost = max(escaped_size(entry.plain), escaped_size(str(entry.html)))
        if state.status == "firing":
            # Reserve what the resolved variant ("resolved after 1d 23h 59m"
            # instead of "12 firing") may need more.
            cost += 24
        return DigestEntry(entry.plain, entry.html, cost + 2)

    def _digest_line(self, state: GroupState) -> DigestEntry:
        severity = severity_of(state, self._settings.severity_label)
        resolved = state.status == "resolved"
        emoji, color = RESOLVED_LOOK if resolved else _SEVERITY_LOOK.get(severity, _UNKNOWN_LOOK)
        fired_for = state.fired_for()
        labels = _label_pairs(dict(state.group_labels), set(self._settings.labels_hidden) | {"alertname"})
        view = {
            "emoji": emoji,
            "color": color,
            "resolved": resolved,
            "title": clip(self._title(state), 120),
            "labels": [(k, clip(v, 80)) for k, v in labels[:4]],
            "firing_count": len(state.firing),
            "resolved_count": len(state.resolved),
            "summary": _annotation(state.common_annotations, "summary", 120),
            "fired_for": duration_text(fired_for) if fired_for is not None else None,
        }
        message = self._templates.render("alert_digest_line", **view)
        return DigestEntry(message.plain, Markup(message.html or ""), 0)  # noqa: S704 (autoescaped template output)

    def digest_capacity(self) -> int:
        """Bytes of lines one digest may hold."""
        return MAX_FIELD_BYTES - DIGEST_HEADER_BYTES

    def digest(
        self, states: Sequence[GroupState], entries: Mapping[str, DigestEntry] | None = None
    ) -> Message:
        """The digest message: one line per group in the given order.

        ``entries``: lines already rendered by ``digest_entry`` for these
        states, by group key (a storm re-renders the digest often).
        """
        known = entries or {}
        lines = [known.get(s.group_key) or self._digest_line(s) for s in states]
        firing = sum(1 for s in states if s.status == "firing")
        view = {
            "lines": [e.plain for e in lines],
            "html_lines": [e.html for e in lines],
            "group_count": len(states),
            "firing_count": firing,
            "resolved_count": len(states) - firing,
        }
        message = self._templates.render("alert_digest", **view)
        return message if _fits(message) else Message(plain=message.plain)


def _fits(message: Message) -> bool:
    return escaped_size(message.plain) <= MAX_FIELD_BYTES and (
        message.html is None or escaped_size(message.html) <= MAX_FIELD_BYTES
    )


def _annotation(annotations: Mapping[str, str], key: str, limit: int) -> str | None:
    value = annotations.get(key, "").strip()
    return clip(value, limit) if value else None


def _label_pairs(labels: Mapping[str, str], hidden: set[str]) -> list[tuple[str, str]]:
    pairs = [
        (clip(name, _MAX_LABEL_NAME), clip(value, _MAX_LABEL_VALUE))
        for name, value in sorted(labels.items())
        if name not in hidden and not name.startswith("__")
    ]
    if len(pairs) > _MAX_LABELS_SHOWN:
        pairs = [*pairs[:_MAX_LABELS_SHOWN], ("…", f"{len(pairs) - _MAX_LABELS_SHOWN} more labels")]
    return pairs


def content_size(content: Mapping[str, Any]) -> int:
    """Bytes of a content dict as nio sends it (ASCII-escaped JSON)."""
    return len(json.dumps(content))
