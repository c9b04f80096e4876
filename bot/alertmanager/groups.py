"""Alert groups as the relay sees them, and the pure decisions about them.

- ``merge``: a notification folded into the group's state, with what changed
  (new alerts, resolved alerts, a new episode, the whole group resolved),
  compared by fingerprint. A repeat with nothing changed changes nothing.
- ``route``: which rooms a group goes to.
- ``RateBudget``: the homeserver's message budget for the bot user (a token
  bucket), fed with the outbox's send times, predicting how long a new event
  would wait behind what is queued. The relay folds new groups into a digest
  when a group's own message would wait too long.

Nothing here does I/O; times are epoch seconds passed in.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from bot.outbox.budget import RateBudget, SendThroughput
from config.alertmanager import AlertRoute

AlertStatus = Literal["firing", "resolved"]

# Resolved alerts of a still-firing group are kept for display, up to this
# many (a flapping workload creates a new fingerprint per pod).
MAX_RESOLVED_KEPT = 200
# An event the relay may need right after a group's own message: the digest
# message and its first edit. Counted when deciding whether to fold, so the
# digest itself still goes out in time.
DIGEST_RESERVE = 2
# Events already queued before ``fold_after_s`` applies: fewer is not a storm,
# and a lone group (or two) keeps its own message even when it must wait for
# the rate budget (``max_delay_s`` alone decides then).
STORM_MIN_AHEAD = 3


# -- state ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertState:
    fingerprint: str
    status: AlertStatus
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: float
    # None while firing with no known end (Alertmanager sends year 1).
    ends_at: float | None
    generator_url: str

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "status": self.status,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "generator_url": self.generator_url,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AlertState:
        return cls(
            fingerprint=data["fingerprint"],
            status=data["status"],
            labels=data["labels"],
            annotations=data["annotations"],
            starts_at=data["starts_at"],
            ends_at=data["ends_at"],
            generator_url=data["generator_url"],
        )


@dataclass(frozen=True, slots=True)
class Notification:
    """What one webhook says about a group (heartbeat alerts already taken out)."""

    group_key: str
    receiver: str
    status: AlertStatus
    group_labels: Mapping[str, str]
    common_labels: Mapping[str, str]
    common_annotations: Mapping[str, str]
    external_url: str
    alerts: Sequence[AlertState]
    # Alerts Alertmanager left out (max_alerts): absence then proves nothing.
    truncated_alerts: int = 0


@dataclass(frozen=True, slots=True)
class Post:
    """Where a group shows in one room: its own message, or a line in a digest."""

    room_id: str
    # The group's own message: the outbox row that posts it, and its event id
    # once known. Both None when the group is a line in digest ``digest_id``.
    message_outbox_id: int | None
    message_event_id: str | None
    digest_id: int | None
    posted_at: float

    @property
    def message(self) -> str | int | None:
        """The reference to edit or thread on: the event id when known, else the outbox row."""
        return self.message_event_id if self.message_event_id is not None else self.message_outbox_id


@dataclass(frozen=True, slots=True)
class GroupState:
    """One alert group's current episode: from its first firing until all of it resolved."""

    group_key: str
    receiver: str
    status: AlertStatus
    group_labels: Mapping[str, str]
    common_labels: Mapping[str, str]
    common_annotations: Mapping[str, str]
    external_url: str
    # Firing first seen ... in the order first seen.
    alerts: tuple[AlertState, ...]
    first_seen: float
    updated_at: float
    resolved_at: float | None = None
    posts: tuple[Post, ...] = ()

    @property
    def firing(self) -> list[AlertState]:
        return [a for a in self.alerts if a.status == "firing"]

    @property
    def resolved(self) -> list[AlertState]:
        return [a for a in self.alerts if a.status == "resolved"]

    def post_in(self, room_id: str) -> Post | None:
        return next((p for p in self.posts if p.room_id == room_id), None)

    def with_post(self, post: Post) -> GroupState:
        others = tuple(p for p in self.posts if p.room_id != post.room_id)
        return replace(self, posts=(*others, post))

    def started_at(self) -> float:
        """When the episode began: the earliest startsAt, or when we first saw it."""
        starts = [a.starts_at for a in self.alerts if a.starts_at > 0]
        return min(starts) if starts else self.first_seen

    def fired_for(self) -> float | None:
        """Seconds from the first alert's start to the last one's end, once resolved."""
        if self.status != "resolved":
            return None
        ends = [a.ends_at for a in self.alerts if a.ends_at is not None]
        end = max(ends) if ends else (self.resolved_at or self.updated_at)
        return max(0.0, end - self.started_at())

    def state_json(self) -> dict[str, Any]:
        """What the store keeps beyond its indexed columns."""
        return {
            "common_annotations": dict(self.common_annotations),
            "alerts": [a.to_json() for a in self.alerts],
        }


