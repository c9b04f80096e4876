"""The one bot, people, rooms and cluster every attack of the security suite is tried against.

Set up once per module (starting a bot and four E2EE people takes seconds):

- ``main``: the served, encrypted room (alice made it, so she has all the
  power; bob and carol approve, mallory is a plain member);
- ``second``: another served room, where bob is too (for reactions made in
  the wrong room);
- ``stray``: a room the bot joined because alice (in ``matrix.invite_from``)
  invited it, but which is not in ``matrix.rooms``: nothing there may count.

The bot runs as a subprocess (``BotProcess``) so that everything it printed
can be searched for secrets; what it did is read from its SQLite store and
from the test Kubernetes API server's record of requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nio import Event, RoomMessageNotice, RoomMessageText

from bot.demo.synapse import SynapseServer
from tests.integration.argo_world import Controller, gated
from tests.integration.botprocess import BotProcess
from tests.integration.botrunner import bot_config
from tests.integration.people import Account, Person, register_account
from tests.kube.handle import KubeTarget
from tests.unit.argo_fake import application

WAIT_S = 30.0
# After a barrier (a !ping answered) the bot has seen every earlier event;
# this much more lets the tasks it spawned for them commit.
SETTLE_S = 0.5

# Gated apps, one per approval row that needs its own request.
GATED_APPS = ("cilium", "expiring", "podinfo", "grafana", "kyverno")
# An Application that exists in the cluster but is not gated.
UNGATED_APP = "nginx"


@dataclass(frozen=True)
class Prompt:
    """An open sync request as the room saw it."""

    app: str
    approval_id: str
    command_id: str
    event_id: str


@dataclass(frozen=True)
class Secrets:
    """What must never appear in a log line, a message or /metrics."""

    bot_password: str
    hook_tokens: dict[str, str]

    def named(self, access_token: str) -> dict[str, str]:
        return {
            "bot password": self.bot_password,
            "bot access token": access_token,
            **{f"hook token {key}": value for key, value in self.hook_tokens.items()},
        }


def new_secrets(bot_password: str) -> Secrets:
    """Fresh hook tokens for this run, so that finding one anywhere means it leaked here."""
    return Secrets(
        bot_password=bot_password,
        hook_tokens={
            "alertmanager/team-a": "am-a-" + secrets.token_urlsafe(18),
            "alertmanager/team-b": "am-b-" + secrets.token_urlsafe(18),
            "falco": "falco-" + secrets.token_urlsafe(18),
        },
    )


@dataclass
class Stage:
    bot: BotProcess
    bot_user: str
    alice: Person
    bob: Person
    carol: Person
    mallory: Person
    main: str
    second: str
    stray: str
    kube: KubeTarget
    controller: Controller
    secrets: Secrets
    hello_id: str
    prompts: dict[str, Prompt] = field(default_factory=dict)
    # Row name -> "refused" | "accepted" | "error", in the order they ran.
    tally: dict[str, str] = field(default_factory=dict)

    @property
    def people(self) -> list[Person]:
        return [self.alice, self.bob, self.carol, self.mallory]

    @property
    def db_path(self) -> Path:
        return Path(self.bot.config["store"]["path"])

    # -- the bot's store (read-only use of a second connection; WAL allows it) --

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=10)) as conn:
            return conn.execute(sql, tuple(args)).fetchall()

    async def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self._query, sql, args)

    async def audit_of(self, event_id: str) -> list[tuple[str, str, str, str | None]]:
        """(actor, action, outcome, detail) of every audit entry about ``event_id``."""
        rows = await self.query(
            "SELECT actor, action, outcome, detail FROM audit WHERE event_id = ? ORDER BY id", event_id
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def wait_audit(self, event_id: str, action: str) -> tuple[str, str, str, str | None]:
        """The first audit entry with ``action`` about ``event_id``, once it is written."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            for entry in await self.audit_of(event_id):
                if entry[1] == action:
                    return entry
            await asyncio.sleep(0.1)
        raise AssertionError(f"no {action} audit entry for {event_id} within {WAIT_S} s")

    async def replies_to(self, event_id: str) -> int:
        """How many replies the bot queued to ``event_id`` (whether or not sent yet)."""
        rows = await self.query(
            "SELECT count(*) FROM outbox WHERE kind = 'reply' AND target_event_id = ?", event_id
        )
        return int(rows[0][0])

    async def claimed(self, event_id: str) -> bool:
        """Whether the bot took ``event_id`` as a command to run (claimed in handled_events)."""
        rows = await self.query("SELECT count(*) FROM handled_events WHERE event_id = ?", event_id)
        return bool(rows[0][0])

    async def approval_state(self, approval_id: str) -> str:
        rows = await self.query("SELECT state FROM approvals WHERE id = ?", approval_id)
        assert rows, f"no approval {approval_id}"
        return str(rows[0][0])

    async def wait_state(self, approval_id: str, state: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while (current := await self.approval_state(approval_id)) != state:
            if time.monotonic() > deadline:
                raise AssertionError(f"approval {approval_id} stayed {current}, expected {state}")
            await asyncio.sleep(0.1)

    async def votes_of(self, reaction_event_id: str) -> int:
        rows = await self.query(
            "SELECT count(*) FROM approval_votes WHERE reaction_event_id = ?", reaction_event_id
        )
        return int(rows[0][0])

    def store_dump(self) -> str:
        """Everything in the bot's database as SQL text (to search for what must not be kept)."""
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=10)) as conn:
            return "\n".join(conn.iterdump())

    def cross_signing_seeds(self) -> dict[str, str]:
        """The private halves of the bot's cross-signing keys, as the store keeps them."""
        rows = self._query("SELECT value FROM kv WHERE key = 'matrix.cross_signing_keys'")
        assert rows, "the bot stored no cross-signing keys"
        seeds: dict[str, str] = json.loads(rows[0][0])["seeds"]
        return {f"cross-signing {usage} key": seed for usage, seed in seeds.items()}

    def access_token(self) -> str:
        rows = self._query("SELECT value FROM kv WHERE key = 'matrix.credentials'")
        assert rows, "the bot stored no credentials"
        token: str = json.loads(rows[0][0])["access_token"]
        return token

    # -- the cluster ----------------------------------------------------------------

    def operation_writes(self, app: str) -> int:
        """How many times the bot wrote a sync operation into the Application ``app``."""
        server = self.kube.require_server()
        suffix = f"/applications/{app}"
        return sum(
            1
            for exchange in list(server.exchanges)
            if exchange.method in ("PATCH", "PUT")
            and exchange.path.endswith(suffix)
            and b'"operation"' in exchange.body
            and b'"sync"' in exchange.body
        )

    def has_operation(self, app: str) -> bool:
        return bool(self.controller.app(app).get("operation"))

    # -- the room ---------------------------------------------------------------------

    async def settle(self) -> None:
        """A barrier: alice's !ping answered means the bot has seen every event sent before it."""
        command = await self.alice.send_text(self.main, "!ping")
        await self.alice.wait_for_reply(self.main, self.bot_user, after_event_id=command, timeout=WAIT_S)
        await asyncio.sleep(SETTLE_S)

    async def prompt(self, app: str) -> Prompt:
        """alice's open request for ``app`` (made on first use)."""
        if app not in self.prompts:
            command = await self.alice.send_text(self.main, f"!sync {app}")
            reply = await self.alice.wait_for_reply(
                self.main, self.bot_user, after_event_id=command, timeout=WAIT_S
            )
            assert "Sync request " in reply.body, f"no prompt for {app}: {reply.body!r}"
            approval_id = reply.body.split("Sync request ", 1)[1].split(":", 1)[0]
            self.prompts[app] = Prompt(app, approval_id, command, reply.event_id)
        return self.prompts[app]

    def bot_messages(self, person: Person, room: str) -> list[RoomMessageText | RoomMessageNotice]:
        return [
            e
            for r, e in person.received
            if r == room and isinstance(e, RoomMessageText | RoomMessageNotice) and e.sender == self.bot_user
        ]

    async def wait_edit(self, prompt: Prompt, text: str) -> None:
        """Until alice sees the prompt edited to say ``text``."""
        await self.alice.wait_for(edit_of(prompt.event_id, text), timeout=WAIT_S, what=f"edit '{text}'")


