"""The durable outbox and its sender, against a real SQLite file and a fake homeserver."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.metrics import Metrics
from bot.outbox import (
    EventTooLargeError,
    Outbox,
    OutboxId,
    OutboxSender,
    OutboxState,
    PermanentSendError,
    RateLimited,
    TransientSendError,
)
from bot.outbox.events import OUTBOX_KEY
from bot.outbox.repo import OutboxRepo
from bot.schema import MIGRATIONS
from bot.store import Database
from config.settings import OutboxSettings
from tests.stores import open_store, other_connection_rows

# The store on SQLite and on PostgreSQL (tests.stores).
pytestmark = pytest.mark.usefixtures("store_backend")

ROOM_A = "!alerts:example.org"
ROOM_B = "!ops:example.org"

# Outcomes a FakeHomeserver can be told to produce for a room's next calls.
CRASH = "crash"  # store the event, then never answer: the bot dies mid-request
LOST = "lost"  # store the event, then fail: the response was lost on the way back
Outcome = Exception | str


@dataclass(frozen=True)
class Call:
    room_id: str
    event_type: str
    content: dict[str, Any]
    txn_id: str
    at: float  # time.monotonic()


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    event_type: str
    content: dict[str, Any]


class FakeHomeserver:
    """The network edge: /send with Synapse's txn-id deduplication and scripted failures."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.timeline: dict[str, list[StoredEvent]] = defaultdict(list)
        self.down: set[str] = set()  # rooms whose sends always fail transiently
        self.crashed = asyncio.Event()
        self._plans: dict[str, deque[Outcome]] = defaultdict(deque)
        self._by_txn: dict[str, str] = {}

    def plan(self, room_id: str, *outcomes: Outcome) -> None:
        """The room's next calls end with these outcomes, in order; later calls succeed."""
        self._plans[room_id].extend(outcomes)

    async def send_event(self, room_id: str, event_type: str, content: dict[str, Any], txn_id: str) -> str:
        self.calls.append(Call(room_id, event_type, content, txn_id, time.monotonic()))
        if room_id in self.down:
            raise TransientSendError("connection refused")
        plan = self._plans[room_id]
        outcome = plan.popleft() if plan else None
        if isinstance(outcome, Exception):
            raise outcome
        event_id = self._persist(room_id, event_type, content, txn_id)
        if outcome == CRASH:
            self.crashed.set()
            await asyncio.Future()  # never answers; cancelled when the sender stops
        if outcome == LOST:
            raise TransientSendError("read timeout")
        return event_id

    def _persist(self, room_id: str, event_type: str, content: dict[str, Any], txn_id: str) -> str:
        # Synapse answers a repeated txn id from the same device with the
        # first event's id instead of creating another event.
        if txn_id in self._by_txn:
            return self._by_txn[txn_id]
        event_id = f"$ev{len(self._by_txn) + 1}"
        self._by_txn[txn_id] = event_id
        self.timeline[room_id].append(StoredEvent(event_id, event_type, content))
        return event_id

    def bodies(self, room_id: str) -> list[str]:
        return [e.content["body"] for e in self.timeline[room_id]]

    def txns(self, room_id: str | None = None) -> list[str]:
        return [c.txn_id for c in self.calls if room_id is None or c.room_id == room_id]


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def text(body: str) -> dict[str, Any]:
    return {"msgtype": "m.notice", "body": body}


async def eventually(predicate: Callable[[], bool], within_s: float = 3.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


@dataclass
class Harness:
    db: Database
    hs: FakeHomeserver
    metrics: Metrics
    sender: OutboxSender
    outbox: Outbox
    clock: FakeClock

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels or {})


SETTINGS = OutboxSettings(max_backoff_s=0.05, max_attempts_permanent=3)
# One row in flight per room: a room's rows strictly one after another.
STRICT = OutboxSettings(max_backoff_s=0.05, max_attempts_permanent=3, max_in_flight_per_room=1)


async def make_harness(
    path: Path, hs: FakeHomeserver, settings: OutboxSettings = SETTINGS, initial_backoff_s: float = 0.005
) -> Harness:
    clock = FakeClock()
    db = await open_store(path, migrations=MIGRATIONS, clock=clock)
    metrics = Metrics()
    sender = OutboxSender(db, hs, settings, metrics, initial_backoff_s=initial_backoff_s)
    outbox = Outbox(db, on_enqueued=sender.wake, max_in_flight_per_room=settings.max_in_flight_per_room)
    return Harness(db, hs, metrics, sender, outbox, clock)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "readybot.sqlite3"


@pytest.fixture
async def h(db_path: Path) -> AsyncIterator[Harness]:
    harness = await make_harness(db_path, FakeHomeserver())
    yield harness
    await harness.db.close()


@pytest.fixture
async def strict(db_path: Path) -> AsyncIterator[Harness]:
    harness = await make_harness(db_path, FakeHomeserver(), STRICT)
    yield harness
    await harness.db.close()


