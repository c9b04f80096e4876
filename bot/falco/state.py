"""The Falco relay's live state and the pure decisions that change it.

``FalcoState`` holds every live aggregate (one key in one room within one
window: its own message, or a line in the room's digest), digest and mute,
and decides with ``ingest`` (one event), ``due_flushes`` (what to bring up to
date, most important first), ``expire`` (what is closed and fully shown) and
the mute operations.

Nothing here does I/O; times are epoch seconds passed in. The state records
which objects changed (``Changes``) so the caller writes exactly those
through to the store, in the same transaction as the outbox rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal

from bot.falco.events import (
    MAX_NODES,
    MAX_OUTPUT_CHARS,
    MAX_TAGS,
    MAX_VALUE_CHARS,
    FalcoEvent,
    Key,
    Outcome,
    Spending,
    Tier,
    clip_chars,
    event_key,
    key_text,
    mute_key,
)
from config.falco import FalcoPriority, FalcoSettings, priority_rank

# A mute counts its events per key; beyond this many keys they are "other".
MAX_MUTE_KEYS = 50


# -- state ----------------------------------------------------------------------------


class Dirty(IntEnum):
    """What a message lacks: nothing, newer counts, or new members (digests only)."""

    CLEAN = 0
    COUNTS = 1
    NEW = 2


@dataclass(slots=True)
class Aggregate:
    """One key in one room within one window: its own message, or a line in a digest."""

    id: int
    room_id: str
    key: Key
    rule: str
    # The highest priority seen (a key names the rule, and a rule normally has one).
    priority: FalcoPriority
    count: int
    # Falco's times of the first and last event (min and max).
    first_at: float
    last_at: float
    # The bot's clock: when the window opened and when it closes.
    opened_at: float
    window_end: float
    nodes: list[str] = field(default_factory=list)
    nodes_truncated: bool = False
    # The latest event's output, source and tags (clipped).
    output: str = ""
    source: str = ""
    tags: tuple[str, ...] = ()
    digest_id: int | None = None
    message_outbox_id: int | None = None
    message_event_id: str | None = None
    dirty: Dirty = Dirty.CLEAN
    flushed_at: float = 0.0

    @classmethod
    def start(
        cls, id_: int, room_id: str, key: Key, event: FalcoEvent, now: float, window_s: float
    ) -> Aggregate:
        aggregate = cls(
            id=id_,
            room_id=room_id,
            key=key,
            rule=event.rule,
            priority=event.priority,
            count=0,
            first_at=event.time,
            last_at=event.time,
            opened_at=now,
            window_end=now + window_s,
        )
        aggregate.add(event)
        return aggregate

    def add(self, event: FalcoEvent) -> None:
        self.count += 1
        self.first_at = min(self.first_at, event.time)
        if event.time >= self.last_at or self.count == 1:
            self.last_at = event.time
            self.output = clip_chars(event.output, MAX_OUTPUT_CHARS)
            self.source = clip_chars(event.source, MAX_VALUE_CHARS)
            self.tags = tuple(clip_chars(t, MAX_VALUE_CHARS) for t in event.tags[:MAX_TAGS])
        if priority_rank(event.priority) > priority_rank(self.priority):
            self.priority = event.priority
        self.nodes_truncated = _add_node(self.nodes, event.node) or self.nodes_truncated

    def is_open(self, now: float) -> bool:
        return now < self.window_end

    @property
    def message(self) -> str | int | None:
        """What an edit targets: the event id when known, else the outbox row."""
        return self.message_event_id if self.message_event_id is not None else self.message_outbox_id

    def to_json(self) -> dict[str, Any]:
        return {
            "key": [list(pair) for pair in self.key],
            "rule": self.rule,
            "priority": self.priority,
            "count": self.count,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "opened_at": self.opened_at,
            "window_end": self.window_end,
            "nodes": self.nodes,
            "nodes_truncated": self.nodes_truncated,
            "output": self.output,
            "source": self.source,
            "tags": list(self.tags),
            "dirty": int(self.dirty),
            "flushed_at": self.flushed_at,
        }

    @classmethod
    def from_json(
        cls,
        id_: int,
        room_id: str,
        digest_id: int | None,
        outbox_id: int | None,
        event_id: str | None,
        data: Mapping[str, Any],
    ) -> Aggregate:
        return cls(
            id=id_,
            room_id=room_id,
            key=tuple((str(name), str(value)) for name, value in data["key"]),
            rule=data["rule"],
            priority=data["priority"],
            count=data["count"],
            first_at=data["first_at"],
            last_at=data["last_at"],
            opened_at=data["opened_at"],
            window_end=data["window_end"],
            nodes=list(data["nodes"]),
            nodes_truncated=data["nodes_truncated"],
            output=data["output"],
            source=data["source"],
            tags=tuple(data["tags"]),
            digest_id=digest_id,
            message_outbox_id=outbox_id,
            message_event_id=event_id,
            dirty=Dirty(data["dirty"]),
            flushed_at=data["flushed_at"],
        )


@dataclass(slots=True)
class Digest:
    """One message per room holding a line per aggregate folded during a storm."""

    id: int
    room_id: str
    opened_at: float
    # New aggregates join until then; members already in it stay (and are
    # edited) until their own windows close.
    window_end: float
    members: list[int] = field(default_factory=list)
    message_outbox_id: int | None = None
    message_event_id: str | None = None
    dirty: Dirty = Dirty.NEW
    # A member at a mentioning priority joined since the last flush: the
    # digest then goes out at that member's tier, not after it.
    urgent: bool = False
    flushed_at: float = 0.0

    @property
    def posted(self) -> bool:
        return self.message_outbox_id is not None or self.message_event_id is not None

    @property
    def message(self) -> str | int | None:
        return self.message_event_id if self.message_event_id is not None else self.message_outbox_id

    def to_json(self) -> dict[str, Any]:
        return {
            "opened_at": self.opened_at,
            "window_end": self.window_end,
            "dirty": int(self.dirty),
            "urgent": self.urgent,
            "flushed_at": self.flushed_at,
        }


@dataclass(slots=True)
class Mute:
    """A muted rule and the tally of what it kept out of the rooms."""

    rule: str
    created_by: str
    room_id: str
    created_at: float
    ends_at: float
    count: int = 0
    by_priority: dict[str, int] = field(default_factory=dict)
    first_at: float | None = None
    last_at: float | None = None
    nodes: list[str] = field(default_factory=list)
    nodes_truncated: bool = False
    # The rooms the muted events would have gone to: the summary goes there.
    rooms: list[str] = field(default_factory=list)
    keys: dict[str, int] = field(default_factory=dict)
    other_keys: int = 0

    @property
    def key(self) -> str:
        return mute_key(self.rule)

    def add(self, event: FalcoEvent, key: Key, rooms: Iterable[str]) -> None:
        self.count += 1
        self.by_priority[event.priority] = self.by_priority.get(event.priority, 0) + 1
        self.first_at = event.time if self.first_at is None else min(self.first_at, event.time)
        self.last_at = event.time if self.last_at is None else max(self.last_at, event.time)
        self.nodes_truncated = _add_node(self.nodes, event.node) or self.nodes_truncated
        self.rooms.extend(room for room in rooms if room not in self.rooms)
        text = key_text(key)
        if text in self.keys or len(self.keys) < MAX_MUTE_KEYS:
            self.keys[text] = self.keys.get(text, 0) + 1
        else:
            self.other_keys += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "created_by": self.created_by,
            "room_id": self.room_id,
            "created_at": self.created_at,
            "count": self.count,
            "by_priority": self.by_priority,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "nodes": self.nodes,
            "nodes_truncated": self.nodes_truncated,
            "rooms": self.rooms,
            "keys": self.keys,
            "other_keys": self.other_keys,
        }

    @classmethod
    def from_json(cls, ends_at: float, data: Mapping[str, Any]) -> Mute:
        return cls(
            rule=data["rule"],
            created_by=data["created_by"],
            room_id=data["room_id"],
            created_at=data["created_at"],
            ends_at=ends_at,
            count=data["count"],
            by_priority=dict(data["by_priority"]),
            first_at=data["first_at"],
            last_at=data["last_at"],
            nodes=list(data["nodes"]),
            nodes_truncated=data["nodes_truncated"],
            rooms=list(data["rooms"]),
            keys=dict(data["keys"]),
            other_keys=data["other_keys"],
        )


def _add_node(nodes: list[str], node: str) -> bool:
    """Add a node name if new; True when it was left out because the list is full."""
    if not node:
        return False
    node = clip_chars(node, MAX_VALUE_CHARS)
    if node in nodes:
        return False
    if len(nodes) >= MAX_NODES:
        return True
    nodes.append(node)
    return False


# -- decisions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flush:
    """A message to bring up to date now: post a digest, or edit a message."""

    tier: Tier
    kind: Literal["aggregate", "digest"]
    id: int
    # Sort order within a tier: the highest priority first, then the longest waiting.
    rank: int
    since: float


@dataclass
class Changes:
    """What changed since the last ``take_changes``: written to the store in one transaction."""

    aggregates: set[int] = field(default_factory=set)
    digests: set[int] = field(default_factory=set)
    mutes: set[str] = field(default_factory=set)
    deleted_aggregates: set[int] = field(default_factory=set)
    deleted_digests: set[int] = field(default_factory=set)
    deleted_mutes: set[str] = field(default_factory=set)

    def any(self) -> bool:
        return bool(
            self.aggregates
            or self.digests
            or self.mutes
            or self.deleted_aggregates
            or self.deleted_digests
            or self.deleted_mutes
        )


class FalcoState:
    """Every live aggregate, digest and mute, and the decisions that change them.

    Ids come from ``next_id`` (the store's sequence at load), so new objects
    have their final ids at once and one batch can create, fold and post
    without a round trip.
    """

    def __init__(self, settings: FalcoSettings, next_id: int = 1) -> None:
        self.settings = settings
        self.next_id = next_id
        self.aggregates: dict[int, Aggregate] = {}
        self.digests: dict[int, Digest] = {}
        self.mutes: dict[str, Mute] = {}
        # The open aggregate per (room, key), and the open digest per room.
        self._open: dict[tuple[str, Key], int] = {}
        self._open_digest: dict[str, int] = {}
        self.changes = Changes()
        # Aggregates that got their own message in this batch: the caller
        # renders and queues them once every event of the batch is in.
        self.to_post: list[int] = []

    # -- loading ----------------------------------------------------------------------

    def restore(
        self, aggregates: Iterable[Aggregate], digests: Iterable[Digest], mutes: Iterable[Mute]
    ) -> None:
        """Rebuild from stored objects (members and the open indexes are derived)."""
        for aggregate in sorted(aggregates, key=lambda a: a.id):
            self.aggregates[aggregate.id] = aggregate
            self._open[(aggregate.room_id, aggregate.key)] = aggregate.id
        for digest in sorted(digests, key=lambda d: d.id):
            self.digests[digest.id] = digest
            self._open_digest[digest.room_id] = digest.id
        for aggregate in self.aggregates.values():
            if aggregate.digest_id is not None and aggregate.digest_id in self.digests:
                self.digests[aggregate.digest_id].members.append(aggregate.id)
        for mute in mutes:
            self.mutes[mute.key] = mute

    def take_changes(self) -> Changes:
        changes, self.changes = self.changes, Changes()
        return changes

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    # -- one event ----------------------------------------------------------------------

    def active_mute(self, rule: str, now: float) -> Mute | None:
        mute = self.mutes.get(mute_key(rule))
        return mute if mute is not None and now < mute.ends_at else None

    def ingest(self, event: FalcoEvent, now: float, spending: Spending) -> Outcome:
        """Fold one (not test, not below-minimum) event into the state; what happened to it.

        Per room: a repeat of an open key joins its aggregate; a new key gets
        its own message if the budget allows its tier, else a line in the
        room's digest. Over several rooms the event counts as posted if it
        was posted anywhere, else folded if folded anywhere.
        """
        key = event_key(event, self.settings.aggregation_key)
        rooms = self.settings.rooms_for(event.priority)
        mute = self.active_mute(event.rule, now)
        if mute is not None:
            mute.add(event, key, rooms)
            self.changes.mutes.add(mute.key)
            return "muted"
        results: set[Outcome] = set()
        for room_id in rooms:
            results.add(self._ingest_in(room_id, key, event, now, spending))
        for outcome in ("posted", "folded"):
            if outcome in results:
                return outcome
        return "aggregated"

    def _ingest_in(
        self, room_id: str, key: Key, event: FalcoEvent, now: float, spending: Spending
    ) -> Outcome:
        existing = self._open.get((room_id, key))
        aggregate = None if existing is None else self.aggregates.get(existing)
        if aggregate is not None and aggregate.is_open(now):
            aggregate.add(event)
            self._touch(aggregate, Dirty.COUNTS)
            return "aggregated"
        aggregate = Aggregate.start(self._new_id(), room_id, key, event, now, self.settings.window_s)
        self.aggregates[aggregate.id] = aggregate
        self._open[(room_id, key)] = aggregate.id
        self.changes.aggregates.add(aggregate.id)
        tier = Tier.URGENT if self.mentions(aggregate) else Tier.NEW
        if spending.spend(tier):
            self.to_post.append(aggregate.id)
            return "posted"
        digest = self._digest_for(room_id, now)
        aggregate.digest_id = digest.id
        digest.members.append(aggregate.id)
        digest.dirty = Dirty.NEW
        digest.urgent = digest.urgent or tier is Tier.URGENT
        self.changes.digests.add(digest.id)
        return "folded"

    def _touch(self, aggregate: Aggregate, dirty: Dirty) -> None:
        self.changes.aggregates.add(aggregate.id)
        if aggregate.digest_id is not None:
            digest = self.digests[aggregate.digest_id]
            digest.dirty = max(digest.dirty, dirty)
            self.changes.digests.add(digest.id)
        elif aggregate.id not in self.to_post:
            aggregate.dirty = max(aggregate.dirty, dirty)

    def _digest_for(self, room_id: str, now: float) -> Digest:
        current = self._open_digest.get(room_id)
        digest = None if current is None else self.digests.get(current)
        if digest is None or now >= digest.window_end:
            digest = Digest(self._new_id(), room_id, now, now + self.settings.window_s)
            self.digests[digest.id] = digest
            self._open_digest[room_id] = digest.id
        return digest

    def mentions(self, aggregate: Aggregate) -> bool:
        return aggregate.priority in self.settings.mention_room_priorities

    def posted(self, aggregate_id: int, outbox_id: int, now: float) -> None:
        """The caller queued the aggregate's own message as outbox row ``outbox_id``."""
        aggregate = self.aggregates[aggregate_id]
        aggregate.message_outbox_id = outbox_id
        aggregate.dirty = Dirty.CLEAN
        aggregate.flushed_at = now
        self.changes.aggregates.add(aggregate_id)

    # -- flushing -------------------------------------------------------------------------

    def due_flushes(self, now: float) -> list[Flush]:
        """Messages that lack something, most important first; the caller spends budget on them."""
        interval = self.settings.edit_interval_s
        due: list[Flush] = []
        for aggregate in self.aggregates.values():
            own = aggregate.digest_id is None and aggregate.message is not None
            if own and aggregate.dirty and now - aggregate.flushed_at >= interval:
                rank = -priority_rank(aggregate.priority)
                due.append(Flush(Tier.UPDATE, "aggregate", aggregate.id, rank, aggregate.flushed_at))
        for digest in self.digests.values():
            if not digest.dirty:
                continue
            rank = -max((priority_rank(self.aggregates[m].priority) for m in digest.members), default=0)
            if digest.dirty is Dirty.NEW or not digest.posted:
                tier = Tier.URGENT if digest.urgent else Tier.NEW
                due.append(Flush(tier, "digest", digest.id, rank, digest.flushed_at))
            elif now - digest.flushed_at >= interval:
                due.append(Flush(Tier.UPDATE, "digest", digest.id, rank, digest.flushed_at))
        return sorted(due, key=lambda f: (f.tier, f.rank, f.since, f.id))

    def flushed(self, flush: Flush, now: float, outbox_id: int | None = None) -> None:
        """The caller queued the flush (``outbox_id``: a new digest's message row)."""
        target: Aggregate | Digest
        if flush.kind == "aggregate":
            target = self.aggregates[flush.id]
            self.changes.aggregates.add(flush.id)
        else:
            target = self.digests[flush.id]
            self.changes.digests.add(flush.id)
            target.urgent = False
            if outbox_id is not None:
                target.message_outbox_id = outbox_id
        target.dirty = Dirty.CLEAN
        target.flushed_at = now

    def pending(self) -> int:
        """Messages waiting for budget to show their latest state (a gauge)."""
        own = sum(1 for a in self.aggregates.values() if a.digest_id is None and a.dirty)
        return own + sum(1 for d in self.digests.values() if d.dirty)

    # -- expiry ----------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Forget what is closed and fully shown: aggregates past their window, digests with none live."""
        for aggregate in list(self.aggregates.values()):
            if aggregate.is_open(now) or aggregate.digest_id is not None or aggregate.dirty:
                continue
            self._forget_aggregate(aggregate)
        for digest in list(self.digests.values()):
            if now < digest.window_end or digest.dirty or not digest.posted:
                continue
            members = [self.aggregates[m] for m in digest.members if m in self.aggregates]
            if any(m.is_open(now) for m in members):
                continue
            for member in members:
                self._forget_aggregate(member)
            del self.digests[digest.id]
            if self._open_digest.get(digest.room_id) == digest.id:
                del self._open_digest[digest.room_id]
            self.changes.digests.discard(digest.id)
            self.changes.deleted_digests.add(digest.id)

    def _forget_aggregate(self, aggregate: Aggregate) -> None:
        del self.aggregates[aggregate.id]
        if self._open.get((aggregate.room_id, aggregate.key)) == aggregate.id:
            del self._open[(aggregate.room_id, aggregate.key)]
        self.changes.aggregates.discard(aggregate.id)
        self.changes.deleted_aggregates.add(aggregate.id)

    # -- mutes -------------------------------------------------------------------------------

    def set_mute(
        self, rule: str, by: str, room_id: str, now: float, ends_at: float
    ) -> tuple[Mute, float | None]:
        """Mute ``rule`` until ``ends_at``; an existing mute keeps its tally. (mute, its previous end)."""
        existing = self.mutes.get(mute_key(rule))
        if existing is not None and now < existing.ends_at:
            previous = existing.ends_at
            existing.ends_at = ends_at
            existing.created_by = by
            existing.room_id = room_id
            self.changes.mutes.add(existing.key)
            return existing, previous
        mute = Mute(
            rule=" ".join(rule.split()), created_by=by, room_id=room_id, created_at=now, ends_at=ends_at
        )
        if existing is not None:
            # Expired but not yet summarised: its summary is still owed, so keep the tally.
            mute.count, mute.by_priority, mute.rooms = existing.count, existing.by_priority, existing.rooms
            mute.first_at, mute.last_at, mute.keys = existing.first_at, existing.last_at, existing.keys
            mute.nodes, mute.nodes_truncated = existing.nodes, existing.nodes_truncated
            mute.other_keys = existing.other_keys
        self.mutes[mute.key] = mute
        self.changes.mutes.add(mute.key)
        return mute, None

    def end_mute(self, rule: str) -> Mute | None:
        mute = self.mutes.pop(mute_key(rule), None)
        if mute is not None:
            self.changes.mutes.discard(mute.key)
            self.changes.deleted_mutes.add(mute.key)
        return mute

    def ended_mutes(self, now: float) -> list[Mute]:
        """Mutes whose time is up, removed from the state (their summaries are the caller's)."""
        ended = [m for m in self.mutes.values() if now >= m.ends_at]
        for mute in ended:
            self.end_mute(mute.rule)
        return sorted(ended, key=lambda m: m.ends_at)
