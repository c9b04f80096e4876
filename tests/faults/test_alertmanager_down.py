"""`!silence`, `!silences` and `!unsilence` while Alertmanager is down, hung, or loses its answer.

The bot runs as a subprocess against a real Alertmanager (api_timeout_s 2).
Each answer must say what happened in words (unreachable, or did not
answer), never an internal error; nothing may be left half done; the audit
log records each attempt with its outcome; and the commands work again once
Alertmanager does. When a change was sent but never answered, the bot cannot
know whether it was made, so it must not say it failed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from bot.demo.synapse import SynapseServer
from tests.integration.alertmanager import AlertmanagerServer, receiver_config
from tests.integration.botprocess import BotProcess
from tests.integration.botrunner import bot_config
from tests.integration.fixtures import AlertmanagerFactory, BotProcessFactory
from tests.integration.people import Account, Person, PersonFactory

from .am_tools import AnswerDroppingProxy, paused

API_TIMEOUT_S = 2
# Never in an answer: the dispatcher's fallback for unexpected errors, or a traceback.
INTERNAL = ("internal error", "(ref ", "Traceback")
REPLY_WAIT_S = 30.0


def bot_for(
    bot_process: BotProcessFactory, synapse: SynapseServer, account: Account, state: Path, room: str, api: str
) -> BotProcess:
    config = bot_config(
        synapse.base_url,
        account,
        state,
        [room],
        alertmanager={"api_url": api, "api_timeout_s": API_TIMEOUT_S},
    )
    return bot_process(config)


async def start(
    synapse: SynapseServer,
    account: Account,
    person_factory: PersonFactory,
    bot_process: BotProcessFactory,
    tmp_path: Path,
    api: str,
) -> tuple[Person, str, BotProcess]:
    alice = await person_factory("alice")
    room = await alice.create_room("alerts", encrypted=True, invite=[account.user_id])
    bot = bot_for(bot_process, synapse, account, tmp_path / "state", room, api)
    bot.start()
    await bot.wait_ready()
    await alice.wait_joined(room, account.user_id)
    return alice, room, bot


def api_only_alertmanager(alertmanager: AlertmanagerFactory) -> AlertmanagerServer:
    """A real Alertmanager whose notifications go nowhere: these tests use only its API."""
    return alertmanager(receiver_config("http://127.0.0.1:9", "unused-token"))


async def set_kept_silence(
    person: Person, room: str, bot_user: str, server: AlertmanagerServer
) -> dict[str, Any]:
    """A silence set while all is well, which no later failure may touch."""
    await ask(person, room, bot_user, "!silence alertname=Kept 1h set before the outage")
    (kept,) = silences_of(server, person.user_id, "Kept")
    return kept


async def ask(person: Person, room: str, bot_user: str, line: str) -> str:
    """Send a command and return the bot's reply body."""
    sent = await person.send_text(room, line, wait_members=[bot_user])
    return (await person.wait_for_reply(room, bot_user, after_event_id=sent, timeout=REPLY_WAIT_S)).body


def silences_of(server: AlertmanagerServer, user: str, alertname: str) -> list[dict[str, Any]]:
    """The silences (any state) ``user`` made for ``alertname``, as Alertmanager has them."""
    return [
        s
        for s in server.silences()
        if s["createdBy"] == user
        and any(m["name"] == "alertname" and m["value"] == alertname for m in s["matchers"])
    ]


def audit_rows(bot: BotProcess) -> set[tuple[str, str, str]]:
    """(actor, action, outcome) of every audit row, read from the bot's store file."""
    path = Path(bot.config["store"]["path"])
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return {tuple(row) for row in conn.execute("SELECT actor, action, outcome FROM audit")}
    finally:
        conn.close()


def is_clear(answer: str, *says: str) -> bool:
    return all(text in answer for text in says) and not any(bad in answer for bad in INTERNAL)


def claims_failure(answer: str) -> bool:
    return "unreachable" in answer or "failed" in answer


async def test_stopped_alertmanager_gets_unreachable_answers_and_leaves_no_silence(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    alertmanager: AlertmanagerFactory,
    bot_process: BotProcessFactory,
    tmp_path: Path,
    record_property: Any,
) -> None:
    """Alertmanager stopped: all three commands say unreachable, change nothing, and work once it is back."""
    server = api_only_alertmanager(alertmanager)
    alice, room, bot = await start(
        synapse, bot_account, person_factory, bot_process, tmp_path, server.base_url
    )
    me = bot_account.user_id
    kept = await set_kept_silence(alice, room, me, server)

    await asyncio.to_thread(server.stop)
    unreachable = f"Alertmanager unreachable: cannot connect to 127.0.0.1:{server.port}"
    answers = [
        await ask(alice, room, me, "!silence alertname=Outage 1h why"),
        await ask(alice, room, me, "!silences"),
        await ask(alice, room, me, f"!unsilence {kept['id']}"),
    ]
    await asyncio.to_thread(server.start)

    left_behind = len(silences_of(server, alice.user_id, "Outage"))
    (kept_after,) = silences_of(server, alice.user_id, "Kept")
    audited = audit_rows(bot)
    retry = await ask(alice, room, me, "!silence alertname=Outage 1h why")
    made = silences_of(server, alice.user_id, "Outage")
    clear = sum(is_clear(answer, unreachable) for answer in answers)

    record_property("attempts", len(answers))
    record_property("clear_answers", clear)
    record_property("silences_left_behind", left_behind)
    assert clear == len(answers) == 3, answers
    assert left_behind == 0
    assert kept_after["status"]["state"] == "active"  # the failed !unsilence lifted nothing
    assert {
        (alice.user_id, "silence:create", "failed"),
        (alice.user_id, "command:silence", "refused"),
        (alice.user_id, "command:silences", "refused"),
        (alice.user_id, "command:unsilence", "refused"),
    } <= audited
    assert retry.startswith(f"🔕 Silenced by {alice.user_id}")
    assert len(made) == 1 and made[0]["id"] in retry and made[0]["status"]["state"] == "active"