@asynccontextmanager
async def running(sender: OutboxSender) -> AsyncIterator[None]:
    """Run the sender for the block; it must stop promptly at the end."""
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=1.0)


def raw_row(path: Path, outbox_id: int) -> dict[str, Any] | None:
    """A row read by a separate plain connection, as another process would see it."""
    rows = other_connection_rows(path, "SELECT * FROM outbox WHERE id = ?", (outbox_id,))
    return rows[0] if rows else None


# --- enqueueing ---------------------------------------------------------------


async def test_enqueue_commits_before_returning(h: Harness, db_path: Path) -> None:
    """When send_message returns, another connection already sees the pending row and its txn id."""
    outbox_id = await h.outbox.send_message(ROOM_A, text("disk full"))

    row = raw_row(db_path, outbox_id)
    assert row is not None
    assert (row["room_id"], row["state"], row["kind"]) == (ROOM_A, "pending", "message")
    assert len(row["txn_id"]) == 32
    assert int(row["txn_id"], 16) >= 0  # uuid4 hex


async def test_each_row_gets_its_own_txn_id(h: Harness, db_path: Path) -> None:
    """Two identical messages are two rows with different transaction ids."""
    first = await h.outbox.send_message(ROOM_A, text("same"))
    second = await h.outbox.send_message(ROOM_A, text("same"))
    rows = [raw_row(db_path, first), raw_row(db_path, second)]
    assert rows[0] is not None and rows[1] is not None
    assert rows[0]["txn_id"] != rows[1]["txn_id"]


async def test_enqueue_in_callers_transaction_rolls_back_with_it(h: Harness, db_path: Path) -> None:
    """With tx=, the row is committed or rolled back together with the caller's own writes."""
    queued: list[OutboxId] = []

    async def enqueue_then_fail() -> None:
        async with h.db.transaction() as tx:
            queued.append(await h.outbox.send_message(ROOM_A, text("approve?"), tx=tx))
            raise RuntimeError("caller failed after enqueueing")

    with pytest.raises(RuntimeError):
        await enqueue_then_fail()
    assert raw_row(db_path, queued[0]) is None


async def test_sender_never_sends_a_row_whose_transaction_rolls_back(h: Harness) -> None:
    """A woken sender waits for the enqueueing transaction and never sends a rolled-back row."""

    async def enqueue_then_fail() -> None:
        async with h.db.transaction() as tx:
            await h.outbox.send_message(ROOM_A, text("never"), tx=tx)
            await asyncio.sleep(0.05)  # the sender is awake meanwhile
            raise RuntimeError("rolled back")

    async with running(h.sender):
        with pytest.raises(RuntimeError):
            await enqueue_then_fail()
        await h.outbox.send_message(ROOM_A, text("after"))
        await eventually(lambda: h.hs.bodies(ROOM_A) == ["after"])
    assert h.hs.bodies(ROOM_A) == ["after"]


@pytest.mark.parametrize(
    ("room_id", "content", "error"),
    [
        ("#alerts:example.org", text("x"), ValueError),
        (ROOM_A, {"body": "no msgtype"}, ValueError),
        (ROOM_A, {"msgtype": "m.text", "body": float("nan"), "n": 1}, ValueError),
        (ROOM_A, {"msgtype": "m.text", "body": "x", "bad": object()}, ValueError),
    ],
)
async def test_enqueue_rejects_bad_input(
    h: Harness, room_id: str, content: dict[str, Any], error: type
) -> None:
    """Aliases, content without msgtype/body and content that is not JSON are refused at enqueue."""
    with pytest.raises(error):
        await h.outbox.send_message(room_id, content)


async def test_enqueue_rejects_oversized_event(h: Harness) -> None:
    """Content that would exceed Matrix's event size limit is refused while the caller can truncate."""
    with pytest.raises(EventTooLargeError):
        await h.outbox.send_message(ROOM_A, text("x" * 70_000))


async def test_relation_must_point_at_a_known_row_of_the_same_room(h: Harness) -> None:
    """A relation to an unknown row, a row of another room, or a malformed event id is refused."""
    other_room_row = await h.outbox.send_message(ROOM_B, text("elsewhere"))
    with pytest.raises(ValueError, match="another room"):
        await h.outbox.react(ROOM_A, other_room_row, "✅")
    with pytest.raises(ValueError, match="does not exist"):
        await h.outbox.react(ROOM_A, OutboxId(999), "✅")
    with pytest.raises(ValueError, match="event id"):
        await h.outbox.react(ROOM_A, "not-an-event-id", "✅")
    with pytest.raises(TypeError):
        await h.outbox.react(ROOM_A, True, "✅")  # type: ignore[arg-type]


# --- delivery order and failures ----------------------------------------------