@dataclass(frozen=True, slots=True)
class GroupChange:
    """What a notification changed; empty when it was a repeat."""

    new: tuple[AlertState, ...] = ()
    resolved: tuple[AlertState, ...] = ()
    # No state before, or the last episode had resolved: a fresh message.
    new_episode: bool = False
    # The whole group resolved with this notification.
    group_resolved: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.new or self.resolved or self.new_episode or self.group_resolved)


@dataclass(slots=True)
class DigestState:
    """One digest message in a room: a compact line per folded group."""

    id: int
    room_id: str
    message_outbox_id: int | None
    message_event_id: str | None
    created_at: float
    members: list[str] = field(default_factory=list)
    # Escaped bytes the members' lines take (their largest variant), so a
    # digest is closed before its text would outgrow one event.
    used_bytes: int = 0

    @property
    def message(self) -> str | int | None:
        return self.message_event_id if self.message_event_id is not None else self.message_outbox_id


# -- time -------------------------------------------------------------------


def epoch(moment: datetime | None) -> float | None:
    """Epoch seconds; None for Alertmanager's "no time" (year 1, before 1970)."""
    if moment is None or moment.year < 1970:
        return None
    return moment.timestamp()


# -- merging a notification -------------------------------------------------


def merge(previous: GroupState | None, note: Notification, now: float) -> tuple[GroupState, GroupChange]:
    """The group's state after ``note``, and what changed.

    Alertmanager sends every alert of the group in each notification (firing,
    and resolved ones once), so a known firing alert that is missing has
    stopped firing, unless the list was truncated.
    """
    incoming_firing = any(a.status == "firing" for a in note.alerts)
    new_episode = previous is None or (previous.status == "resolved" and incoming_firing)
    known: dict[str, AlertState] = (
        {} if new_episode or previous is None else {a.fingerprint: a for a in previous.alerts}
    )
    new: list[AlertState] = []
    resolved: list[AlertState] = []
    seen: set[str] = set()
    for alert in note.alerts:
        seen.add(alert.fingerprint)
        before = known.get(alert.fingerprint)
        if alert.status == "firing" and (before is None or before.status == "resolved"):
            new.append(alert)
        elif alert.status == "resolved" and before is not None and before.status == "firing":
            resolved.append(alert)
        known[alert.fingerprint] = alert
    if note.truncated_alerts == 0:
        for fingerprint, alert in list(known.items()):
            if fingerprint not in seen and alert.status == "firing":
                gone = replace(alert, status="resolved", ends_at=now)
                known[fingerprint] = gone
                resolved.append(gone)
    alerts = _keep_recent_resolved(list(known.values()))
    status: AlertStatus = "firing" if any(a.status == "firing" for a in alerts) else "resolved"
    was_firing = previous is not None and not new_episode and previous.status == "firing"
    group_resolved = status == "resolved" and (was_firing or new_episode)
    state = GroupState(
        group_key=note.group_key,
        receiver=note.receiver,
        status=status,
        group_labels=dict(note.group_labels),
        # Over every alert we show, not only those this notification lists
        # (a resolved alert is listed once, then dropped by Alertmanager).
        common_labels=_common([a.labels for a in alerts], note.common_labels),
        common_annotations=_common([a.annotations for a in alerts], note.common_annotations),
        external_url=note.external_url,
        alerts=tuple(alerts),
        first_seen=now if new_episode or previous is None else previous.first_seen,
        updated_at=now,
        resolved_at=(now if group_resolved else (None if status == "firing" else _resolved_at(previous))),
        posts=() if new_episode or previous is None else previous.posts,
    )
    change = GroupChange(
        new=tuple(new), resolved=tuple(resolved), new_episode=new_episode, group_resolved=group_resolved
    )
    return state, change


