"""Exactly once across a new device: the row id in every event, a look-back for rows begun before a crash."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot.outbox import OutboxId, OutboxState, TransientSendError
from bot.outbox.events import OUTBOX_KEY, clear_marker, marked_txn, with_marker
from bot.outbox.inflight import MAX_PAGES, PAGE_SIZE, Lookup, SentLookup
from tests.unit.outbox.test_outbox import (
    CRASH,
    ROOM_A,
    FakeHomeserver,
    Harness,
    make_harness,
    running,
    text,
)

# The store on SQLite and on PostgreSQL (tests.stores).
pytestmark = pytest.mark.usefixtures("store_backend")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "readybot.sqlite3"


class HistoryHomeserver(FakeHomeserver):
    """The fake homeserver with ``/messages`` (the bot's own events, newest first) and device changes."""

    def __init__(self) -> None:
        super().__init__()
        self.pages_read = 0
        self.history_down = False
        self.ts = 1_000_000  # origin_server_ts of the next event, ms

    def new_device(self) -> None:
        """A wiped crypto store: a new device, whose transaction ids the homeserver has never seen."""
        self._by_txn.clear()

    def _persist(self, room_id: str, event_type: str, content: dict[str, Any], txn_id: str) -> str:
        self.ts += 1
        return super()._persist(room_id, event_type, content, txn_id)

    async def own_events(
        self, room_id: str, page: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        self.pages_read += 1
        if self.history_down:
            raise TransientSendError("connection refused")
        timeline = self.timeline[room_id]
        end = len(timeline) if page is None else int(page)
        start = max(0, end - limit)
        events = [
            {"event_id": e.event_id, "type": e.event_type, "content": e.content, "origin_server_ts": self.ts}
            for e in reversed(timeline[start:end])
        ]
        return events, (str(start) if start > 0 else None)


async def crash_mid_send(db_path: Path, hs: HistoryHomeserver, body: str) -> tuple[Harness, OutboxId]:
    """Queue ``body``, let its send reach the homeserver and the process die before the answer."""
    hs.plan(ROOM_A, CRASH)
    first = await make_harness(db_path, hs)
    outbox_id = await first.outbox.send_message(ROOM_A, text(body))
    async with running(first.sender):
        await asyncio.wait_for(hs.crashed.wait(), timeout=3.0)
    assert await first.outbox.state(outbox_id) is OutboxState.PENDING
    return first, outbox_id


def test_marker_names_the_row_and_stays_out_of_new_content() -> None:
    """The marker holds origin, row id and txn; none in an edit's m.new_content; only the txn in clear."""
    edit = {"body": "* x", "m.new_content": {"body": "x", OUTBOX_KEY: {"id": 1}}}
    marked = with_marker(edit, origin="o1", outbox_id=7, txn_id="t7")
    assert marked[OUTBOX_KEY] == {"origin": "o1", "id": 7, "txn": "t7"}
    assert OUTBOX_KEY not in marked["m.new_content"]
    assert OUTBOX_KEY in edit["m.new_content"]  # the caller's dict is untouched
    assert clear_marker(marked) == {"txn": "t7"}
    assert clear_marker({"body": "x"}) is None
    assert marked_txn({"content": {"ciphertext": "…", OUTBOX_KEY: {"txn": "t7"}}}) == "t7"
    assert marked_txn({"content": {OUTBOX_KEY: "t7"}}) is None
    assert marked_txn({"content": None}) is None


async def test_every_event_carries_its_rows_marker(db_path: Path) -> None:
    """Messages, edits and reactions each carry their own row id, one origin and their txn id."""
    hs = HistoryHomeserver()
    h = await make_harness(db_path, hs)
    try:
        post = await h.outbox.send_message(ROOM_A, text("v1"))
        edit = await h.outbox.edit(ROOM_A, post, text("v2"))
        react = await h.outbox.react(ROOM_A, post, "✅")
        async with running(h.sender):
            assert await h.outbox.wait_sent(react, timeout=3.0) is not None
            assert await h.outbox.wait_sent(edit, timeout=3.0) is not None
    finally:
        await h.db.close()
    markers = {c.content[OUTBOX_KEY]["id"]: c.content[OUTBOX_KEY] for c in hs.calls}
    assert set(markers) == {post, edit, react}
    assert len({m["origin"] for m in markers.values()}) == 1
    assert {c.content[OUTBOX_KEY]["txn"] for c in hs.calls} == set(hs.txns())
    edit_call = next(c for c in hs.calls if c.content[OUTBOX_KEY]["id"] == edit)
    assert OUTBOX_KEY not in edit_call.content["m.new_content"]


async def test_origin_is_kept_across_restarts(db_path: Path) -> None:
    """The installation's origin id is made once and read back by the next process."""
    hs = HistoryHomeserver()
    for body in ("one", "two"):
        h = await make_harness(db_path, hs)
        try:
            outbox_id = await h.outbox.send_message(ROOM_A, text(body))
            async with running(h.sender):
                assert await h.outbox.wait_sent(outbox_id, timeout=3.0) is not None
        finally:
            await h.db.close()
    assert len({c.content[OUTBOX_KEY]["origin"] for c in hs.calls}) == 1


async def test_row_sent_before_a_crash_is_found_not_resent_by_a_new_device(db_path: Path) -> None:
    """A send that reached the homeserver before the crash is found by the new device, not resent."""
    hs = HistoryHomeserver()
    first, outbox_id = await crash_mid_send(db_path, hs, "deploy done")
    await first.db.close()
    hs.new_device()

    second = await make_harness(db_path, hs)
    try:
        edit = await second.outbox.edit(ROOM_A, outbox_id, text("deploy done (edited)"))
        async with running(second.sender):
            event_id = await second.outbox.wait_sent(outbox_id, timeout=3.0)
            assert await second.outbox.wait_sent(edit, timeout=3.0) is not None
        found = second.sample("readybot_outbox_resume_lookups_total", {"outcome": "found"})
    finally:
        await second.db.close()

    assert hs.bodies(ROOM_A) == ["deploy done", "* deploy done (edited)"]
    assert event_id == hs.timeline[ROOM_A][0].event_id
    # The edit waiting on the row got the found event id.
    assert hs.timeline[ROOM_A][1].content["m.relates_to"]["event_id"] == event_id
    assert found == 1


async def test_row_begun_but_never_arrived_is_sent_by_the_new_device(db_path: Path) -> None:
    """A row begun before a crash that never reached the homeserver is looked for, then sent once."""
    hs = HistoryHomeserver()
    hs.down.add(ROOM_A)
    first = await make_harness(db_path, hs)
    outbox_id = await first.outbox.send_message(ROOM_A, text("lost on the way"))
    async with running(first.sender):
        while not hs.calls:
            await asyncio.sleep(0.005)
    await first.db.close()
    hs.down.clear()
    hs.new_device()

    second = await make_harness(db_path, hs)
    try:
        async with running(second.sender):
            assert await second.outbox.wait_sent(outbox_id, timeout=3.0) is not None
        absent = second.sample("readybot_outbox_resume_lookups_total", {"outcome": "absent"})
    finally:
        await second.db.close()
    assert hs.bodies(ROOM_A) == ["lost on the way"]
    assert absent == 1


async def test_rows_this_process_began_are_not_looked_up(db_path: Path) -> None:
    """Fresh rows go straight out: no history page is read when nothing was begun by an earlier process."""
    hs = HistoryHomeserver()
    h = await make_harness(db_path, hs)
    try:
        ids = [await h.outbox.send_message(ROOM_A, text(f"m{i}")) for i in range(5)]
        async with running(h.sender):
            for outbox_id in ids:
                assert await h.outbox.wait_sent(outbox_id, timeout=3.0) is not None
    finally:
        await h.db.close()
    assert hs.pages_read == 0


async def test_unreadable_history_is_retried_before_sending(db_path: Path) -> None:
    """While the look-back fails transiently the row waits; then it is found, not resent."""
    hs = HistoryHomeserver()
    first, outbox_id = await crash_mid_send(db_path, hs, "once")
    await first.db.close()
    hs.new_device()
    hs.history_down = True

    second = await make_harness(db_path, hs)
    try:
        async with running(second.sender):
            while hs.pages_read < 3:
                await asyncio.sleep(0.005)
            assert await second.outbox.state(outbox_id) is OutboxState.PENDING
            hs.history_down = False
            assert await second.outbox.wait_sent(outbox_id, timeout=3.0) is not None
    finally:
        await second.db.close()
    assert hs.bodies(ROOM_A) == ["once"]


async def test_lookup_stops_at_the_page_bound_and_says_unknown() -> None:
    """Past MAX_PAGES of newer events without reaching the row's time, the answer is unknown, not absent."""
    hs = HistoryHomeserver()
    for i in range(PAGE_SIZE * MAX_PAGES + 5):
        hs._persist(ROOM_A, "m.room.message", text(f"n{i}"), f"x{i}")
    lookup = SentLookup(hs)
    # Every event carries the same (newest) timestamp: the row's time is never passed.
    assert await lookup.find(ROOM_A, "missing", began_at=0.0) == (Lookup.UNKNOWN, None)
    assert hs.pages_read == MAX_PAGES


async def test_lookup_stops_at_the_rows_time_and_at_the_rooms_beginning() -> None:
    """Events older than the row's begin time (less the skew), or the room's start, end the look-back."""
    hs = HistoryHomeserver()
    hs._persist(ROOM_A, "m.room.message", with_marker(text("a"), origin="o", outbox_id=1, txn_id="t1"), "t1")
    lookup = SentLookup(hs)
    assert await lookup.find(ROOM_A, "t1", began_at=0.0) == (Lookup.FOUND, "$ev1")
    assert await lookup.find(ROOM_A, "t2", began_at=0.0) == (Lookup.ABSENT, None)
    later = SentLookup(hs)
    hs.timeline[ROOM_A].extend(hs.timeline[ROOM_A] * (PAGE_SIZE * 2))
    # The events are stamped ~1,000 s after the epoch; a row begun a day later cannot be among them.
    assert await later.find(ROOM_A, "t9", began_at=86_400.0) == (Lookup.ABSENT, None)
    assert hs.pages_read == 2  # one page each: the first reached the start, the second passed the time


async def test_a_new_run_of_the_same_sender_looks_for_rows_the_last_run_began(db_path: Path) -> None:
    """A sender run again (the lead taken again) looks up rows its previous run began, and finds them."""
    hs = HistoryHomeserver()
    hs.plan(ROOM_A, CRASH)
    h = await make_harness(db_path, hs)
    try:
        outbox_id = await h.outbox.send_message(ROOM_A, text("twice?"))
        async with running(h.sender):
            await asyncio.wait_for(hs.crashed.wait(), timeout=3.0)
        hs.new_device()  # meanwhile another replica's device held the lead
        async with running(h.sender):
            event_id = await h.outbox.wait_sent(outbox_id, timeout=3.0)
        found = h.sample("readybot_outbox_resume_lookups_total", {"outcome": "found"})
    finally:
        await h.db.close()
    assert hs.bodies(ROOM_A) == ["twice?"]
    assert event_id == hs.timeline[ROOM_A][0].event_id
    assert found == 1