async def test_room_order_holds_under_transient_failures_with_one_in_flight(strict: Harness) -> None:
    """With max_in_flight_per_room 1, a room's next row is not tried until the previous one is sent."""
    h = strict
    h.hs.plan(ROOM_A, TransientSendError("502"), TransientSendError("timeout"))
    for n in range(1, 4):
        await h.outbox.send_message(ROOM_A, text(f"m{n}"))

    async with running(h.sender):
        await eventually(lambda: len(h.hs.timeline[ROOM_A]) == 3)

    assert h.hs.bodies(ROOM_A) == ["m1", "m2", "m3"]
    txns = h.hs.txns(ROOM_A)
    assert txns[0] == txns[1] == txns[2]  # m1 three times, with the same txn id
    assert len(set(txns)) == 3 and len(txns) == 5
    assert h.sample("readybot_outbox_send_failures_total", {"reason": "transient"}) == 2


async def test_rooms_are_independent(h: Harness) -> None:
    """A room whose sends keep failing does not hold up another room."""
    h.hs.down.add(ROOM_A)
    stuck = await h.outbox.send_message(ROOM_A, text("stuck"))
    await h.outbox.send_message(ROOM_B, text("b1"))
    await h.outbox.send_message(ROOM_B, text("b2"))

    async with running(h.sender):
        await eventually(lambda: h.hs.bodies(ROOM_B) == ["b1", "b2"])
        assert await h.outbox.state(stuck) is OutboxState.PENDING
        assert len(h.hs.txns(ROOM_A)) >= 1


async def test_retries_back_off_up_to_the_ceiling(db_path: Path) -> None:
    """While the homeserver is down, attempts slow down exponentially and never wait past the ceiling."""
    hs = FakeHomeserver()
    hs.down.add(ROOM_A)
    h = await make_harness(db_path, hs, OutboxSettings(max_backoff_s=0.04), initial_backoff_s=0.01)
    try:
        await h.outbox.send_message(ROOM_A, text("x"))
        async with running(h.sender):
            await asyncio.sleep(0.5)
    finally:
        await h.db.close()

    gaps = [b.at - a.at for a, b in itertools.pairwise(hs.calls)]
    # Delays 0.01, 0.02, 0.04, 0.04, ... less up to 20 % jitter, so ~14
    # attempts in 0.5 s: a spinning sender makes thousands, an uncapped one
    # waits 0.08 then 0.16 s. The bounds leave room for a loaded machine.
    assert 6 <= len(hs.calls) <= 25
    assert gaps[0] < 0.03
    assert max(gaps) < 0.1
    assert gaps[-1] >= 0.04 * 0.8 - 0.005


async def test_rate_limit_pauses_every_room(h: Harness) -> None:
    """After a 429, no room sends anything until retry_after has passed."""
    h.hs.plan(ROOM_A, RateLimited(0.3))
    await h.outbox.send_message(ROOM_A, text("a1"))

    async with running(h.sender):
        await eventually(lambda: len(h.hs.calls) == 1)
        limited_at = h.hs.calls[0].at
        await h.outbox.send_message(ROOM_B, text("b1"))
        await eventually(lambda: h.hs.bodies(ROOM_A) == ["a1"] and h.hs.bodies(ROOM_B) == ["b1"])

    later = h.hs.calls[1:]
    assert {c.room_id for c in later} == {ROOM_A, ROOM_B}
    assert all(c.at - limited_at >= 0.3 for c in later)
    assert h.sample("readybot_outbox_send_failures_total", {"reason": "rate_limited"}) == 1


async def test_rate_limits_do_not_use_up_the_refusal_budget(h: Harness) -> None:
    """429s, however many, never count as refusals: the row is still sent afterwards."""
    h.hs.plan(ROOM_A, *(RateLimited(0.0) for _ in range(5)))
    outbox_id = await h.outbox.send_message(ROOM_A, text("eventually"))

    async with running(h.sender):
        assert await h.outbox.wait_sent(outbox_id, timeout=3.0) is not None
    assert len(h.hs.calls) == 6


async def test_permanent_refusal_fails_the_row_and_the_room_moves_on(strict: Harness, db_path: Path) -> None:
    """A row refused max_attempts_permanent times is marked failed, counted, and the next row is sent."""
    h = strict  # the scripted refusals are for the first row's calls
    h.hs.plan(ROOM_A, *(PermanentSendError("403 M_FORBIDDEN") for _ in range(3)))
    refused = await h.outbox.send_message(ROOM_A, text("refused"))
    await h.outbox.send_message(ROOM_A, text("next"))

    async with running(h.sender):
        await eventually(lambda: h.hs.bodies(ROOM_A) == ["next"])

    row = raw_row(db_path, refused)
    assert row is not None
    assert (row["state"], row["refusals"], row["event_id"]) == ("failed", 3, None)
    assert "PermanentSendError" in row["last_error"]
    assert h.hs.txns(ROOM_A).count(row["txn_id"]) == 3
    assert await h.outbox.wait_sent(refused, timeout=0.1) is None
    assert h.sample("readybot_outbox_messages_failed_total") == 1
    assert h.sample("readybot_outbox_send_failures_total", {"reason": "permanent"}) == 3