def _common(mappings: Sequence[Mapping[str, str]], fallback: Mapping[str, str]) -> dict[str, str]:
    """The pairs every mapping has; ``fallback`` when there are none to compare."""
    if not mappings:
        return dict(fallback)
    first, *rest = mappings
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in rest)}


def _resolved_at(previous: GroupState | None) -> float | None:
    return None if previous is None else previous.resolved_at


def _keep_recent_resolved(alerts: list[AlertState]) -> list[AlertState]:
    resolved = [a for a in alerts if a.status == "resolved"]
    if len(resolved) <= MAX_RESOLVED_KEPT:
        return alerts
    drop = {a.fingerprint for a in sorted(resolved, key=lambda a: a.ends_at or 0.0)[:-MAX_RESOLVED_KEPT]}
    return [a for a in alerts if a.fingerprint not in drop]


# -- routing ----------------------------------------------------------------


def route(
    routes: Sequence[AlertRoute], default_rooms: Sequence[str], receiver: str, labels: Mapping[str, str]
) -> list[str]:
    """The rooms for a group: first matching route (more with ``continue``), else the defaults."""
    rooms: list[str] = []
    for candidate in routes:
        if candidate.receivers and receiver not in candidate.receivers:
            continue
        if not all(matches(expected, labels.get(name, "")) for name, expected in candidate.matchers.items()):
            continue
        rooms.extend(room for room in candidate.rooms if room not in rooms)
        if not candidate.continue_:
            break
    return rooms or list(dict.fromkeys(default_rooms))


def matches(expected: str, value: str) -> bool:
    """One matcher: ``v`` (equal), ``=~re``, ``!=v``, ``!~re``; regexes are anchored."""
    if expected.startswith("=~"):
        return _regex(expected[2:]).fullmatch(value) is not None
    if expected.startswith("!~"):
        return _regex(expected[2:]).fullmatch(value) is None
    if expected.startswith("!="):
        return value != expected[2:]
    return value == expected


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


# -- storms -------------------------------------------------------------------


def storming(
    budget: RateBudget,
    ahead: int,
    now: float,
    max_delay_s: float,
    throughput: SendThroughput | None = None,
    fold_after_s: float = float("inf"),
    *,
    underway: bool = False,
) -> bool:
    """Whether a new group's own message would wait too long: fold it into the digest instead.

    ``ahead`` counts every event queued before it (all rooms: the limit is
    per user). Its wait is predicted twice: from the homeserver's rate
    budget, and from the outbox's measured send rate (an assumed 10/s until
    8 sends in 10 s measured it), which catches a queue that drains slower
    than a raised budget allows. It folds when the budget's wait passes
    ``max_delay_s``, or, once a storm is underway (``STORM_MIN_AHEAD``
    events queued), when the longer of the two waits passes
    ``fold_after_s``: so a storm's digest goes out within seconds, not after
    ``max_delay_s``. The digest's own events are reserved on top, so that
    when this answer turns to yes the digest still goes out in time.

    ``underway``: a group folded moments ago (the relay says when). Then any
    group folds while anything is queued, whatever the waits: the digest
    absorbs a storm's groups at no cost in events, while each own message
    let in would queue ahead of the digest's next event and delay every
    group after it. Without this, the measured rate, high once the digest
    absorbs the groups, lets own messages in again until the queue is long
    enough to fold, over and over. With nothing queued the storm is over.
    """
    budget_wait = budget.delay(ahead + DIGEST_RESERVE, now)
    if budget_wait > max_delay_s:
        return True
    if underway and ahead > 0:
        return True
    if ahead < STORM_MIN_AHEAD:
        return False
    measured = 0.0 if throughput is None else throughput.wait(ahead + DIGEST_RESERVE, now)
    return max(budget_wait, measured) > fold_after_s