def edit_of(event_id: str, text: str) -> Callable[[Event], bool]:
    def matches(event: Event) -> bool:
        if not isinstance(event, RoomMessageNotice):
            return False
        content = event.source.get("content", {})
        relates = content.get("m.relates_to", {})
        return (
            relates.get("rel_type") == "m.replace"
            and relates.get("event_id") == event_id
            and text in str(content.get("m.new_content", {}).get("body", ""))
        )

    return matches


async def build_stage(
    synapse: SynapseServer, kube: KubeTarget, workdir: Path, close: contextlib.AsyncExitStack
) -> Stage:
    """Register, log in, make the rooms, start the bot; everything is closed through ``close``."""
    names = ("readybot", "alice", "bob", "carol", "mallory")
    accounts: list[Account] = await asyncio.gather(
        *(asyncio.to_thread(register_account, synapse, name) for name in names)
    )
    bot_account, *people_accounts = accounts

    async def login(account: Account, index: int) -> Person:
        person = await Person.login(
            synapse.base_url, account.user_id, account.password, workdir / "people" / str(index)
        )
        close.push_async_callback(person.close)
        return person

    alice, bob, carol, mallory = await asyncio.gather(
        *(login(account, i) for i, account in enumerate(people_accounts))
    )
    bot_user = bot_account.user_id
    main, second, stray = await asyncio.gather(
        alice.create_room("platform", invite=[bot_user, bob.user_id, carol.user_id, mallory.user_id]),
        alice.create_room("second", invite=[bot_user, bob.user_id]),
        alice.create_room("stray", invite=[bot_user, bob.user_id, mallory.user_id]),
    )
    await asyncio.gather(
        bob.join(main),
        carol.join(main),
        mallory.join(main),
        bob.join(second),
        bob.join(stray),
        mallory.join(stray),
    )

    controller = Controller(kube)
    for app in (*GATED_APPS, UNGATED_APP):
        controller.put(application(app))

    secret_values = new_secrets(bot_account.password)
    config = bot_config(
        synapse.base_url,
        bot_account,
        workdir / "bot",
        [main, second],
        matrix={"invite_from": [alice.user_id]},
        http={"hook_tokens": secret_values.hook_tokens, "max_body_bytes": 65_536},
        alertmanager={"enabled": True, "default_rooms": [main]},
        falco={
            "enabled": True,
            "default_rooms": [main],
            "send_budget": {"burst": 200, "per_minute": 6_000, "reserve": 1, "edit_floor": 10},
        },
        kubernetes=kube.settings().model_dump(mode="json", exclude_none=True),
        approvals={
            "apps": {
                "cilium": gated(kube, [alice.user_id], [bob.user_id, carol.user_id]),
                "expiring": gated(kube, [alice.user_id], [bob.user_id], expires_after_s=2.0),
                "podinfo": gated(kube, [alice.user_id], [bob.user_id, carol.user_id]),
                "grafana": gated(kube, [alice.user_id], [bob.user_id]),
                "kyverno": gated(kube, [alice.user_id], [bob.user_id]),
            },
            "poll_interval_s": 0.1,
            "expiry_check_interval_s": 0.5,
        },
        permissions={
            # Everything needs power 50 (alice made the room: she has all of it)…
            "default": {"min_power_level": 50},
            # …except these: open to every member, or to alice only.
            "commands": {"ping": {}, "sync": {}, "silence": {"users": [alice.user_id]}},
        },
    )
    # As a deployment passes it: in the environment, not in the config file.
    password = config["matrix"].pop("password")
    bot = BotProcess(config, workdir / "bot", env={"READYBOT_MATRIX__PASSWORD": password})
    close.callback(bot.close)
    bot.start()
    await bot.wait_ready()
    for room in (main, second, stray):
        await alice.wait_joined(room, bot_user, timeout=WAIT_S)
    for person, room in ((bob, second), (bob, stray), (mallory, stray)):
        await person.wait_joined(room, bot_user, timeout=WAIT_S)
    for person in (bob, carol, mallory):
        await person.wait_joined(main, bot_user, timeout=WAIT_S)

    hello_id = await alice.send_text(main, "hello, just chatting", wait_members=[bot_user])
    stage = Stage(
        bot=bot,
        bot_user=bot_user,
        alice=alice,
        bob=bob,
        carol=carol,
        mallory=mallory,
        main=main,
        second=second,
        stray=stray,
        kube=kube,
        controller=controller,
        secrets=secret_values,
        hello_id=hello_id,
    )
    # Opened now so that it has expired by the time its row runs.
    await stage.prompt("expiring")
    return stage