async def test_row_relating_to_a_failed_row_fails_too(strict: Harness, db_path: Path) -> None:
    """A reaction to a message that failed for good fails without being sent."""
    h = strict  # the scripted refusals are for the first row's calls
    h.hs.plan(ROOM_A, *(PermanentSendError("403") for _ in range(3)))
    refused = await h.outbox.send_message(ROOM_A, text("refused"))
    reaction = await h.outbox.react(ROOM_A, refused, "✅")
    after = await h.outbox.send_message(ROOM_A, text("after"))

    async with running(h.sender):
        assert await h.outbox.wait_sent(after, timeout=3.0) is not None

    assert await h.outbox.state(reaction) is OutboxState.FAILED
    row = raw_row(db_path, reaction)
    assert row is not None and f"related outbox row {refused} is failed" in row["last_error"]
    assert [c.event_type for c in h.hs.calls] == ["m.room.message"] * 4
    assert h.sample("readybot_outbox_messages_failed_total") == 2


# --- exactly once -------------------------------------------------------------


async def test_lost_response_is_resent_with_same_txn_and_not_duplicated(h: Harness) -> None:
    """When a successful send's answer is lost, the retry reuses the txn id and the room sees one event."""
    h.hs.plan(ROOM_A, LOST)
    outbox_id = await h.outbox.send_message(ROOM_A, text("once"))

    async with running(h.sender):
        event_id = await h.outbox.wait_sent(outbox_id, timeout=3.0)

    assert h.hs.bodies(ROOM_A) == ["once"]
    assert event_id == h.hs.timeline[ROOM_A][0].event_id
    assert len(h.hs.calls) == 2 and len(set(h.hs.txns())) == 1


async def test_exactly_once_across_crash_and_restart(db_path: Path) -> None:
    """A send cut off by a crash is resent after restart with the same txn id; the room sees one event."""
    hs = FakeHomeserver()
    hs.plan(ROOM_A, CRASH)
    first = await make_harness(db_path, hs)
    outbox_id = await first.outbox.send_message(ROOM_A, text("deploy done"))
    async with running(first.sender):
        await asyncio.wait_for(hs.crashed.wait(), timeout=3.0)
    assert await first.outbox.state(outbox_id) is OutboxState.PENDING
    await first.db.close()

    second = await make_harness(db_path, hs)  # the restarted bot, same store file
    try:
        async with running(second.sender):
            event_id = await second.outbox.wait_sent(outbox_id, timeout=3.0)
    finally:
        await second.db.close()

    assert hs.bodies(ROOM_A) == ["deploy done"]
    assert event_id == hs.timeline[ROOM_A][0].event_id
    assert len(hs.calls) == 2 and len(set(hs.txns())) == 1


async def test_stop_returns_promptly_and_keeps_rows_pending(h: Harness) -> None:
    """Stopping while the homeserver is down returns at once and leaves the row for the next start."""
    h.hs.down.add(ROOM_A)
    outbox_id = await h.outbox.send_message(ROOM_A, text("later"))
    stop = asyncio.Event()
    task = asyncio.create_task(h.sender.run(stop))
    await eventually(lambda: len(h.hs.calls) >= 2)

    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, timeout=1.0)

    assert time.monotonic() - started < 0.2
    assert await h.outbox.state(outbox_id) is OutboxState.PENDING


async def test_rows_queued_before_start_are_sent(db_path: Path) -> None:
    """Rows left pending by a previous run are picked up when the sender starts, without a wake."""
    hs = FakeHomeserver()
    first = await make_harness(db_path, hs)
    outbox_id = await first.outbox.send_message(ROOM_A, text("from before"))
    await first.db.close()

    second = await make_harness(db_path, hs)
    try:
        async with running(second.sender):
            assert await second.outbox.wait_sent(outbox_id, timeout=3.0) is not None
    finally:
        await second.db.close()


# --- content shapes -----------------------------------------------------------


