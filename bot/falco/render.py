"""Falco aggregates, digests and mute summaries as room messages.

Templates (overridable, see ``config.falco.FalcoSettings.templates_dir``):

- ``falco_event``: one key's own message ("x37 in 4m12s, last at …, nodes …");
- ``falco_digest_line`` / ``falco_digest``: a line per key, and the digest
  message holding them during a storm (only the lines that fit are rendered;
  the header's counts are always exact);
- ``falco_mute_ended``: what a mute kept out of the room, when it ends.

Every text from Falco is cut before rendering (rule, field values, output),
so no event can outgrow Matrix's 65,536-byte limit even as an encrypted edit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup

from bot.falco.events import FalcoEvent
from bot.falco.state import Aggregate, Digest, Mute
from bot.render.message import MAX_FIELD_BYTES, Message, clip, escaped_size, fit_lines
from bot.render.templates import Templates
from config.durations import format_duration
from config.falco import PRIORITIES, priority_rank

# Room left in a field for the digest's header and its "… and N more" line.
DIGEST_HEADER_BYTES = 800
_MAX_RULE = 200
_MAX_VALUE = 160
_MAX_OUTPUT = 2_000
_MAX_NODES_SHOWN = 10
_MAX_TAGS_SHOWN = 8

_LOOK: dict[str, tuple[str, str]] = {
    "emergency": ("🚨", "#9b0000"),
    "alert": ("🚨", "#d0021b"),
    "critical": ("🔴", "#d0021b"),
    "error": ("🟠", "#f5a623"),
    "warning": ("🟡", "#d4b106"),
    "notice": ("🔵", "#4a90e2"),
    "informational": ("⚪", "#9b9b9b"),
    "debug": ("⚪", "#9b9b9b"),
}


def clock_text(moment: float | None, now: float) -> str:
    """``12:04:13 UTC`` on the current UTC day, else with the date; "?" when unknown."""
    if moment is None:
        return "?"
    try:
        when = datetime.fromtimestamp(moment, UTC)
    except (OverflowError, OSError, ValueError):
        return "?"
    if when.date() == datetime.fromtimestamp(now, UTC).date():
        return when.strftime("%H:%M:%S UTC")
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def span_text(seconds: float) -> str:
    return "under 1s" if seconds < 1 else format_duration(seconds)


class FalcoRenderer:
    """Builds the Falco messages from templates; every result fits one Matrix event."""

    def __init__(self, templates: Templates) -> None:
        self._templates = templates

    def self_check(self) -> None:
        """Render every template once with samples; raises if one is broken."""
        event = FalcoEvent("Sample rule", "critical", "sample output", 0.0, "node-a", "syscall", ("t",))
        aggregate = Aggregate.start(1, "!r", (("rule", "Sample rule"), ("proc.name", "sh")), event, 0.0, 60.0)
        aggregate.add(event)
        digest = Digest(2, "!r", 0.0, 60.0, [1])
        mute = Mute("Sample rule", "@a:b", "!r", 0.0, 60.0)
        mute.add(event, aggregate.key, ["!r"])
        self.aggregate(aggregate, now=0.0, mention=True)
        self.digest(digest, [aggregate], now=0.0)
        self.mute_ended(mute, now=0.0, lifted_by="@b:c")

    # -- a key's own message ------------------------------------------------------------

    def aggregate(self, aggregate: Aggregate, *, now: float, mention: bool = False) -> Message:
        return self._templates.render("falco_event", **self.aggregate_view(aggregate, now), mention=mention)

    def aggregate_view(self, aggregate: Aggregate, now: float) -> dict[str, Any]:
        emoji, color = _LOOK[aggregate.priority]
        nodes = aggregate.nodes[:_MAX_NODES_SHOWN]
        return {
            "emoji": emoji,
            "color": color,
            "priority": aggregate.priority.upper(),
            "rule": clip(aggregate.rule, _MAX_RULE),
            "fields": [
                (clip(n, _MAX_VALUE), clip(v, _MAX_VALUE)) for n, v in aggregate.key if v and n != "rule"
            ],
            "count": aggregate.count,
            "span": span_text(aggregate.last_at - aggregate.first_at),
            "first": clock_text(aggregate.first_at, now),
            "last": clock_text(aggregate.last_at, now),
            "nodes": [clip(n, _MAX_VALUE) for n in nodes],
            "nodes_more": len(aggregate.nodes) > len(nodes) or aggregate.nodes_truncated,
            "output": clip(aggregate.output, _MAX_OUTPUT),
            "source": clip(aggregate.source, _MAX_VALUE),
            "tags": [clip(t, _MAX_VALUE) for t in aggregate.tags[:_MAX_TAGS_SHOWN]],
        }

    # -- the digest ---------------------------------------------------------------------------

    def digest(self, digest: Digest, members: Sequence[Aggregate], *, now: float) -> Message:
        """The digest with as many lines as fit: highest priority first, then in the order they joined."""
        ordered = sorted(members, key=lambda a: (-priority_rank(a.priority), a.id))
        budget = MAX_FIELD_BYTES - DIGEST_HEADER_BYTES
        plain: list[str] = []
        html: list[Markup] = []
        used_plain = used_html = 0
        for aggregate in ordered:
            line = self._templates.render("falco_digest_line", **self.aggregate_view(aggregate, now))
            line_html = Markup(line.html or "")  # noqa: S704 (rendered by an autoescaping template)
            cost_plain, cost_html = escaped_size(line.plain) + 2, escaped_size(line_html) + 2
            if used_plain + cost_plain > budget or used_html + cost_html > budget:
                break
            plain.append(line.plain)
            html.append(line_html)
            used_plain += cost_plain
            used_html += cost_html
        hidden = ordered[len(plain) :]
        return self._templates.render(
            "falco_digest",
            events=sum(a.count for a in members),
            kinds=len(members),
            since=clock_text(digest.opened_at, now),
            lines=plain,
            html_lines=html,
            more=len(hidden),
            more_events=sum(a.count for a in hidden),
        )

    # -- mutes ----------------------------------------------------------------------------------

    def mute_ended(self, mute: Mute, *, now: float, lifted_by: str | None = None) -> Message:
        by_priority = sorted(mute.by_priority.items(), key=lambda item: -_rank(item[0]))
        keys = sorted(mute.keys.items(), key=lambda item: -item[1])
        lines = fit_lines(
            [f"×{count} {clip(text, 3 * _MAX_VALUE) or '(no other key fields)'}" for text, count in keys],
            budget=MAX_FIELD_BYTES // 2,
        )
        nodes = mute.nodes[:_MAX_NODES_SHOWN]
        return self._templates.render(
            "falco_mute_ended",
            rule=clip(mute.rule, _MAX_RULE),
            created_by=mute.created_by,
            lifted_by=lifted_by,
            muted_for=format_duration(max(0.0, min(now, mute.ends_at) - mute.created_at)),
            count=mute.count,
            by_priority=[(p.upper(), n) for p, n in by_priority],
            first=clock_text(mute.first_at, now),
            last=clock_text(mute.last_at, now),
            nodes=[clip(n, _MAX_VALUE) for n in nodes],
            nodes_more=len(mute.nodes) > len(nodes) or mute.nodes_truncated,
            lines=lines,
            other_keys=mute.other_keys,
        )


def _rank(priority: str) -> int:
    return PRIORITIES.index(priority) if priority in PRIORITIES else -1


def mute_line(mute: Mute, now: float) -> dict[str, Any]:
    """One mute as ``!falco mutes`` lists it."""
    return {
        "rule": clip(mute.rule, _MAX_RULE),
        "until": clock_text(mute.ends_at, now),
        "left": format_duration(max(0.0, mute.ends_at - now)),
        "created_by": mute.created_by,
        "count": mute.count,
    }