async def test_hung_alertmanager_gets_no_answer_replies_that_never_claim_failure(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    alertmanager: AlertmanagerFactory,
    bot_process: BotProcessFactory,
    tmp_path: Path,
    record_property: Any,
) -> None:
    """Alertmanager paused past the timeout: `!silence` says it may exist (it does); reads say no answer."""
    server = api_only_alertmanager(alertmanager)
    alice, room, bot = await start(
        synapse, bot_account, person_factory, bot_process, tmp_path, server.base_url
    )
    me = bot_account.user_id
    kept = await set_kept_silence(alice, room, me, server)

    with paused(server):
        began = time.monotonic()
        create = await ask(alice, room, me, "!silence alertname=Hung 1h why")
        create_s = time.monotonic() - began
        listing = await ask(alice, room, me, "!silences")
        lift = await ask(alice, room, me, f"!unsilence {kept['id']}")

    # Resumed, Alertmanager handles the request it had buffered while paused.
    made: list[dict[str, Any]] = []
    async with asyncio.timeout(REPLY_WAIT_S):
        while not (made := await asyncio.to_thread(silences_of, server, alice.user_id, "Hung")):
            await asyncio.sleep(0.2)
    audited = audit_rows(bot)
    listing_after = await ask(alice, room, me, "!silences")
    lifted = await ask(alice, room, me, f"!unsilence {kept['id']}")

    no_answer = f"no answer within {API_TIMEOUT_S} s"
    clear = (
        is_clear(create, f"Alertmanager did not answer ({no_answer})", "may have been created", "`!silences`")
        + is_clear(listing, f"Alertmanager unreachable: {no_answer}")
        + is_clear(lift, f"Alertmanager unreachable: {no_answer}")
    )
    left_behind = len(made) if claims_failure(create) else 0

    record_property("attempts", 3)
    record_property("clear_answers", clear)
    record_property("silences_left_behind", left_behind)
    record_property("silences_made_unanswered", len(made))
    record_property("no_answer_reply_s", round(create_s, 1))
    assert clear == 3, (create, listing, lift)
    assert not claims_failure(create)
    assert left_behind == 0
    assert len(made) == 1  # the request did reach Alertmanager: "may have been created" was the truth
    assert made[0]["id"] in listing_after  # and the advice to check `!silences` finds it
    assert (alice.user_id, "silence:create", "unknown") in audited
    assert (alice.user_id, "command:silence", "unconfirmed") in audited
    assert (alice.user_id, "command:unsilence", "refused") in audited
    assert lifted.startswith(f"🔔 Silence {kept['id']} lifted by {alice.user_id}")


async def test_answer_lost_after_the_silence_was_made_is_reported_as_unknown(
    synapse: SynapseServer,
    bot_account: Account,
    person_factory: PersonFactory,
    alertmanager: AlertmanagerFactory,
    bot_process: BotProcessFactory,
    tmp_path: Path,
    record_property: Any,
) -> None:
    """Alertmanager makes the silence, then its answer is lost: the bot says it may exist, not failed."""
    server = api_only_alertmanager(alertmanager)
    proxy = AnswerDroppingProxy(server.base_url)
    await proxy.start()
    try:
        alice, room, bot = await start(
            synapse, bot_account, person_factory, bot_process, tmp_path, proxy.base_url
        )
        me = bot_account.user_id
        create = await ask(alice, room, me, "!silence alertname=Lost 1h why")
        made = silences_of(server, alice.user_id, "Lost")
        listing = await ask(alice, room, me, "!silences")
        audited = audit_rows(bot)
        dropped = proxy.dropped
    finally:
        await proxy.close()

    clear = int(
        is_clear(
            create,
            "Alertmanager did not answer (ServerDisconnectedError)",
            "may have been created",
            "`!silences`",
        )
    )
    left_behind = len(made) if claims_failure(create) else 0

    record_property("attempts", 1)
    record_property("clear_answers", clear)
    record_property("silences_left_behind", left_behind)
    record_property("silences_made_unanswered", len(made))
    assert clear == 1, create
    assert dropped == 1
    assert left_behind == 0
    assert len(made) == 1 and made[0]["id"] in listing
    assert (alice.user_id, "silence:create", "unknown") in audited