async def test_relation_content_shapes(h: Harness) -> None:
    """Replies, threads, edits and reactions carry the relations the Matrix spec defines."""
    html = {
        "msgtype": "m.notice",
        "body": "new",
        "format": "org.matrix.custom.html",
        "formatted_body": "<b>new</b>",
    }
    await h.outbox.send_message(ROOM_A, text("hello"))
    await h.outbox.send_message(ROOM_A, text("re"), reply_to="$target")
    await h.outbox.send_message(ROOM_A, text("in thread"), thread_root="$root")
    await h.outbox.send_message(ROOM_A, text("thread reply"), thread_root="$root", reply_to="$target")
    await h.outbox.edit(ROOM_A, "$target", html)
    await h.outbox.edit(ROOM_A, "$target", text("plain"))
    last = await h.outbox.react(ROOM_A, "$target", "✅")

    async with running(h.sender):
        assert await h.outbox.wait_sent(last, timeout=3.0) is not None

    # Every event also names its row (OUTBOX_KEY): checked in test_outbox_failover.py.
    sent = [(c.event_type, {k: v for k, v in c.content.items() if k != OUTBOX_KEY}) for c in h.hs.calls]
    assert sent[0] == ("m.room.message", {"msgtype": "m.notice", "body": "hello"})
    assert sent[1] == (
        "m.room.message",
        {"msgtype": "m.notice", "body": "re", "m.relates_to": {"m.in_reply_to": {"event_id": "$target"}}},
    )
    assert sent[2][1]["m.relates_to"] == {
        "rel_type": "m.thread",
        "event_id": "$root",
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": "$root"},
    }
    assert sent[3][1]["m.relates_to"] == {
        "rel_type": "m.thread",
        "event_id": "$root",
        "is_falling_back": False,
        "m.in_reply_to": {"event_id": "$target"},
    }
    assert sent[4] == (
        "m.room.message",
        {
            "msgtype": "m.notice",
            "body": "* new",
            "format": "org.matrix.custom.html",
            "formatted_body": "* <b>new</b>",
            "m.new_content": html,
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$target"},
        },
    )
    assert sent[5][1] == {
        "msgtype": "m.notice",
        "body": "* plain",
        "m.new_content": text("plain"),
        "m.relates_to": {"rel_type": "m.replace", "event_id": "$target"},
    }
    assert sent[6] == (
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$target", "key": "✅"}},
    )
    counts = {
        k: h.sample("readybot_messages_sent_total", {"kind": k}) for k in ("message", "reply", "thread")
    }
    assert counts == {"message": 1.0, "reply": 1.0, "thread": 2.0}
    assert h.sample("readybot_messages_sent_total", {"kind": "edit"}) == 2
    assert h.sample("readybot_messages_sent_total", {"kind": "reaction"}) == 1


async def test_relations_to_queued_rows_resolve_at_send_time(h: Harness) -> None:
    """Post, react, edit and thread under a message in one go: each targets the message's event id."""
    post = await h.outbox.send_message(ROOM_A, text("approve sync?"))
    await h.outbox.react(ROOM_A, post, "✅")
    await h.outbox.edit(ROOM_A, post, text("approved"))
    last = await h.outbox.send_message(ROOM_A, text("syncing"), thread_root=post)
    assert await h.outbox.event_id(post) is None  # nothing is sent yet

    async with running(h.sender):
        assert await h.outbox.wait_sent(last, timeout=3.0) is not None

    post_event = await h.outbox.event_id(post)
    assert post_event == h.hs.timeline[ROOM_A][0].event_id
    targets = [c.content["m.relates_to"]["event_id"] for c in h.hs.calls[1:]]
    assert targets == [post_event] * 3


async def test_relation_to_an_already_sent_row_uses_its_event_id(h: Harness) -> None:
    """Relating to a row that was already sent works like relating to its event id."""
    post = await h.outbox.send_message(ROOM_A, text("alert"))
    async with running(h.sender):
        post_event = await h.outbox.wait_sent(post, timeout=3.0)
        edit = await h.outbox.edit(ROOM_A, post, text("resolved"))
        assert await h.outbox.wait_sent(edit, timeout=3.0) is not None
    assert h.hs.calls[-1].content["m.relates_to"]["event_id"] == post_event


# --- stats, metrics, pruning --------------------------------------------------


async def test_stats_report_depth_and_oldest_age(h: Harness) -> None:
    """stats() counts pending rows and the oldest one's age; both drop to 0 once all is sent."""
    assert (await h.outbox.stats()).depth == 0
    assert (await h.outbox.stats()).oldest_age_s == 0.0
    h.clock.now = 1_000.0
    await h.outbox.send_message(ROOM_A, text("one"))
    h.clock.now = 1_010.0
    await h.outbox.send_message(ROOM_B, text("two"))
    h.clock.now = 1_030.0

    stats = await h.outbox.stats()
    assert (stats.depth, stats.oldest_age_s) == (2, 30.0)

    async with running(h.sender):
        await eventually(lambda: len(h.hs.calls) == 2)
        await eventually(lambda: h.sample("readybot_outbox_depth") == 0)
    stats = await h.outbox.stats()
    assert (stats.depth, stats.oldest_age_s) == (0, 0.0)
    assert h.sample("readybot_outbox_oldest_age_seconds") == 0.0


