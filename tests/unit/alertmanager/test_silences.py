"""Silences on behalf of people: the service's rules and the 🔕 reaction, against a fake Alertmanager.

The store, outbox, audit log, templates and permission checks are the real
ones; only Alertmanager (an external system) is a fake.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.alertmanager.matchers import Matcher, MatchType
from bot.alertmanager.models import Alert, AlertmanagerNoAnswer, AlertmanagerRejected, Silence
from bot.alertmanager.reaction import SilenceReactionHandler, group_matchers, is_silence_key
from bot.alertmanager.silences import OutcomeUnknown, SilenceService
from bot.errors import UserError
from bot.outbox import Outbox
from bot.permissions import Authorizer
from bot.render.templates import Templates
from bot.schema import MIGRATIONS
from bot.store.audit import AuditRepo
from bot.store.database import Database
from bot.store.handled import HandledEvents
from config.settings import PermissionsSettings
from tests.stores import StoreBackend

ROOM = "!alerts:example.org"
ALICE = "@alice:example.org"
MALLORY = "@mallory:example.org"
GROUP_EVENT = "$group-message"
T0 = 1_700_000_000.0


@dataclass
class FakeAlertmanager:
    """Alertmanager's silence API as far as the service uses it."""

    silences_made: list[Silence] = field(default_factory=list)
    firing: list[Alert] = field(default_factory=list)
    refuse: str | None = None
    # Take the change, then never answer (a hung or dying Alertmanager).
    no_answer: bool = False
    ids: itertools.count[int] = field(default_factory=itertools.count)

    async def alerts(
        self,
        filters: Sequence[Matcher] = (),
        *,
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
    ) -> list[Alert]:
        return list(self.firing)

    async def silences(self) -> list[Silence]:
        return list(self.silences_made)

    async def create_silence(
        self,
        matchers: Sequence[Matcher],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str:
        if self.refuse is not None:
            raise AlertmanagerRejected(400, self.refuse)
        silence_id = f"aaaaaaaa-{next(self.ids):04d}-bbbb-cccc-dddddddddddd"
        self.silences_made.append(
            Silence(silence_id, tuple(matchers), starts_at, ends_at, created_by, comment, "active")
        )
        if self.no_answer:
            raise AlertmanagerNoAnswer("no answer within 2 s")
        return silence_id

    async def expire_silence(self, silence_id: str) -> None:
        if self.no_answer:
            raise AlertmanagerNoAnswer("ServerDisconnectedError")
        self.silences_made = [
            Silence(s.id, s.matchers, s.starts_at, s.ends_at, s.created_by, s.comment, "expired")
            if s.id == silence_id
            else s
            for s in self.silences_made
        ]


@dataclass(frozen=True)
class Group:
    group_labels: dict[str, str]
    common_labels: dict[str, str]
    thread_root: str = GROUP_EVENT


@dataclass
class Groups:
    by_event: dict[str, Group] = field(default_factory=dict)

    async def find_by_message(self, room_id: str, event_id: str) -> Group | None:
        return self.by_event.get(event_id) if room_id == ROOM else None


@dataclass
class Harness:
    db: Database
    alertmanager: FakeAlertmanager
    service: SilenceService
    groups: Groups
    handler: SilenceReactionHandler

    async def thread_messages(self) -> list[tuple[str, str | None]]:
        rows = await self.db.fetchall("SELECT payload, root_event_id FROM outbox ORDER BY id")
        return [(json.loads(row["payload"])["body"], row["root_event_id"]) for row in rows]

    async def audit(self) -> list[tuple[str, str, str]]:
        return [(e.actor, e.action, e.outcome) for e in await AuditRepo(self.db).recent(50)]


@pytest.fixture
async def harness(tmp_path: Path, store_backend: StoreBackend) -> AsyncIterator[Harness]:
    db = await store_backend.open(tmp_path / "store.sqlite3", migrations=MIGRATIONS, clock=lambda: T0)
    fake = FakeAlertmanager()
    service = SilenceService(
        fake,
        AuditRepo(db),
        clock=lambda: T0,
        is_heartbeat=lambda labels: labels.get("alertname") == "Watchdog",
        default_duration=timedelta(hours=2),
        max_duration=timedelta(days=7),
    )
    groups = Groups(
        {GROUP_EVENT: Group({"alertname": "DiskFull", "namespace": "db"}, {"severity": "critical"})}
    )
    handler = SilenceReactionHandler(
        service,
        groups=lambda: groups,
        thread_root=lambda group: getattr(group, "thread_root", None),
        outbox=Outbox(db, clock=lambda: T0),
        templates=Templates(),
        authorizer=Authorizer(),
        permissions=PermissionsSettings.model_validate({"commands": {"silence": {"users": [ALICE]}}}),
        handled=HandledEvents(db),
        audit=AuditRepo(db),
        prefix="!",
    )
    try:
        yield Harness(db, fake, service, groups, handler)
    finally:
        await db.close()


# --- the service -----------------------------------------------------------


async def test_a_silence_is_made_in_the_users_name_and_audited(harness: Harness) -> None:
    """createdBy is the Matrix user, the end is start + duration, and an audit row names the silence."""
    matchers = [Matcher("alertname", "DiskFull")]
    silence_id, ends = await harness.service.silence(ALICE, ROOM, matchers, timedelta(hours=1), "disk swap")
    (made,) = harness.alertmanager.silences_made
    assert (made.id, made.created_by, made.comment) == (silence_id, ALICE, "disk swap")
    assert ends == datetime.fromtimestamp(T0, UTC) + timedelta(hours=1) == made.ends_at
    (entry,) = await AuditRepo(harness.db).recent(5)
    assert (entry.actor, entry.action, entry.outcome, entry.detail) == (
        ALICE,
        "silence:create",
        "ok",
        silence_id,
    )
    assert entry.args == '{alertname="DiskFull"} for 1h via command'


async def test_a_refused_silence_is_audited_as_failed(harness: Harness) -> None:
    """Alertmanager's refusal reaches the user as its own words, and the attempt is audited."""
    harness.alertmanager.refuse = "silence invalid: bad matcher"
    with pytest.raises(UserError, match="silence invalid: bad matcher"):
        await harness.service.silence(ALICE, ROOM, [Matcher("a", "b")], timedelta(hours=1), "x")
    assert await harness.audit() == [(ALICE, "silence:create", "failed")]


async def test_a_silence_without_an_answer_is_not_called_failed(harness: Harness) -> None:
    """No answer to a new silence: the user is told it may exist and to check; audited as unknown."""
    harness.alertmanager.no_answer = True
    with pytest.raises(OutcomeUnknown) as caught:
        await harness.service.silence(ALICE, ROOM, [Matcher("a", "b")], timedelta(hours=1), "x")
    message = str(caught.value)
    assert "did not answer (no answer within 2 s)" in message
    assert "may have been created" in message and "check `!silences`" in message
    assert "failed" not in message and "unreachable" not in message
    assert await harness.audit() == [(ALICE, "silence:create", "unknown")]


async def test_an_unsilence_without_an_answer_is_not_called_failed(harness: Harness) -> None:
    """No answer to an expiry: the user is told it may be lifted and to check; audited as unknown."""
    silence_id, _ = await harness.service.silence(ALICE, ROOM, [Matcher("a", "b")], timedelta(hours=1), "x")
    harness.alertmanager.no_answer = True
    with pytest.raises(OutcomeUnknown, match="may have been lifted anyway: check `!silences`"):
        await harness.service.unsilence(ALICE, ROOM, silence_id)
    assert (ALICE, "silence:expire", "unknown") in await harness.audit()


async def test_unsilence_takes_a_unique_prefix_of_a_live_silence(harness: Harness) -> None:
    """A unique prefix (8+ characters) picks a live silence; short, unknown or ambiguous ones are refused."""
    first, _ = await harness.service.silence(ALICE, ROOM, [Matcher("a", "1")], timedelta(hours=1), "x")
    await harness.service.silence(ALICE, ROOM, [Matcher("a", "2")], timedelta(hours=1), "x")
    with pytest.raises(UserError, match="at least its first 8"):
        await harness.service.unsilence(ALICE, ROOM, first[:7])
    with pytest.raises(UserError, match="matches 2 silences"):
        await harness.service.unsilence(ALICE, ROOM, first[:8])
    lifted = await harness.service.unsilence(ALICE, ROOM, first[:13].upper())
    assert lifted.id == first
    with pytest.raises(UserError, match="no active silence"):
        await harness.service.unsilence(ALICE, ROOM, first)
    assert (ALICE, "silence:expire", "ok") in await harness.audit()


async def test_firing_leaves_out_heartbeats_and_counts_suppressed(harness: Harness) -> None:
    """Heartbeats are never listed; silenced or inhibited alerts are counted, not listed."""
    start = datetime.fromtimestamp(T0, UTC)

    def alert(name: str, state: str) -> Alert:
        return Alert(name, {"alertname": name}, {}, start, state, (), ())

    harness.alertmanager.firing = [
        alert("Watchdog", "active"),
        alert("DiskFull", "active"),
        alert("Cert", "suppressed"),
    ]
    active, suppressed = await harness.service.firing()
    assert [a.labels["alertname"] for a in active] == ["DiskFull"]
    assert suppressed == 1


# --- the 🔕 reaction ---------------------------------------------------------


def test_the_bell_key_is_recognised_with_or_without_the_variation_selector() -> None:
    """🔕 and 🔕 followed by U+FE0F both count; other keys do not."""
    assert is_silence_key("🔕") and is_silence_key("🔕\ufe0f")
    assert not is_silence_key("🔔") and not is_silence_key("✅")


def test_a_group_is_silenced_by_its_group_labels_else_its_common_labels() -> None:
    """Group labels become equality matchers; with group_by: [] the common labels stand in."""
    assert group_matchers(Group({"alertname": "A", "namespace": ""}, {"x": "y"})) == [
        Matcher("alertname", "A")
    ]
    assert group_matchers(Group({}, {"job": "api", "alertname": "B"})) == [
        Matcher("alertname", "B", MatchType.EQUAL),
        Matcher("job", "api", MatchType.EQUAL),
    ]
    assert group_matchers(Group({}, {})) == []


async def test_bell_on_a_group_silences_it_and_says_so_in_its_thread(harness: Harness) -> None:
    """🔕 by an allowed user silences the group for the default time, in their name, said in its thread."""
    await harness.handler(ROOM, ALICE, GROUP_EVENT, "🔕", "$reaction-1")
    (made,) = harness.alertmanager.silences_made
    assert set(made.matchers) == {Matcher("alertname", "DiskFull"), Matcher("namespace", "db")}
    assert made.created_by == ALICE and made.ends_at - made.starts_at == timedelta(hours=2)
    ((body, root),) = await harness.thread_messages()
    assert root == GROUP_EVENT
    assert body.startswith(f"🔕 Silenced by {ALICE} for 2h") and made.id in body
    assert (ALICE, "silence:create", "ok") in await harness.audit()


async def test_bell_from_someone_not_allowed_silences_nothing(harness: Harness) -> None:
    """A user outside the "silence" rule is told so in the thread; no silence, an audit row."""
    await harness.handler(ROOM, MALLORY, GROUP_EVENT, "🔕", "$reaction-1")
    assert harness.alertmanager.silences_made == []
    ((body, root),) = await harness.thread_messages()
    assert root == GROUP_EVENT and "may not silence" in body
    assert await harness.audit() == [(MALLORY, "silence:reaction", "denied")]


async def test_bell_replayed_or_doubled_makes_one_silence(harness: Harness) -> None:
    """A replayed reaction acts once; a second 🔕 on a silenced group points at the existing silence."""
    await harness.handler(ROOM, ALICE, GROUP_EVENT, "🔕", "$reaction-1")
    await harness.handler(ROOM, ALICE, GROUP_EVENT, "🔕", "$reaction-1")
    await harness.handler(ROOM, ALICE, GROUP_EVENT, "🔕", "$reaction-2")
    assert len(harness.alertmanager.silences_made) == 1
    bodies = [body for body, _ in await harness.thread_messages()]
    assert len(bodies) == 2 and bodies[1].startswith("🔕 Already silenced")


async def test_other_reactions_and_other_messages_are_ignored(harness: Harness) -> None:
    """A different key, or 🔕 on a message that is no alert group, does nothing at all."""
    await harness.handler(ROOM, ALICE, GROUP_EVENT, "👍", "$reaction-1")
    await harness.handler(ROOM, ALICE, "$some-chat-message", "🔕", "$reaction-2")
    assert harness.alertmanager.silences_made == []
    assert await harness.thread_messages() == []


async def test_a_failed_bell_silence_is_reported_in_the_thread(harness: Harness) -> None:
    """If Alertmanager refuses, the thread says why, so nobody believes the group is silenced."""
    harness.alertmanager.refuse = "silence invalid"
    await harness.handler(ROOM, ALICE, GROUP_EVENT, "🔕", "$reaction-1")
    ((body, _),) = await harness.thread_messages()
    assert body.startswith(f"⚠️ 🔕 by {ALICE} failed") and "silence invalid" in body


async def test_a_bell_silence_without_an_answer_is_not_reported_as_failed(harness: Harness) -> None:
    """No answer to a 🔕 silence: the thread says it may exist, never that it failed."""
    harness.alertmanager.no_answer = True
    await harness.handler(ROOM, ALICE, GROUP_EVENT, "🔕", "$reaction-1")
    ((body, _),) = await harness.thread_messages()
    assert body.startswith(f"⚠️ 🔕 by {ALICE}: Alertmanager did not answer") and "failed" not in body
