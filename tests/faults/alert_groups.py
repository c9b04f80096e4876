"""Alert groups for fault tests: recognisable webhook payloads, and where a person's client shows each group.

Each group carries a marker label (``group="o<run>g0001"``) that appears in its
own message or in its line of a storm digest. ``RoomShowing`` reads what a
person's E2EE client received in a room (the bot's top-level messages with
their newest edits applied) and tells, per group, every place it shows: the
position of the message in the room and, for a digest, the line.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from nio import Event, RoomMessageNotice, RoomMessageText

from tests.integration.people import Person

ALERTNAME = "OutageProbe"
DIGEST_PREFIX = "🌩"


def new_run() -> str:
    """A short id that keeps this run's markers apart from any other test's."""
    return uuid.uuid4().hex[:6]


def marker(run: str, index: int) -> str:
    """The group's label value; letters and digits only, so no link encoding can change it."""
    return f"o{run}g{index:04}"


def marker_pattern(run: str) -> re.Pattern[str]:
    return re.compile(rf"\bo{run}g(\d{{4}})\b")


def group_payload(run: str, index: int, shard: str, receiver: str = "readybot") -> dict[str, Any]:
    """A webhook v4 body as Alertmanager sends it: one firing group with one alert, routed by ``shard``."""
    name = marker(run, index)
    group = {"alertname": ALERTNAME, "group": name, "shard": shard}
    labels = {**group, "severity": "warning", "instance": "node-1"}
    return {
        "receiver": receiver,
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": f"probe {name}"},
                "startsAt": "2026-11-25T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example/graph?g0.expr=up",
                "fingerprint": f"{run}{index:06x}",
            }
        ],
        "groupLabels": group,
        "commonLabels": labels,
        "commonAnnotations": {"summary": f"probe {name}"},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": "{}:" + f'{{alertname="{ALERTNAME}", group="{name}", shard="{shard}"}}',
        "truncatedAlerts": 0,
    }


# -- reading the room ---------------------------------------------------------------


def _relates(event: Event) -> dict[str, Any]:
    content = getattr(event, "source", {}).get("content", {})
    relates: dict[str, Any] = content.get("m.relates_to") or {}
    return relates


@dataclass
class RoomShowing:
    """Where each of a run's groups shows in one room, as the person's client has it now."""

    # group index -> every (message position, line) it shows at
    places: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    messages: int = 0
    digests: int = 0
    edits: int = 0
    # Edits that arrived before the message they edit (or whose message never arrived).
    early_edits: int = 0

    @classmethod
    def read(cls, person: Person, room: str, bot: str, run: str) -> RoomShowing:
        pattern = marker_pattern(run)
        # Where each event id first appeared in the room: an event that could
        # only be decrypted later is recorded again, further on; its place in
        # the timeline is where it first arrived.
        first_seen: dict[str, int] = {}
        originals: dict[str, str] = {}
        edited: dict[str, str] = {}
        showing = cls()
        for position, (room_id, event) in enumerate(person.received):
            event_id = getattr(event, "event_id", None)
            if room_id != room or event_id is None:
                continue
            first_seen.setdefault(event_id, position)
            if getattr(event, "sender", None) != bot or not isinstance(
                event, RoomMessageNotice | RoomMessageText
            ):
                continue
            relates = _relates(event)
            if relates.get("rel_type") == "m.replace":
                new = event.source["content"].get("m.new_content", {})
                # Later edits of the same message replace earlier ones.
                edited[relates["event_id"]] = str(new.get("body", ""))
                showing.edits += 1
                if relates["event_id"] not in first_seen:
                    showing.early_edits += 1
            elif not relates and event_id not in originals:
                originals[event_id] = event.body
        ordered = sorted(originals, key=lambda e: first_seen[e])
        showing.messages = len(ordered)
        for number, event_id in enumerate(ordered):
            text = edited.get(event_id, originals[event_id])
            if text.startswith(DIGEST_PREFIX):
                showing.digests += 1
                # One line per group: a group on two lines is shown twice.
                for line_number, line in enumerate(text.splitlines()):
                    for index in {int(m) for m in pattern.findall(line)}:
                        showing.places.setdefault(index, []).append((number, line_number))
            else:
                # A group's own message names it several times (title, labels, links).
                for index in {int(m) for m in pattern.findall(text)}:
                    showing.places.setdefault(index, []).append((number, 0))
        return showing

    def visible(self) -> set[int]:
        return set(self.places)

    def duplicated(self) -> set[int]:
        return {index for index, where in self.places.items() if len(where) > 1}

    def position(self, index: int) -> tuple[int, int]:
        return min(self.places[index])


@dataclass(frozen=True)
class Answered:
    """One webhook as the test saw it: when it was sent and when its 2xx answer arrived (monotonic s)."""

    index: int
    room: str
    sent: float
    answered: float
    status: int


def out_of_order(answers: list[Answered], showing: RoomShowing) -> list[tuple[int, int]]:
    """Pairs (a, b) of visible groups where a was answered before b was even sent, yet b shows first.

    Webhooks answered in the same group commit have no order between them;
    only answers that strictly precede the other request bind the bot.
    """
    visible = [a for a in answers if a.index in showing.places]
    position = {a.index: showing.position(a.index) for a in visible}
    return [
        (a.index, b.index)
        for a in visible
        for b in visible
        if a.answered < b.sent and position[b.index] < position[a.index]
    ]