async def test_gauges_follow_a_stuck_outbox(h: Harness) -> None:
    """While a row is stuck, the depth gauge counts it and the age gauge grows with the clock."""
    h.hs.down.add(ROOM_A)
    h.clock.now = 1_000.0
    await h.outbox.send_message(ROOM_A, text("stuck"))
    async with running(h.sender):
        await eventually(lambda: h.sample("readybot_outbox_depth") == 1)
        h.clock.now = 1_042.0
        assert h.sample("readybot_outbox_oldest_age_seconds") == 42.0


async def test_prune_deletes_only_old_settled_rows(h: Harness, db_path: Path) -> None:
    """prune removes rows settled before the cutoff and keeps newer and pending ones."""
    h.clock.now = 100.0
    old = await h.outbox.send_message(ROOM_A, text("old"))
    async with running(h.sender):
        assert await h.outbox.wait_sent(old, timeout=3.0) is not None
    h.clock.now = 300.0
    pending = await h.outbox.send_message(ROOM_B, text("pending"))

    assert await h.outbox.prune(settled_before=200.0) == 1
    assert raw_row(db_path, old) is None
    assert raw_row(db_path, pending) is not None


async def test_prune_keeps_rows_a_pending_row_still_refers_to(h: Harness, db_path: Path) -> None:
    """A settled row stays while a pending row's relation still points at it by OutboxId."""
    h.clock.now = 100.0
    post = await h.outbox.send_message(ROOM_A, text("post"))
    reaction = await h.outbox.react(ROOM_A, post, "✅")  # stored as a reference to row `post`
    assert await OutboxRepo(h.db).mark_sent(post, "$post", at=100.0)

    assert await h.outbox.prune(settled_before=200.0) == 0
    assert raw_row(db_path, post) is not None
    assert await h.outbox.state(reaction) is OutboxState.PENDING


# --- superseding pending edits --------------------------------------------------


def new_body(call: Call) -> str:
    body: str = call.content["m.new_content"]["body"]
    return body


async def test_superseding_edit_replaces_the_pending_one(h: Harness, db_path: Path) -> None:
    """Superseding edits before the first is sent leave one edit row: its id, newest content, new txn."""
    post = await h.outbox.send_message(ROOM_A, text("1 firing"))
    first = await h.outbox.edit(ROOM_A, post, text("2 firing"), supersede=True)
    first_txn = raw_row(db_path, first)["txn_id"]  # type: ignore[index]
    again = await h.outbox.edit(ROOM_A, post, text("3 firing"), supersede=True)
    assert again == first
    assert raw_row(db_path, first)["txn_id"] != first_txn  # type: ignore[index]

    async with running(h.sender):
        assert await h.outbox.wait_sent(again, timeout=3.0) is not None
    assert [c.content["body"] for c in h.hs.calls] == ["1 firing", "* 3 firing"]


async def test_supersede_matches_the_target_by_row_or_by_event_id(h: Harness) -> None:
    """A pending edit queued against the row is superseded by one naming the (since sent) event id."""
    post = await h.outbox.send_message(ROOM_A, text("alert"))
    edit = await h.outbox.edit(ROOM_A, post, text("v2"), supersede=True)
    await OutboxRepo(h.db).mark_sent(post, "$alert", at=1.0)
    assert await h.outbox.edit(ROOM_A, "$alert", text("v3"), supersede=True) == edit
    other = await h.outbox.send_message(ROOM_A, text("another"))
    assert await h.outbox.edit(ROOM_A, other, text("x"), supersede=True) != edit


async def test_supersede_after_the_edit_was_sent_queues_a_new_edit(h: Harness) -> None:
    """Once the earlier edit is sent there is nothing to supersede: a new edit row is queued."""
    post = await h.outbox.send_message(ROOM_A, text("v1"))
    async with running(h.sender):
        first = await h.outbox.edit(ROOM_A, post, text("v2"), supersede=True)
        assert await h.outbox.wait_sent(first, timeout=3.0) is not None
        second = await h.outbox.edit(ROOM_A, post, text("v3"), supersede=True)
        assert second != first
        assert await h.outbox.wait_sent(second, timeout=3.0) is not None
    assert [new_body(c) for c in h.hs.calls[1:]] == ["v2", "v3"]


async def test_edit_superseded_while_in_flight_is_sent_again_with_the_newest_content(h: Harness) -> None:
    """The sender records a send only if the txn id is unchanged; else it sends the newer content too."""
    post = await h.outbox.send_message(ROOM_A, text("v1"))
    edit = await h.outbox.edit(ROOM_A, post, text("v2"), supersede=True)
    release = asyncio.Event()
    in_flight = asyncio.Event()
    send = h.hs.send_event

    async def slow_edits(room_id: str, event_type: str, content: dict[str, Any], txn_id: str) -> str:
        if "m.new_content" in content and not release.is_set():
            in_flight.set()
            await release.wait()
        return await send(room_id, event_type, content, txn_id)

    h.sender._transport = type("Slow", (), {"send_event": staticmethod(slow_edits)})()
    async with running(h.sender):
        await asyncio.wait_for(in_flight.wait(), 3.0)
        assert await h.outbox.edit(ROOM_A, post, text("v3"), supersede=True) == edit
        release.set()
        await eventually(lambda: [new_body(c) for c in h.hs.calls[1:]] == ["v2", "v3"])
        assert await h.outbox.wait_sent(edit, timeout=3.0) == h.hs.timeline[ROOM_A][-1].event_id


