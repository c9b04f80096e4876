"""Fuzz target ``commands``: any chat line after the prefix, through the real dispatcher.

The layer fuzzed is ``Dispatcher.handle``: parsing (shlex-like words, the
longest registered name), the permission check, argument binding with the
usage answer, the shipped handlers and the error boundary, answering through
the real outbox and audit on a real SQLite store. The features a command
needs are real where they are ours (the dead-man's switch, the Falco relay,
the readiness service with nothing reachable, so every probe is unknown);
Alertmanager's API is the one outside system, stood in for by a fixed fake.
Approvals and Velero are left unconfigured: their commands answer "not
configured" after binding, which is still the binding under test.

Property: every line addressed to the bot is audited exactly once with an
outcome other than ``error``, no answer says "internal error", each answer
fits a Matrix event as an encrypted reply, and nothing escapes ``handle``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from bot.alertmanager.matchers import Matcher, MatchType
from bot.alertmanager.models import Alert, Silence
from bot.alertmanager.silences import SilenceService
from bot.deadman.switch import DeadmansSwitch
from bot.dispatcher import Dispatcher, IncomingCommand
from bot.extensions import Extensions
from bot.falco.relay import FalcoRelay
from bot.falco.render import FalcoRenderer
from bot.falco.store import FalcoRepo
from bot.metrics import Metrics
from bot.outbox import Outbox, OutboxKind
from bot.permissions import Authorizer
from bot.readiness.probes import ProbeEnv
from bot.readiness.service import ReadinessService
from bot.render.templates import Templates
from bot.schema import MIGRATIONS
from bot.services import Services
from bot.store import Database
from bot.store.audit import AuditRepo
from commands import load_all
from commands.registry import registry
from config.readiness import ReadinessSettings
from config.readiness_plan import SHIPPED_PLAN, load_plan
from config.settings import Settings
from tests.fuzz.targets import LoopHost, PropertyViolated, Target, check_event_size

PREFIX = "!"
ROOM = "!ops:example.org"
ADMIN = "@admin:example.org"
GUEST = "@guest:example.org"
# A fresh store after this many cases keeps the long run's file (and its queries) small.
_CASES_PER_STORE = 2_000
_OUTCOMES = {"ok", "usage", "denied", "refused", "unconfirmed", "unknown"}

load_all()
_NAMES = sorted({name for cmd in registry.all() for name in (cmd.name, *cmd.aliases)})

SETTINGS = Settings.model_validate(
    {
        "matrix": {
            "homeserver": "https://matrix.example.org",
            "user_id": "@readybot:example.org",
            "password": "p",
            "command_prefix": PREFIX,
        },
        "alertmanager": {"enabled": True, "default_rooms": [ROOM]},
        "falco": {"enabled": True, "default_rooms": [ROOM]},
        # One restricted command of each kind, so the permission answer is fuzzed too.
        "permissions": {
            "commands": {
                "silence": {"users": [ADMIN]},
                "sync": {"min_power_level": 50},
                "falco": {"users": ["@admin:*"]},
            }
        },
    }
)


class FixedAlertmanager:
    """Alertmanager's API as the silence commands see it: two alerts, one silence, every write accepted."""

    def __init__(self, now: datetime) -> None:
        self._alerts = [
            Alert(
                "f1",
                {"alertname": "DiskFull", "severity": "critical", "namespace": "shop"},
                {"summary": "Disk almost full"},
                now - timedelta(minutes=5),
                "active",
                (),
                (),
            ),
            Alert("f2", {"alertname": "Muted"}, {}, now - timedelta(hours=1), "suppressed", ("s",), ()),
        ]
        self._silences = [
            Silence(
                "0123abcd-0000-4000-8000-000000000000",
                (Matcher("alertname", "Muted", MatchType.EQUAL),),
                now - timedelta(hours=1),
                now + timedelta(hours=1),
                ADMIN,
                "maintenance",
                "active",
            )
        ]

    async def alerts(
        self,
        filters: Sequence[Matcher] = (),
        *,
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
    ) -> list[Alert]:
        return [a for a in self._alerts if all(m.matches(a.labels.get(m.name, "")) for m in filters)]

    async def silences(self) -> list[Silence]:
        return list(self._silences)

    async def create_silence(
        self,
        matchers: Sequence[Matcher],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str:
        return "fedcba98-0000-4000-8000-000000000000"

    async def expire_silence(self, silence_id: str) -> None:
        return None


@dataclass
class _Stack:
    directory: Path
    db: Database
    dispatcher: Dispatcher
    cases: int = 0
    last_outbox: int = 0
    last_audit: int = 0


class CommandHarness:
    """The dispatcher with its real store, opened on first use and renewed every few thousand cases."""

    def __init__(self) -> None:
        self._host = LoopHost()
        self._stack: _Stack | None = None
        self._serial = 0
        # Outcomes by command, so a run shows which commands were reached past binding.
        self.outcomes: Counter[str] = Counter()

    def check(self, case: tuple[str, str]) -> None:
        self._host.run(self._check(*case))

    def close(self) -> None:
        self._host.close(self._drop())

    async def _check(self, sender: str, text: str) -> None:
        stack = await self._current()
        self._serial += 1
        event_id = f"$fuzz{self._serial}"
        now = stack.db.clock()
        await stack.dispatcher.handle(IncomingCommand(sender, ROOM, event_id, text, now))
        audits = await stack.db.fetchall(
            "SELECT id, action, outcome, detail FROM audit"
            " WHERE id > ? AND event_id = ? AND action LIKE 'command:%'",
            (stack.last_audit, event_id),
        )
        replies = await stack.db.fetchall(
            "SELECT id, kind, payload FROM outbox WHERE id > ? AND target_event_id = ?",
            (stack.last_outbox, event_id),
        )
        stack.last_audit = max([stack.last_audit, *(r["id"] for r in audits)])
        stack.last_outbox = max([stack.last_outbox, *(r["id"] for r in replies)])
        addressed = registry_parse_addresses(text)
        if addressed and len(audits) != 1:
            raise PropertyViolated(f"{len(audits)} audit rows for one command")
        for row in audits:
            self.outcomes[row["outcome"]] += 1
            if row["outcome"] not in _OUTCOMES:
                raise PropertyViolated(f"{row['action']} ended {row['outcome']!r} ({row['detail']})")
        for row in replies:
            content: dict[str, Any] = json.loads(row["payload"])
            if "internal error" in content.get("body", ""):
                raise PropertyViolated(f"answered {content['body'][:120]!r}")
            check_event_size(content, "command answer", OutboxKind.REPLY)

    async def _current(self) -> _Stack:
        if self._stack is not None and self._stack.cases >= _CASES_PER_STORE:
            await self._drop()
        if self._stack is None:
            self._stack = await _open_stack()
        self._stack.cases += 1
        return self._stack

    async def _drop(self) -> None:
        if self._stack is not None:
            await self._stack.db.close()
            shutil.rmtree(self._stack.directory, ignore_errors=True)
            self._stack = None


def registry_parse_addresses(text: str) -> bool:
    """Whether the line is addressed to the bot at all (so it must be audited)."""
    return text.startswith(PREFIX) and len(text) > len(PREFIX) and not text[len(PREFIX)].isspace()


async def _open_stack() -> _Stack:
    directory = Path(tempfile.mkdtemp(prefix="readybot-fuzz-commands-"))
    db = await Database.open(directory / "readybot.sqlite3", migrations=MIGRATIONS)
    outbox = Outbox(db, clock=db.clock)
    audit = AuditRepo(db)
    templates = Templates()
    extensions = Extensions()
    switch = DeadmansSwitch(
        SETTINGS.deadman,
        db=db,
        outbox=outbox,
        templates=templates,
        rooms=[ROOM],
        clock=db.clock,
        started_at=db.clock(),
    )
    extensions.put(DeadmansSwitch, switch)
    now = datetime.fromtimestamp(db.clock(), UTC)
    extensions.put(
        SilenceService,
        SilenceService(
            FixedAlertmanager(now),
            audit,
            clock=db.clock,
            default_duration=SETTINGS.alertmanager.silence_default_duration,
            max_duration=SETTINGS.alertmanager.silence_max_duration,
        ),
    )
    falco = FalcoRelay(
        db=db,
        outbox=outbox,
        repo=FalcoRepo(db),
        renderer=FalcoRenderer(templates),
        settings=SETTINGS.falco,
        clock=db.clock,
    )
    await falco.load()
    extensions.put(FalcoRelay, falco)
    extensions.put(
        ReadinessService,
        ReadinessService(load_plan(SHIPPED_PLAN), ReadinessSettings(), env_factory=ProbeEnv, clock=db.clock),
    )
    services = Services(
        settings=SETTINGS,
        registry=registry,
        outbox=outbox,
        audit=audit,
        templates=templates,
        metrics=Metrics(),
        clock=db.clock,
        version="fuzz",
        authorizer=Authorizer(),
        extensions=extensions,
    )
    return _Stack(directory, db, Dispatcher(services))


# --- what is typed -------------------------------------------------------------------------------

_any_char = st.characters(codec="utf-8", exclude_categories=["Cs"])
# Words people (and attackers) type: quotes, matchers, durations, ids, numbers, escapes.
_special_words = st.sampled_from(
    [
        '"',
        "'",
        '""',
        "''",
        "\\",
        '"unclosed',
        "it's",
        "--",
        "-1",
        "0",
        "1e309",
        "nan",
        "inf",
        "1.5",
        "99999999999999999999999999",
        "30m",
        "2h",
        "1d",
        "1h30m",
        "0s",
        "-5m",
        "999999999d",
        "alertname=DiskFull",
        'alertname="Disk Full"',
        "severity!=info",
        'job=~"("',
        'x!~"[a-"',
        'a=~".*"',
        "=",
        "=~",
        "a=",
        '{a="b"}',
        "a=b,c=d",
        "0123abcd",
        "0123abcd-0000-4000-8000-000000000000",
        "security",
        "1",
        "1.3",
        "1.3.1",
        "phase 1",
        "cilium",
        "ping",
        "!help",
        "\x00",
        "\u202e",
        "\u2028",
        "🔕",
        "ℹ️",
        "é",
        "İ",
        "ß",
        "\t",
        "\r\n",
    ]
)
_word = st.one_of(_special_words, st.text(_any_char, min_size=1, max_size=40))
_space = st.sampled_from([" ", "  ", "\t", "\n", " \u00a0", "\u3000"])


@st.composite
def _command_line(draw: st.DrawFn) -> str:
    """A registered command (sometimes in odd case) followed by random words and white space."""
    name = draw(st.sampled_from(_NAMES))
    if draw(st.booleans()):
        name = draw(st.sampled_from([name.upper(), name.title(), name.replace(" ", "  ")]))
    words = draw(st.lists(_word, max_size=8))
    quote = draw(st.sampled_from(["", "", '"', "'"]))
    parts = [name]
    for word in words:
        parts.append(draw(_space))
        parts.append(f"{quote}{word}{quote}" if quote and draw(st.booleans()) else word)
    return PREFIX + "".join(parts)


# A very long line: a Matrix event carries at most ~64 KB, so ~65,000 characters is the most a body can be.
_huge_line = st.builds(
    lambda name, chunk, times: f"{PREFIX}{name} " + chunk * times,
    st.sampled_from(_NAMES),
    st.text(_any_char, min_size=1, max_size=16),
    st.integers(min_value=1, max_value=4_000),
)

_text = st.one_of(
    _command_line(),
    _command_line(),
    _command_line(),
    st.text(_any_char, max_size=200).map(lambda s: PREFIX + s),
    st.text(max_size=200),  # with surrogates too: nothing stops a client from sending them
    _huge_line,
)

COMMANDS_HARNESS = CommandHarness()
COMMANDS = Target(
    name="commands",
    summary="any text after '!' through Dispatcher.handle: a result, usage or permission answer",
    strategy=st.tuples(st.sampled_from([ADMIN, GUEST]), _text),
    check=COMMANDS_HARNESS.check,
    close=COMMANDS_HARNESS.close,
    stats=lambda: "outcomes " + ", ".join(f"{k}: {v}" for k, v in sorted(COMMANDS_HARNESS.outcomes.items())),
)
