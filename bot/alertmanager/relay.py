"""The Alertmanager relay: notifications in, one message per alert group out (or a digest line).

``AlertRelay.accept`` is what the webhook handler calls. It returns once the
notification's effects (group state, outbox rows, heartbeats) are committed,
and raises ``StoreUnavailableError`` when the store cannot take them now.

**Group commit.** Notifications that arrive while a transaction is running
wait and are then committed together in the next one: one ``BEGIN …
COMMIT`` and one render of each touched digest per batch instead of per
notification, which keeps the webhook's answer fast during a storm. If a
batch fails for a reason other than the store, its notifications are
retried one by one, so one bad notification cannot fail the others.

**State.** The relay keeps every known group and digest in memory (loaded
at start-up) and writes through to ``AlertGroupRepo`` in the same
transaction as the outbox rows; memory is updated only after the commit.
It is the only writer of those tables.

**Storms.** Before posting a new group's own message, the relay asks the
``RateBudget`` how long that message would wait behind everything queued.
Too long: the group becomes a line of the room's digest message instead,
which is edited (superseding a still-pending edit) as groups join and
resolve. A group in a digest stays there; thread lines are skipped while
the budget is short, because the edit already shows the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from prometheus_client import CollectorRegistry, Counter

from bot.alertmanager.groups import (
    AlertState,
    DigestState,
    GroupChange,
    GroupState,
    Notification,
    Post,
    epoch,
    merge,
    route,
    storming,
)
from bot.alertmanager.payload import WebhookAlert, WebhookPayload, split_heartbeats
from bot.alertmanager.render import AlertRenderer, DigestEntry
from bot.alertmanager.store import AlertGroupRepo, GroupRow, LoadedAlertState, PostRow
from bot.errors import StoreUnavailableError
from bot.heartbeats import HeartbeatSink, WatchdogFilter
from bot.outbox import Outbox, OutboxId
from bot.outbox.batching import GroupCommit
from bot.outbox.budget import RateBudget, SendThroughput
from bot.outbox.events import stored_ref
from bot.render.message import mentioning_content
from bot.store.database import Database
from bot.store.tx import Tx
from config.alertmanager import AlertmanagerSettings

log = logging.getLogger(__name__)

# How often event ids of sent messages are copied from the outbox, and old
# resolved groups forgotten.
MAINTENANCE_INTERVAL_S = 30.0
# A digest is edited at most this often while its previous edit is already
# sent: a homeserver without a rate limit would otherwise take a large edit
# per batch of notifications during a storm. A still-pending edit is simply
# given the newer content, at any time.
DIGEST_EDIT_INTERVAL_S = 1.0
# How often deferred digest edits are looked at.
_FLUSH_TICK_S = 0.25
# Send times older than this cannot matter to a bucket that refills in
# burst / rate seconds; twice that is read at start-up.
_MAX_SEND_TIMES = 1_000


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter(
            "readybot_alertmanager_notifications",
            "Alertmanager notifications by result (accepted, store_unavailable, error).",
            ["result"],
            registry=registry,
        )
        self.groups_posted = Counter(
            "readybot_alert_groups_posted",
            "New alert group episodes by how they were shown (message, digest).",
            ["how"],
            registry=registry,
        )


def notification_of(payload: WebhookPayload, alerts: Sequence[WebhookAlert]) -> Notification:
    """The relay's view of a webhook payload, keeping only ``alerts``."""
    return Notification(
        group_key=payload.group_key,
        receiver=payload.receiver,
        status=payload.status,
        group_labels=payload.group_labels,
        common_labels=payload.common_labels,
        common_annotations=payload.common_annotations,
        external_url=payload.external_url,
        alerts=[
            AlertState(
                fingerprint=a.fingerprint,
                status=a.status,
                labels=a.labels,
                annotations=a.annotations,
                starts_at=epoch(a.starts_at) or 0.0,
                ends_at=epoch(a.ends_at),
                generator_url=a.generator_url,
            )
            for a in alerts
        ],
        truncated_alerts=payload.truncated_alerts,
    )


@dataclass(frozen=True)
class _Intake:
    """What one notification brings: groups to relay and/or a heartbeat."""

    note: Notification | None
    beat_source: str | None