async def test_edit_superseded_during_a_rate_limit_pause_sends_only_the_newest(h: Harness) -> None:
    """A 429-paused edit that is superseded meanwhile goes out once, with the newest content."""
    post = await h.outbox.send_message(ROOM_A, text("v1"))
    async with running(h.sender):
        assert await h.outbox.wait_sent(post, timeout=3.0) is not None
        h.hs.plan(ROOM_A, RateLimited(0.3))
        edit = await h.outbox.edit(ROOM_A, post, text("v2"), supersede=True)
        await eventually(lambda: len(h.hs.calls) == 2)  # the 429
        assert await h.outbox.edit(ROOM_A, post, text("v3"), supersede=True) == edit
        assert await h.outbox.wait_sent(edit, timeout=3.0) is not None
    assert [new_body(c) for c in h.hs.calls[1:]] == ["v2", "v3"]  # the 429'd attempt, then only v3
    assert [new_body(Call(ROOM_A, e.event_type, e.content, "", 0)) for e in h.hs.timeline[ROOM_A][1:]] == [
        "v3"
    ]


async def test_send_load_counts_pending_and_lists_recent_sends(h: Harness) -> None:
    """send_load: pending rows, and send times after `since`, oldest first, at most the newest `limit`."""
    repo = OutboxRepo(h.db)
    for at in (10.0, 20.0, 30.0, 40.0):
        row = await h.outbox.send_message(ROOM_A, text(str(at)))
        await repo.mark_sent(row, f"$e{int(at)}", at=at)
    await h.outbox.send_message(ROOM_A, text("pending"))
    load = await h.outbox.send_load(since=15.0, limit=10)
    assert (load.pending, load.sent_at) == (1, [20.0, 30.0, 40.0])
    assert (await h.outbox.send_load(since=0.0, limit=2)).sent_at == [30.0, 40.0]


async def test_rewrite_pending_changes_a_queued_message_behind_another(strict: Harness) -> None:
    """A message queued behind another row gets the new content (same row, same txn); one event is sent."""
    h = strict
    first = await h.outbox.send_message(ROOM_A, text("first"))
    queued = await h.outbox.send_message(ROOM_A, text("digest: 1 group"))
    assert await h.outbox.rewrite_pending(ROOM_A, queued, text("digest: 5 groups"))
    async with running(h.sender):
        assert await h.outbox.wait_sent(queued, timeout=3.0) is not None
    assert h.hs.bodies(ROOM_A) == ["first", "digest: 5 groups"]
    assert await h.outbox.state(first) is OutboxState.SENT


async def test_rewrite_pending_refuses_a_row_inside_the_in_flight_window(h: Harness) -> None:
    """With 4 rows in flight per room, only a message behind 4 pending rows is rewritten."""
    for n in range(3):
        await h.outbox.send_message(ROOM_A, text(f"m{n}"))
    fourth = await h.outbox.send_message(ROOM_A, text("fourth"))
    fifth = await h.outbox.send_message(ROOM_A, text("fifth"))
    assert not await h.outbox.rewrite_pending(ROOM_A, fourth, text("changed"))
    assert await h.outbox.rewrite_pending(ROOM_A, fifth, text("fifth, rewritten"))


async def test_rewrite_pending_refuses_the_head_and_sent_rows(h: Harness) -> None:
    """The room's head may be on its way and a sent row is history: neither is rewritten."""
    head = await h.outbox.send_message(ROOM_A, text("head"))
    assert not await h.outbox.rewrite_pending(ROOM_A, head, text("changed"))
    behind = await h.outbox.send_message(ROOM_A, text("behind"))
    async with running(h.sender):
        assert await h.outbox.wait_sent(behind, timeout=3.0) is not None
    assert not await h.outbox.rewrite_pending(ROOM_A, behind, text("changed"))
    assert not await h.outbox.rewrite_pending(ROOM_B, behind, text("wrong room"))
    assert h.hs.bodies(ROOM_A) == ["head", "behind"]


# --- several rows in flight per room -------------------------------------------


