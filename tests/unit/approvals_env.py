"""The approval service on a real SQLite store, a real outbox and a fake Argo CD, with a hand-set clock.

No Matrix here: "sending" marks the outbox rows sent with made-up event ids,
which is all the service sees of the homeserver.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.approvals.service import ApprovalDeps, ApprovalService
from bot.approvals.store import ApprovalRecord
from bot.outbox import Outbox
from bot.outbox.repo import OutboxId, OutboxRepo
from bot.permissions import decide
from bot.render.templates import Templates
from bot.schema import MIGRATIONS
from bot.store.audit import AuditEntry, AuditRepo
from bot.store.database import Database
from bot.store.leadership import Fence
from config.approvals import ApprovalsSettings, GatedApp
from config.base import PermissionRule
from tests.stores import open_store
from tests.unit.argo_fake import FakeArgo, application

ROOM = "!ops:example.org"
OTHER_ROOM = "!elsewhere:example.org"
BOT = "@readybot:example.org"
ALICE = "@alice:example.org"  # may request
BOB = "@bob:example.org"  # may request and approve
CAROL = "@carol:example.org"  # may approve (by power level)
MALLORY = "@mallory:example.org"  # neither
POWER = {CAROL: 50}
START = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def gate(**overrides: Any) -> GatedApp:
    values: dict[str, Any] = {
        "requesters": PermissionRule(users=[ALICE, BOB]),
        "approvers": PermissionRule(users=[BOB], min_power_level=50),
        "expires_after_s": 600.0,
        "prune": True,
        "sync_options": ["ServerSideApply=false", "PruneLast=true"],
    }
    return GatedApp(**(values | overrides))


def approvals_settings(*, settle_timeout_s: float = 30.0, **app_overrides: Any) -> ApprovalsSettings:
    return ApprovalsSettings(
        apps={"cilium": gate(**app_overrides), "metallb": gate()},
        poll_interval_s=0.05,
        follow_timeout_s=60.0,
        settle_timeout_s=settle_timeout_s,
        prompt_resources_max=3,
    )


async def allowed(user_id: str, room_id: str, rule: PermissionRule) -> bool:
    return decide(user_id, rule, POWER.get(user_id, 0)).allowed


@dataclass
class Env:
    path: Path
    argo: FakeArgo
    clock: Clock
    settings: ApprovalsSettings
    # Two replicas (ha): the service checks this replica's leadership term.
    fenced: bool = False
    db: Database = field(init=False)
    fence: Fence | None = field(init=False, default=None)
    outbox: Outbox = field(init=False)
    audit: AuditRepo = field(init=False)
    service: ApprovalService = field(init=False)
    _events: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def open(self) -> Env:
        """Open (or reopen, as after a restart) the store and build a fresh service on it."""
        self.db = await open_store(self.path, migrations=MIGRATIONS, clock=self.clock)
        self.outbox = Outbox(self.db, clock=self.clock)
        self.audit = AuditRepo(self.db)
        self.fence = Fence(self.db) if self.fenced else None
        self.service = ApprovalService(
            ApprovalDeps(
                settings=self.settings,
                prefix="!",
                db=self.db,
                outbox=self.outbox,
                audit=self.audit,
                templates=Templates(),
                argo=self.argo,
                allowed=allowed,
                clock=self.clock,
                bot_user_id=BOT,
                fence=self.fence,
            )
        )
        return self

    async def close(self) -> None:
        await self.db.close()

    def event_id(self) -> str:
        return f"$e{next(self._events)}"

    async def send_all(self) -> None:
        """What the outbox sender would do: every pending row gets an event id."""
        repo = OutboxRepo(self.db)
        for row in await self.db.fetchall("SELECT id FROM outbox WHERE state = 'pending' ORDER BY id"):
            await repo.mark_sent(OutboxId(row["id"]), f"$out{row['id']}", self.clock())

    async def request(self, app: str = "cilium", sender: str = ALICE, room: str = ROOM) -> str:
        approval_id = await self.service.request(app, room_id=room, sender=sender, event_id=self.event_id())
        await self.send_all()
        return approval_id

    async def prompt_event(self, approval_id: str) -> str:
        record = await self.record(approval_id)
        assert record.prompt_outbox_id is not None
        return f"$out{record.prompt_outbox_id}"

    async def react(
        self,
        approval_id: str,
        sender: str,
        key: str = "✅",
        *,
        room: str = ROOM,
        event_id: str | None = None,
        sent_at: float | None = None,
    ) -> str:
        reaction = event_id or self.event_id()
        target = await self.prompt_event(approval_id)
        await self.service.on_reaction(
            room, sender, target, key, reaction, sent_at=self.clock() if sent_at is None else sent_at
        )
        await self.send_all()
        return reaction

    async def record(self, approval_id: str) -> ApprovalRecord:
        record = await self.service.repo.get(approval_id)
        assert record is not None
        return record

    async def state(self, approval_id: str) -> str:
        return (await self.record(approval_id)).state

    async def messages(self) -> list[dict[str, Any]]:
        """Every queued outbox row: kind, payload, target/root ids."""
        rows = await self.db.fetchall("SELECT * FROM outbox ORDER BY id")
        return [dict(row) | {"payload": json.loads(row["payload"])} for row in rows]

    async def bodies(self) -> list[str]:
        """The plain text of every message and edit (an edit's new content), in order."""
        found = []
        for row in await self.messages():
            payload = row["payload"]
            if row["kind"] in ("message", "reply", "thread", "edit"):
                found.append(payload["body"])
        return found

    async def audit_rows(self, action_prefix: str = "approval:") -> list[AuditEntry]:
        return [e for e in reversed(await self.audit.recent(500)) if e.action.startswith(action_prefix)]


async def open_env(tmp_path: Path, settings: ApprovalsSettings | None = None) -> Env:
    argo = FakeArgo()
    argo.put(application("cilium"))
    argo.put(application("metallb", out_of_sync=0, sync="Synced"))
    argo.put(application("podinfo", automated=True))
    env = Env(tmp_path / "store.sqlite3", argo, Clock(), settings or approvals_settings())
    return await env.open()