@dataclass
class _Batch:
    """One transaction's changes, applied to memory only once committed."""

    now: float
    # Events queued ahead of the next one (all rooms): the budget's input.
    # None until a decision needs it (see AlertRelay._ahead).
    ahead: int | None = None
    groups: dict[str, GroupState] = field(default_factory=dict)
    new_episodes: set[str] = field(default_factory=set)
    digests: dict[int, DigestState] = field(default_factory=dict)
    open_digests: dict[str, int] = field(default_factory=dict)
    dirty_digests: set[int] = field(default_factory=set)
    entries: dict[str, DigestEntry] = field(default_factory=dict)
    edits: set[int] = field(default_factory=set)
    # Digests given a new edit row in this batch (id -> when), and those
    # whose edit waits for DIGEST_EDIT_INTERVAL_S.
    edited: dict[int, float] = field(default_factory=dict)
    deferred: set[int] = field(default_factory=set)
    # New digests get ids below zero until their row exists.
    next_temp_id: int = -1
    folded: int = 0
    posted: int = 0
    # When a group last folded (see storming's ``underway``).
    last_fold_at: float = float("-inf")
    # New groups of this batch whose first post is not decided yet: each of
    # them would queue a message too, so a fold decision counts them as ahead.
    arriving: set[str] = field(default_factory=set)

    def queued(self) -> None:
        """One more event queued in this batch (already counted if ``ahead`` is read later)."""
        if self.ahead is not None:
            self.ahead += 1