class SlowHomeserver(FakeHomeserver):
    """Every send takes ``delay_s``; records how many were on their way at once and when each was answered."""

    def __init__(self, delay_s: float = 0.05) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.on_the_way = 0
        self.most_at_once = 0
        self.answered: dict[str, float] = {}  # event id -> time.monotonic() of its answer
        self.refused_at: list[float] = []  # time.monotonic() of each error answer
        self.started: list[Call] = []  # each call as it began (``calls`` records them as answered)

    async def send_event(self, room_id: str, event_type: str, content: dict[str, Any], txn_id: str) -> str:
        self.started.append(Call(room_id, event_type, content, txn_id, time.monotonic()))
        self.on_the_way += 1
        self.most_at_once = max(self.most_at_once, self.on_the_way)
        try:
            await asyncio.sleep(self.delay_s)
            event_id = await super().send_event(room_id, event_type, content, txn_id)
        except Exception:
            self.refused_at.append(time.monotonic())
            raise
        finally:
            self.on_the_way -= 1
        self.answered.setdefault(event_id, time.monotonic())
        return event_id


@pytest.mark.parametrize("limit", [1, 2, 4])
async def test_plain_messages_overlap_up_to_max_in_flight(db_path: Path, limit: int) -> None:
    """Rows that depend on nothing are sent up to max_in_flight_per_room at a time, never more."""
    hs = SlowHomeserver()
    settings = OutboxSettings(max_backoff_s=0.05, max_in_flight_per_room=limit)
    h = await make_harness(db_path, hs, settings)
    try:
        ids = [await h.outbox.send_message(ROOM_A, text(f"m{n}")) for n in range(12)]
        async with running(h.sender):
            for outbox_id in ids:
                assert await h.outbox.wait_sent(outbox_id, timeout=5.0) is not None
    finally:
        await h.db.close()
    assert hs.most_at_once == limit
    assert sorted(hs.bodies(ROOM_A)) == sorted(f"m{n}" for n in range(12))


async def test_relations_wait_for_their_target_and_keep_their_order(db_path: Path) -> None:
    """Reply, reaction, edits and thread line on a queued message start after it is answered, in order."""
    hs = SlowHomeserver()
    h = await make_harness(db_path, hs)
    try:
        post = await h.outbox.send_message(ROOM_A, text("post"))
        await h.outbox.send_message(ROOM_A, text("reply"), reply_to=post)
        await h.outbox.react(ROOM_A, post, "✅")
        await h.outbox.edit(ROOM_A, post, text("edit 1"))
        await h.outbox.edit(ROOM_A, post, text("edit 2"))
        last = await h.outbox.send_message(ROOM_A, text("line"), thread_root=post)
        async with running(h.sender):
            assert await h.outbox.wait_sent(last, timeout=5.0) is not None
    finally:
        await h.db.close()
    post_event = hs.timeline[ROOM_A][0].event_id
    related = hs.started[1:]
    assert all(c.at >= hs.answered[post_event] for c in related)
    assert [c.content.get("body") or c.content["m.relates_to"]["key"] for c in related] == [
        "reply",
        "✅",
        "* edit 1",
        "* edit 2",
        "line",
    ]
    # One relation at a time: each starts after the one before was answered.
    for before, after in itertools.pairwise(related):
        event_id = hs._by_txn[before.txn_id]
        assert after.at >= hs.answered[event_id]


async def test_a_429_pauses_every_row_in_flight_and_nothing_is_sent_twice(db_path: Path) -> None:
    """A 429 among rows in flight holds back every later attempt until retry_after; each row lands once."""
    hs = SlowHomeserver(delay_s=0.02)
    h = await make_harness(db_path, hs)
    try:
        hs.plan(ROOM_A, RateLimited(0.3))
        ids = [await h.outbox.send_message(ROOM_A, text(f"m{n}")) for n in range(8)]
        async with running(h.sender):
            for outbox_id in ids:
                assert await h.outbox.wait_sent(outbox_id, timeout=5.0) is not None
    finally:
        await h.db.close()
    # The first answer was the 429; the 3 other rows already on their way were accepted.
    (limited_at,) = hs.refused_at
    started_later = [c for c in hs.started if c.at > limited_at]
    assert started_later and all(c.at - limited_at >= 0.29 for c in started_later)
    assert sorted(hs.bodies(ROOM_A)) == sorted(f"m{n}" for n in range(8))
    assert h.sample("readybot_outbox_send_failures_total", {"reason": "rate_limited"}) == 1


async def test_lost_answers_among_rows_in_flight_are_resent_with_their_txn_ids(db_path: Path) -> None:
    """Rows whose answers are lost among others in flight are resent with their txn id: one event each."""
    hs = SlowHomeserver(delay_s=0.01)
    h = await make_harness(db_path, hs)
    try:
        hs.plan(ROOM_A, LOST, LOST, LOST)
        ids = [await h.outbox.send_message(ROOM_A, text(f"m{n}")) for n in range(8)]
        async with running(h.sender):
            for outbox_id in ids:
                assert await h.outbox.wait_sent(outbox_id, timeout=5.0) is not None
    finally:
        await h.db.close()
    assert sorted(hs.bodies(ROOM_A)) == sorted(f"m{n}" for n in range(8))
    assert len(hs.calls) == 11 and len(set(hs.txns())) == 8
