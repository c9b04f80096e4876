"""No replay: commands answered before a restart are never run again, after SIGKILL or SIGTERM.

The bot runs as its own process in an encrypted room. A person sends 50
commands (``!ping``, every fifth one ``!help``), each answered once. Then:

1. **SIGKILL, with the last sync token lost.** The harsh case is a crash
   after a sync's events were handled but before its token was stored; the
   restarted bot then syncs from the token before and receives those events
   again. That window is too small to hit on purpose, so the test makes it
   happen: it notes the token the bot had stored before the last 5
   commands, and after the SIGKILL writes it back into the store. The
   restarted bot is handed those commands again (the homeserver returns a
   sync's newest 10 events, so some or all of them), and must not answer
   them.
2. **SIGTERM**, a normal restart.

After each start the person sends one more ``!ping`` and waits for its
answer (the bot is live and has caught up), then a few more seconds. In the
end the person's client holds exactly one answer per old command, and the
audit log (read from the store once the bot has stopped) one row per old
command.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from nio import RoomMessageNotice, RoomMessageText

from bot.demo.synapse import SynapseServer
from tests.integration.botprocess import BotProcess
from tests.integration.botrunner import bot_config, eventually
from tests.integration.fixtures import BotProcessFactory
from tests.integration.people import Account, Person, PersonFactory

COMMANDS = 50
# The last commands before the crash: their sync token is the one "lost".
LAST_BATCH = 5
# After the probe is answered, how long a replayed answer has to show up.
SETTLE_S = 3.0
SYNC_TOKEN_KEY = "matrix.sync_token"


def command_text(n: int) -> str:
    return "!help" if n % 5 == 4 else "!ping"


def answers(person: Person, room: str, bot: str) -> Counter[str]:
    """How many of the bot's replies the person's client holds, per command event id."""
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    for room_id, event in person.received:
        if room_id != room or not isinstance(event, RoomMessageNotice | RoomMessageText):
            continue
        # A reply decrypted late is recorded a second time: count events, not records.
        if event.sender != bot or event.event_id in seen:
            continue
        seen.add(event.event_id)
        relates = event.source.get("content", {}).get("m.relates_to") or {}
        target = (relates.get("m.in_reply_to") or {}).get("event_id")
        if target is not None:
            counts[target] += 1
    return counts


async def send_commands(person: Person, room: str, numbers: range) -> list[str]:
    return [await person.send_text(room, command_text(n)) for n in numbers]


async def all_answered(person: Person, room: str, bot: str, commands: list[str], what: str) -> None:
    await eventually(lambda: all(answers(person, room, bot)[c] >= 1 for c in commands), what, within_s=60)


def read_store(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    """A read of the bot's store from outside (read-only, so a running bot is not disturbed)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return list(conn.execute(sql, params))


def write_sync_token(path: Path, token: str) -> None:
    """Put back an older sync token, as if the newer one had never been written (bot stopped)."""
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE kv SET value = ? WHERE key = ?", (token, SYNC_TOKEN_KEY))


async def probe(person: Person, room: str, bot: str) -> None:
    """One more command, answered: the restarted bot is live and has caught up."""
    event_id = await person.send_text(room, "!ping")
    await person.wait_for_reply(room, bot, after_event_id=event_id, timeout=60)
    await asyncio.sleep(SETTLE_S)


async def restart(bot: BotProcess, person: Person, room: str, bot_user: str) -> None:
    bot.start()
    await bot.wait_ready()
    await probe(person, room, bot_user)


def replayed(counts: Counter[str], commands: list[str]) -> int:
    """Answers beyond the first, over the old commands."""
    return sum(max(0, counts[c] - 1) for c in commands)


async def test_commands_answered_before_a_restart_are_not_run_again(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    bot_process: BotProcessFactory,
    tmp_path: Path,
    record_property: Any,
) -> None:
    """50 answered commands; SIGKILL losing the last sync token, then SIGTERM: each answered, audited once."""
    alice = await person_factory("alice")
    bot_user = bot_account.user_id
    room = await alice.create_room("ops", encrypted=True, invite=[bot_user])
    config = bot_config(synapse.base_url, bot_account, tmp_path / "state", [room])
    store = Path(config["store"]["path"])
    bot = bot_process(config)
    bot.start()
    await bot.wait_ready()
    await alice.wait_joined(room, bot_user, timeout=60)

    commands = await send_commands(alice, room, range(COMMANDS - LAST_BATCH))
    await all_answered(alice, room, bot_user, commands, "answers to the first commands")
    (stale,) = read_store(store, "SELECT value FROM kv WHERE key = ?", (SYNC_TOKEN_KEY,))
    last = await send_commands(alice, room, range(COMMANDS - LAST_BATCH, COMMANDS))
    commands += last
    await all_answered(alice, room, bot_user, last, "answers to the last commands")
    before = answers(alice, room, bot_user)

    assert await bot.kill() == -signal.SIGKILL
    write_sync_token(store, stale["value"])
    await restart(bot, alice, room, bot_user)
    after_kill = answers(alice, room, bot_user)

    assert await bot.terminate() == 0
    await restart(bot, alice, room, bot_user)
    after_term = answers(alice, room, bot_user)
    assert await bot.terminate() == 0

    audited = Counter(
        row["event_id"]
        for row in read_store(store, "SELECT event_id FROM audit WHERE event_id IS NOT NULL")
        if row["event_id"] in set(commands)
    )
    record_property("commands_before_restart", sum(1 for c in commands if before[c] == 1))
    record_property("replayed_after_sigkill", replayed(after_kill, commands))
    record_property("replayed", replayed(after_term, commands))
    record_property("audit_rows_per_command_max", max(audited.values(), default=0))
    assert [before[c] for c in commands] == [1] * COMMANDS, "each command answered once before"
    assert [after_term[c] for c in commands] == [1] * COMMANDS, {
        n: after_term[c] for n, c in enumerate(commands) if after_term[c] != 1
    }
    assert [audited[c] for c in commands] == [1] * COMMANDS, {
        n: audited[c] for n, c in enumerate(commands) if audited[c] != 1
    }