class AlertRelay:
    """Implements ``bot.alertmanager.webhook.AlertIntake``."""

    def __init__(
        self,
        *,
        db: Database,
        outbox: Outbox,
        repo: AlertGroupRepo,
        renderer: AlertRenderer,
        settings: AlertmanagerSettings,
        clock: Callable[[], float],
        heartbeats: HeartbeatSink | None = None,
        metrics: RelayMetrics | None = None,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._repo = repo
        self._renderer = renderer
        self._settings = settings
        self._clock = clock
        self._heartbeats: HeartbeatSink = heartbeats or WatchdogFilter()
        self._metrics = metrics or RelayMetrics(CollectorRegistry())
        budget = settings.send_budget
        self._budget = RateBudget(budget.burst, budget.per_minute, clock())
        self._throughput = SendThroughput()
        self._groups: dict[str, GroupState] = {}
        self._digests: dict[int, DigestState] = {}
        self._open_digests: dict[str, int] = {}
        self._entries: dict[str, DigestEntry] = {}
        self._digest_edited_at: dict[int, float] = {}
        # When a group last folded into a digest: a storm is underway while
        # that is less than fold_after_s ago.
        self._last_fold_at = float("-inf")
        # Digests whose latest change is not queued yet (see DIGEST_EDIT_INTERVAL_S).
        self._deferred: set[int] = set()
        # Batches and maintenance take turns on the in-memory state.
        self._state_lock = asyncio.Lock()
        self._group_commit: GroupCommit[_Intake, None] = GroupCommit(
            self._commit_intakes,
            lock=self._state_lock,
            name="alert-relay-commit",
            describe=lambda intake: f"alert relay: notification for receiver {_receiver(intake)!r}",
            # A constraint or API misuse is a bug, not an unavailable store.
            passthrough=(sqlite3.IntegrityError, sqlite3.ProgrammingError),
        )

    # -- start-up -------------------------------------------------------------

    async def load(self) -> None:
        """Read the groups and digests the store holds (call once, before accepting)."""
        await self._apply_backfill()
        loaded = await self._repo.load()
        self._groups, self._digests = _rebuild(loaded)
        for digest in self._digests.values():
            for key in digest.members:
                entry = self._renderer.digest_entry(self._groups[key])
                self._entries[key] = entry
                digest.used_bytes += entry.cost
        for digest in sorted(self._digests.values(), key=lambda d: d.id):
            if self._is_open(digest, self._groups.get):
                self._open_digests[digest.room_id] = digest.id
                # A change deferred before a crash is not recorded: show the
                # current state once (an identical edit changes nothing).
                self._deferred.add(digest.id)
        now = self._clock()
        window = 2 * self._budget.burst / self._budget.rate
        sent = self._budget.observe_sent(
            (await self._outbox.send_load(now - window, _MAX_SEND_TIMES)).sent_at
        )
        self._throughput.observe(sent)
        log.info("alert relay: %d groups and %d digests loaded", len(self._groups), len(self._digests))

    # -- the webhook side -----------------------------------------------------

    async def accept(self, payload: WebhookPayload) -> None:
        """Commit what the notification must deliver; ``StoreUnavailableError`` if the store cannot."""
        beats, relayed = split_heartbeats(payload, self._heartbeats.is_heartbeat)
        beat_source = None
        if any(b.status == "firing" for b in beats):
            beat_source = self._heartbeats.source_of(payload.external_url, payload.common_labels)
        if not relayed and beat_source is None:
            self._metrics.notifications.labels(result="accepted").inc()
            return
        intake = _Intake(note=notification_of(payload, relayed) if relayed else None, beat_source=beat_source)
        try:
            await self._group_commit.submit(intake)
        except StoreUnavailableError:
            self._metrics.notifications.labels(result="store_unavailable").inc()
            raise
        except Exception:
            self._metrics.notifications.labels(result="error").inc()
            raise
        self._metrics.notifications.labels(result="accepted").inc()

    async def _commit_intakes(self, batch: list[_Intake]) -> list[None]:
        await self._commit(batch)
        return [None] * len(batch)

    async def _commit(self, batch: list[_Intake], dirty: set[int] | None = None) -> None:
        now = self._clock()
        async with self._db.transaction() as tx:
            work = _Batch(now=now, last_fold_at=self._last_fold_at)
            work.dirty_digests.update(dirty or ())
            work.arriving = {
                job.note.group_key
                for job in batch
                if job.note is not None and not getattr(self._groups.get(job.note.group_key), "posts", ())
            }
            for job in batch:
                if job.beat_source is not None:
                    await self._heartbeats.heartbeat(job.beat_source, tx=tx)
                if job.note is not None:
                    await self._apply(work, job.note, tx)
            await self._flush_digests(work, tx)
            await self._repo.save(
                tx,
                [_group_row(s) for s in work.groups.values()],
                # Posts are written when made (in this batch: posted now); the
                # rest are unchanged, and rewriting them would cost a write each.
                [
                    _post_row(s.group_key, p)
                    for s in work.groups.values()
                    for p in s.posts
                    if p.posted_at == now
                ],
                new_episodes=work.new_episodes,
            )
        self._groups.update(work.groups)
        self._digests.update(work.digests)
        self._open_digests.update(work.open_digests)
        self._entries.update(work.entries)
        self._digest_edited_at.update(work.edited)
        self._deferred.difference_update(work.dirty_digests)
        self._deferred.update(work.deferred)
        self._last_fold_at = work.last_fold_at
        if work.posted:
            self._metrics.groups_posted.labels(how="message").inc(work.posted)
        if work.folded:
            self._metrics.groups_posted.labels(how="digest").inc(work.folded)

    async def _ahead(self, work: _Batch, tx: Tx) -> int:
        """Events queued before the next one, and the new groups arriving with it.

        The queue is read once per batch, when a decision needs it. The
        batch's other new groups count too: a storm's groups arrive many to a
        batch, and the first of them should fold like the rest rather than
        each queue a message ahead of the digest.
        """
        if work.ahead is None:
            # Inside our own transaction: what the sender recorded so far.
            load = await self._outbox.send_load(self._budget.last_seen, _MAX_SEND_TIMES, tx=tx)
            self._throughput.observe(self._budget.observe_sent(load.sent_at))
            work.ahead = load.pending
        return work.ahead + len(work.arriving)

    # -- one notification ---------------------------------------------------------

    def _group(self, work: _Batch, key: str) -> GroupState | None:
        return work.groups.get(key) or self._groups.get(key)

    async def _apply(self, work: _Batch, note: Notification, tx: Tx) -> None:
        work.arriving.discard(note.group_key)  # decided now, no longer "arriving with it"
        previous = self._group(work, note.group_key)
        state, change = merge(previous, note, work.now)
        if previous is not None and not change.changed and previous.posts:
            return  # a repeat: nothing new to show, nothing to store
        if change.new_episode:
            work.new_episodes.add(state.group_key)
        rooms = [p.room_id for p in state.posts] or route(
            self._settings.routes, self._settings.default_rooms, state.receiver, state.common_labels
        )
        if not rooms:
            log.debug("alert relay: no room for a group of receiver %r", state.receiver)
        for room_id in rooms:
            post = state.post_in(room_id)
            if post is None:
                state = state.with_post(await self._first_post(work, state, room_id, tx))
            elif post.digest_id is not None:
                work.dirty_digests.add(post.digest_id)
                work.entries[state.group_key] = self._renderer.digest_entry(state)
            elif post.message is not None:
                await self._update_message(work, state, change, post, tx)
        work.groups[state.group_key] = state

    def _storming(self, work: _Batch, ahead: int) -> bool:
        budget = self._settings.send_budget
        underway = work.now - work.last_fold_at < budget.fold_after_s
        return storming(
            self._budget,
            ahead,
            work.now,
            budget.max_delay_s,
            self._throughput,
            budget.fold_after_s,
            underway=underway,
        )

    async def _first_post(self, work: _Batch, state: GroupState, room_id: str, tx: Tx) -> Post:
        ahead = await self._ahead(work, tx)
        if self._storming(work, ahead):
            digest = self._digest_for(work, room_id, state)
            work.folded += 1
            work.last_fold_at = work.now
            return Post(room_id, None, None, digest.id, work.now)
        mention = state.status == "firing" and self._renderer.should_mention(state)
        message = self._renderer.group(state, mention=mention, now=work.now)
        content = mentioning_content(message, room=mention)
        outbox_id = await self._outbox.send_message(room_id, content, tx=tx)
        work.queued()
        work.posted += 1
        return Post(room_id, outbox_id, None, None, work.now)

    async def _update_message(
        self, work: _Batch, state: GroupState, change: GroupChange, post: Post, tx: Tx
    ) -> None:
        assert post.message is not None
        if post.message_event_id is None and post.message_outbox_id is not None:
            # Still queued behind other events: nobody has seen it yet, so it
            # gets the new content itself (no edit, no thread line needed).
            mention = state.status == "firing" and self._renderer.should_mention(state)
            message = self._renderer.group(state, mention=mention, now=work.now)
            content = mentioning_content(message, room=mention)
            queued = OutboxId(post.message_outbox_id)
            if await self._outbox.rewrite_pending(post.room_id, queued, content, tx=tx):
                return
        content = mentioning_content(self._renderer.group(state, now=work.now), room=False)
        edit_id = await self._outbox.edit(
            post.room_id, stored_ref(post.message), content, supersede=True, tx=tx
        )
        if edit_id not in work.edits:
            work.edits.add(edit_id)
            work.queued()
        if not self._settings.thread_updates or not (change.new or change.resolved or change.group_resolved):
            return
        ahead = await self._ahead(work, tx)
        if self._storming(work, ahead):
            return  # the edit shows the change; a thread line would cost budget a storm needs
        line = mentioning_content(self._renderer.thread_line(state, change), room=False)
        await self._outbox.send_message(post.room_id, line, thread_root=stored_ref(post.message), tx=tx)
        work.queued()

    # -- digests ------------------------------------------------------------------

    def _digest(self, work: _Batch, digest_id: int) -> DigestState:
        if digest_id not in work.digests:
            original = self._digests[digest_id]
            work.digests[digest_id] = replace(original, members=list(original.members))
        return work.digests[digest_id]

    def _entry(self, work: _Batch, key: str) -> DigestEntry | None:
        return work.entries.get(key) or self._entries.get(key)

    def _is_open(self, digest: DigestState, group: Callable[[str], GroupState | None]) -> bool:
        """A digest takes new groups while it has room and something in it still fires."""
        if digest.used_bytes >= self._renderer.digest_capacity():
            return False
        return any((g := group(k)) is not None and g.status == "firing" for k in digest.members)

    def _digest_for(self, work: _Batch, room_id: str, state: GroupState) -> DigestState:
        """The room's open digest with ``state`` added (a new digest if none has room)."""
        entry = self._renderer.digest_entry(state)
        work.entries[state.group_key] = entry
        digest_id = work.open_digests.get(room_id, self._open_digests.get(room_id))
        digest = None if digest_id is None else self._digest(work, digest_id)
        capacity = self._renderer.digest_capacity()
        if digest is not None and (
            digest.used_bytes + entry.cost > capacity
            or (digest.id > 0 and not self._is_open(digest, lambda key: self._group(work, key)))
        ):
            digest = None
        if digest is None:
            digest = DigestState(work.next_temp_id, room_id, None, None, work.now)
            work.next_temp_id -= 1
            work.digests[digest.id] = digest
            work.open_digests[room_id] = digest.id
            # Its message is queued when the batch flushes: counted now, for
            # the decisions about the batch's later groups.
            work.queued()
        digest.members.append(state.group_key)
        digest.used_bytes += entry.cost
        work.dirty_digests.add(digest.id)
        return digest

    async def _flush_digests(self, work: _Batch, tx: Tx) -> None:
        """Post new digests, edit changed ones: one event per digest per batch at most."""
        for digest_id in sorted(work.dirty_digests):
            digest = self._digest(work, digest_id)
            states = [s for key in digest.members if (s := self._group(work, key)) is not None]
            # Firing groups first, then resolved; each in the order they joined.
            states.sort(key=lambda s: s.status != "firing")
            entries = {s.group_key: e for s in states if (e := self._entry(work, s.group_key)) is not None}
            content = mentioning_content(self._renderer.digest(states, entries), room=False)
            if digest.id > 0:
                assert digest.message is not None
                if digest.message_event_id is None and digest.message_outbox_id is not None:
                    queued = OutboxId(digest.message_outbox_id)
                    if await self._outbox.rewrite_pending(digest.room_id, queued, content, tx=tx):
                        continue
                target = stored_ref(digest.message)
                if await self._outbox.supersede_edit(digest.room_id, target, content, tx=tx) is not None:
                    continue
                if work.now - self._digest_edited_at.get(digest.id, 0.0) < DIGEST_EDIT_INTERVAL_S:
                    work.deferred.add(digest.id)
                    continue
                await self._outbox.edit(digest.room_id, target, content, tx=tx)
                work.edited[digest.id] = work.now
                work.queued()
                continue
            outbox_id = await self._outbox.send_message(digest.room_id, content, tx=tx)
            real_id = await self._repo.insert_digest(tx, digest.room_id, outbox_id, work.now)
            self._renumber(work, digest, real_id, outbox_id)

    def _renumber(self, work: _Batch, digest: DigestState, real_id: int, outbox_id: int) -> None:
        temp_id = digest.id
        del work.digests[temp_id]
        digest = replace(digest, id=real_id, message_outbox_id=outbox_id)
        work.digests[real_id] = digest
        if work.open_digests.get(digest.room_id) == temp_id:
            work.open_digests[digest.room_id] = real_id
        for key in digest.members:
            state = work.groups[key]
            post = state.post_in(digest.room_id)
            if post is not None and post.digest_id == temp_id:
                work.groups[key] = state.with_post(replace(post, digest_id=real_id))

    # -- deferred digest edits -----------------------------------------------------------

    async def run_digest_flusher(self, stop: asyncio.Event) -> None:
        """Root task: queue the digest edits that waited for DIGEST_EDIT_INTERVAL_S."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _FLUSH_TICK_S)
            try:
                await self.flush_deferred()
            except sqlite3.OperationalError as error:
                log.warning("alert relay: a deferred digest edit failed (%s); retrying", error)
            except (sqlite3.Error, ValueError):
                log.exception("alert relay: a deferred digest edit failed; retrying")

    async def flush_deferred(self) -> None:
        """Queue the deferred digest edits that are due now."""
        if not self._deferred:
            return
        async with self._state_lock:
            now = self._clock()
            due = {
                d
                for d in self._deferred
                if d in self._digests and now - self._digest_edited_at.get(d, 0.0) >= DIGEST_EDIT_INTERVAL_S
            }
            self._deferred.intersection_update(self._digests)
            if due:
                await self._commit([], dirty=due)

    # -- maintenance ------------------------------------------------------------------

    async def run_maintenance(self, stop: asyncio.Event) -> None:
        """Root task: copy event ids of sent messages, forget long-resolved groups."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), MAINTENANCE_INTERVAL_S)
            if stop.is_set():
                return
            try:
                await self.maintain()
            except sqlite3.OperationalError as error:
                # Locked or full: an operational condition, not a bug; no stack trace.
                log.warning(
                    "alert relay: maintenance failed (%s); retrying in %.0f s", error, MAINTENANCE_INTERVAL_S
                )
            except (sqlite3.Error, ValueError):
                log.exception("alert relay: maintenance failed; retrying in %.0f s", MAINTENANCE_INTERVAL_S)

    async def maintain(self) -> None:
        async with self._state_lock:
            await self._apply_backfill()
            cutoff = self._clock() - self._settings.resolved_retention_s
            for key in await self._repo.prune_resolved(cutoff):
                self._groups.pop(key, None)
                self._entries.pop(key, None)
            live = {p.digest_id for g in self._groups.values() for p in g.posts if p.digest_id is not None}
            for digest_id in [d for d in self._digests if d not in live]:
                digest = self._digests.pop(digest_id)
                if self._open_digests.get(digest.room_id) == digest_id:
                    del self._open_digests[digest.room_id]

    async def _apply_backfill(self) -> None:
        filled = await self._repo.backfill_event_ids()
        for (key, room_id), event_id in filled.posts.items():
            state = self._groups.get(key)
            post = None if state is None else state.post_in(room_id)
            if state is not None and post is not None:
                self._groups[key] = state.with_post(replace(post, message_event_id=event_id))
        for digest_id, event_id in filled.digests.items():
            if digest_id in self._digests:
                self._digests[digest_id].message_event_id = event_id
        for key, room_id in filled.failed_posts:
            # Never delivered: forget the post, so the group's next change posts it again.
            log.warning("alert relay: a group's message in %s was never delivered", room_id)
            state = self._groups.get(key)
            if state is not None:
                self._groups[key] = replace(
                    state, posts=tuple(p for p in state.posts if p.room_id != room_id)
                )
            await self._repo.delete_post(key, room_id)

    # -- for tests and the 🔕 reaction ----------------------------------------------

    def group(self, group_key: str) -> GroupState | None:
        return self._groups.get(group_key)

    def digests(self) -> list[DigestState]:
        return list(self._digests.values())


def _receiver(intake: _Intake) -> str:
    return intake.note.receiver if intake.note is not None else "?"


def _group_row(state: GroupState) -> GroupRow:
    return GroupRow(
        group_key=state.group_key,
        receiver=state.receiver,
        status=state.status,
        group_labels=dict(state.group_labels),
        common_labels=dict(state.common_labels),
        external_url=state.external_url,
        state=state.state_json(),
        first_seen=state.first_seen,
        updated_at=state.updated_at,
        resolved_at=state.resolved_at,
    )


def _post_row(group_key: str, post: Post) -> PostRow:
    return PostRow(
        group_key=group_key,
        room_id=post.room_id,
        message_outbox_id=post.message_outbox_id,
        message_event_id=post.message_event_id,
        digest_id=post.digest_id,
        posted_at=post.posted_at,
    )


def _rebuild(loaded: LoadedAlertState) -> tuple[dict[str, GroupState], dict[int, DigestState]]:
    posts: dict[str, list[Post]] = {}
    digests = {
        d.id: DigestState(d.id, d.room_id, d.message_outbox_id, d.message_event_id, d.created_at)
        for d in loaded.digests
    }
    for row in loaded.posts:
        posts.setdefault(row.group_key, []).append(
            Post(row.room_id, row.message_outbox_id, row.message_event_id, row.digest_id, row.posted_at)
        )
        if row.digest_id is not None and row.digest_id in digests:
            digests[row.digest_id].members.append(row.group_key)
    groups = {}
    for group in loaded.groups:
        groups[group.group_key] = GroupState(
            group_key=group.group_key,
            receiver=group.receiver,
            status="firing" if group.status == "firing" else "resolved",
            group_labels=group.group_labels,
            common_labels=group.common_labels,
            common_annotations=group.state.get("common_annotations", {}),
            external_url=group.external_url,
            alerts=tuple(AlertState.from_json(a) for a in group.state.get("alerts", [])),
            first_seen=group.first_seen,
            updated_at=group.updated_at,
            resolved_at=group.resolved_at,
            posts=tuple(posts.get(group.group_key, ())),
        )
    return groups, digests
