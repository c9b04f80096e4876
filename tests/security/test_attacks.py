"""Attacks on the bot, table-driven: each row is an attempt and the refusal it must meet.

Every row goes through the real homeserver (E2EE clients in the session
Synapse) or over HTTP to the running bot's webhooks, against one bot
subprocess shared by the whole table (``stage``). Each row asserts the
refusal (the answer, the audit entry where the code audits one) *and* that
nothing happened: no sync operation written to the test Kubernetes API, no
command run (nothing claimed, no reply queued), nothing relayed or stored.

A row that the bot accepted raises ``Accepted``; the summary test at the end
records ``attempts`` and ``accepted`` (goal 0). A last test searches every
line the bot printed, every message anyone received and /metrics for the
bot's password, its access token and every webhook token (goal: found 0).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.people import PersonError
from tests.security.stage import UNGATED_APP, WAIT_S, Prompt, Stage

pytestmark = pytest.mark.asyncio(loop_scope="module")

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads" / "alertmanager"
MAX_BODY_BYTES = 65_536  # http.max_body_bytes in the stage's config
APPROVE, REJECT = "✅", "❌"


class Accepted(AssertionError):
    """The bot did what the attempt asked for: a hole."""


def refuse(condition: bool, what: str) -> None:
    """Unless ``condition``, the attempt got through: ``what`` happened."""
    if not condition:
        raise Accepted(what)


@dataclass(frozen=True)
class Attempt:
    name: str
    # The refusal the row expects, in words (kept as a test property).
    refusal: str
    run: Callable[[Stage], Awaitable[None]]

    def __str__(self) -> str:
        return self.name


# -- what "nothing happened" means --------------------------------------------------------------


async def assert_no_sync(stage: Stage, prompt: Prompt, *, writes: int = 0, state: str = "requested") -> None:
    """The app got exactly ``writes`` operations (0: none) and its request is still in ``state``."""
    refuse(
        stage.operation_writes(prompt.app) == writes,
        f"{prompt.app}: {stage.operation_writes(prompt.app)} sync operation(s) written, expected {writes}",
    )
    refuse(
        await stage.approval_state(prompt.approval_id) == state,
        f"request {prompt.approval_id} is {await stage.approval_state(prompt.approval_id)}, expected {state}",
    )


async def assert_not_run(stage: Stage, event_id: str) -> None:
    """After a barrier: ``event_id`` was not taken as a command and got no reply."""
    await stage.settle()
    refuse(not await stage.claimed(event_id), f"{event_id} was run as a command")
    refuse(await stage.replies_to(event_id) == 0, f"the bot answered {event_id}")
    for person in stage.people:
        for event in stage.bot_messages(person, stage.main) + stage.bot_messages(person, stage.stray):
            in_reply_to = event.source.get("content", {}).get("m.relates_to", {}).get("m.in_reply_to", {})
            refuse(in_reply_to.get("event_id") != event_id, f"{person.user_id} saw a reply to {event_id}")


async def reaction_refused(stage: Stage, prompt: Prompt, reaction_id: str, actor: str, reason: str) -> None:
    """The reaction was recorded and audited as ignored for ``reason``."""
    entry = await stage.wait_audit(reaction_id, "approval:reaction")
    refuse(entry[2] == "ignored", f"the reaction {reaction_id} was taken as {entry[2]}")
    assert entry == (actor, "approval:reaction", "ignored", reason)


# -- approval rows ---------------------------------------------------------------------------------


async def self_approval_under_four_eyes(stage: Stage) -> None:
    prompt = await stage.prompt("cilium")
    reaction = await stage.alice.react(stage.main, prompt.event_id, APPROVE)
    await reaction_refused(stage, prompt, reaction, stage.alice.user_id, "own-request")
    await assert_no_sync(stage, prompt)


async def approval_by_non_approver(stage: Stage) -> None:
    prompt = await stage.prompt("cilium")
    reaction = await stage.mallory.react(stage.main, prompt.event_id, APPROVE)
    await reaction_refused(stage, prompt, reaction, stage.mallory.user_id, "not-authorised")
    await assert_no_sync(stage, prompt)


async def approval_with_another_key(stage: Stage) -> None:
    prompt = await stage.prompt("cilium")
    reaction = await stage.bob.react(stage.main, prompt.event_id, "👍")
    await reaction_refused(stage, prompt, reaction, stage.bob.user_id, "other-key")
    await assert_no_sync(stage, prompt)


async def approval_reacted_in_another_room(stage: Stage) -> None:
    prompt = await stage.prompt("cilium")
    # An honest client puts the relation in the clear: the homeserver sees
    # the target is in another room and refuses the event.
    with pytest.raises(PersonError, match="Relations must be in the same room"):
        await stage.bob.react(stage.second, prompt.event_id, APPROVE)
    await stage.settle()
    await assert_no_sync(stage, prompt)


def hidden_reaction(target: str, key: str = APPROVE) -> dict[str, Any]:
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}


async def forged_approval_from_another_served_room(stage: Stage) -> None:
    prompt = await stage.prompt("cilium")
    # The relation only inside the ciphertext: the homeserver cannot check it.
    reaction = await stage.bob.send_raw(
        stage.second, "m.reaction", hidden_reaction(prompt.event_id), relation_in_clear=False
    )
    await reaction_refused(stage, prompt, reaction, stage.bob.user_id, "other-room")
    await assert_no_sync(stage, prompt)


async def forged_approval_from_an_unserved_room(stage: Stage) -> None:
    prompt = await stage.prompt("cilium")
    reaction = await stage.bob.send_raw(
        stage.stray, "m.reaction", hidden_reaction(prompt.event_id), relation_in_clear=False
    )
    await stage.settle()
    # Not even looked at: the room is not served.
    refuse(await stage.votes_of(reaction) == 0, "a reaction from an unserved room was counted")
    assert await stage.audit_of(reaction) == []
    await assert_no_sync(stage, prompt)


async def approval_of_another_event(stage: Stage) -> None:
    prompt = await stage.prompt("cilium")
    # ✅ on alice's "!sync cilium" rather than on the bot's prompt.
    reaction = await stage.bob.react(stage.main, prompt.command_id, APPROVE)
    await stage.settle()
    refuse(await stage.votes_of(reaction) == 0, "a ✅ on another event was counted as a vote")
    assert await stage.audit_of(reaction) == []
    await assert_no_sync(stage, prompt)


async def approval_after_expiry(stage: Stage) -> None:
    prompt = await stage.prompt("expiring")  # opened at set-up, expires after 2 s
    await stage.wait_edit(prompt, "⌛ Expired at")
    reaction = await stage.bob.react(stage.main, prompt.event_id, APPROVE)
    await reaction_refused(stage, prompt, reaction, stage.bob.user_id, "not-open")
    await assert_no_sync(stage, prompt, state="expired")


async def approval_of_an_approved_request(stage: Stage) -> None:
    prompt = await stage.prompt("podinfo")
    await stage.bob.react(stage.main, prompt.event_id, APPROVE)  # the real approval
    await stage.controller.operation("podinfo")
    stage.controller.run_to_success("podinfo")
    await stage.wait_edit(prompt, "✅ Synced")
    reaction = await stage.carol.react(stage.main, prompt.event_id, APPROVE)
    await reaction_refused(stage, prompt, reaction, stage.carol.user_id, "not-open")
    await assert_no_sync(stage, prompt, writes=1, state="succeeded")


async def approval_of_a_rejected_request(stage: Stage) -> None:
    prompt = await stage.prompt("grafana")
    await stage.alice.react(stage.main, prompt.event_id, REJECT)  # the requester withdraws
    await stage.wait_edit(prompt, "🚫 Rejected")
    reaction = await stage.bob.react(stage.main, prompt.event_id, APPROVE)
    await reaction_refused(stage, prompt, reaction, stage.bob.user_id, "not-open")
    await assert_no_sync(stage, prompt, state="rejected")


async def redacted_approval_after_the_sync_started(stage: Stage) -> None:
    prompt = await stage.prompt("kyverno")
    approval = await stage.bob.react(stage.main, prompt.event_id, APPROVE)
    operation = await stage.controller.operation("kyverno")
    await stage.wait_state(prompt.approval_id, "started")
    redaction = await stage.bob.redact(stage.main, approval)
    entry = await stage.wait_audit(redaction, "approval:withdrawn")
    assert entry == (stage.bob.user_id, "approval:withdrawn", "ignored", "not-open")
    await stage.settle()
    # Not undone, not stopped, not started again.
    refuse(stage.controller.app("kyverno").get("operation") == operation, "the running operation changed")
    await assert_no_sync(stage, prompt, writes=1, state="started")
    stage.controller.run_to_success("kyverno")
    await stage.wait_edit(prompt, "✅ Synced")
    await assert_no_sync(stage, prompt, writes=1, state="succeeded")


async def sync_of_an_ungated_app(stage: Stage) -> None:
    command = await stage.alice.send_text(stage.main, f"!sync {UNGATED_APP}")
    reply = await stage.alice.wait_for_reply(
        stage.main, stage.bot_user, after_event_id=command, timeout=WAIT_S
    )
    assert f"{UNGATED_APP} is not a gated app" in reply.body
    entry = await stage.wait_audit(command, "command:sync")
    assert entry[2] == "refused"
    refuse(stage.operation_writes(UNGATED_APP) == 0, "an ungated app was synced")
    refuse(not stage.has_operation(UNGATED_APP), "an ungated app has an operation")
    rows = await stage.query("SELECT count(*) FROM approvals WHERE app = ?", UNGATED_APP)
    refuse(rows[0][0] == 0, "a request was opened for an ungated app")


# -- command rows ----------------------------------------------------------------------------------


async def command_in_an_unserved_room(stage: Stage) -> None:
    # The bot is in the room (alice, a trusted inviter, brought it) but does not serve it.
    command = await stage.alice.send_text(stage.stray, "!ping")
    await assert_not_run(stage, command)
    assert await stage.audit_of(command) == []
    rows = await stage.query("SELECT count(*) FROM outbox WHERE room_id = ?", stage.stray)
    refuse(rows[0][0] == 0, "the bot posted in a room it does not serve")


async def denied(stage: Stage, text: str, action: str, answer: str) -> None:
    command = await stage.mallory.send_text(stage.main, text)
    reply = await stage.mallory.wait_for_reply(
        stage.main, stage.bot_user, after_event_id=command, timeout=WAIT_S
    )
    refuse(reply.body.startswith("⛔"), f"{text!r} was answered {reply.body!r}")
    assert answer in reply.body
    entry = await stage.wait_audit(command, action)
    assert entry == (stage.mallory.user_id, action, "denied", None)


async def command_by_a_member_not_on_the_allow_list(stage: Stage) -> None:
    await denied(
        stage, '!silence alertname="Watchdog" 1h', "command:silence", "not allowed to run this command"
    )


async def command_by_a_member_below_the_power_level(stage: Stage) -> None:
    await denied(stage, "!apps", "command:apps", "not allowed to run this command")


async def sync_by_a_member_who_may_not_request(stage: Stage) -> None:
    prompt = await stage.prompt("cilium")
    await denied(stage, "!sync cilium", "command:sync", "you may not request syncs of cilium")
    rows = await stage.query("SELECT count(*) FROM approvals WHERE app = 'cilium'")
    refuse(rows[0][0] == 1, "mallory's !sync opened a request")
    await assert_no_sync(stage, prompt)


def edit(target: str, body: str, new_body: str) -> dict[str, Any]:
    return {
        "msgtype": "m.text",
        "body": body,
        "m.new_content": {"msgtype": "m.text", "body": new_body},
        "m.relates_to": {"rel_type": "m.replace", "event_id": target},
    }


async def edit_not_run(stage: Stage, sender_name: str, target: str, body: str, new_body: str) -> None:
    sender = getattr(stage, sender_name)
    event = await sender.send_raw(stage.main, "m.room.message", edit(target, body, new_body))
    await assert_not_run(stage, event)
    entry = await stage.wait_audit(event, "command:skipped")
    assert entry == (sender.user_id, "command:skipped", "edit", None)


async def edit_of_someone_elses_message_into_a_command(stage: Stage) -> None:
    await edit_not_run(stage, "mallory", stage.hello_id, "!ping", "!ping")


async def edit_of_the_bots_message_into_a_command(stage: Stage) -> None:
    prompt = await stage.prompt("cilium")
    await edit_not_run(stage, "alice", prompt.event_id, "!approvals", "!approvals")


async def edit_of_an_old_message_into_a_command(stage: Stage) -> None:
    await edit_not_run(stage, "alice", stage.hello_id, "!ping", "!ping")


async def edit_of_a_command_into_another_command(stage: Stage) -> None:
    # As Element sends an edit: "* " before the fallback body.
    command = await stage.alice.send_text(stage.main, "!ping")
    await stage.alice.wait_for_reply(stage.main, stage.bot_user, after_event_id=command, timeout=WAIT_S)
    await edit_not_run(stage, "alice", command, "* !approvals", "!approvals")


# -- webhook rows ------------------------------------------------------------------------------------


def alertmanager_body(marker: str, receiver: str = "team-a") -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((PAYLOADS / "firing_one.json").read_text())
    payload["receiver"] = receiver
    payload["groupKey"] = f'{{}}:{{alertname="{marker}"}}'
    for labels in (payload["groupLabels"], payload["commonLabels"], payload["alerts"][0]["labels"]):
        labels["alertname"] = marker
    return payload


def falco_body(marker: str) -> dict[str, Any]:
    return {
        "uuid": str(uuid.uuid4()),
        "output": f"09:00:00.000000001: Warning {marker} (user=root pod=web-1 proc=bash)",
        "priority": "Warning",
        "rule": marker,
        "time": "2027-01-15T09:00:00.000000001Z",
        "output_fields": {"k8s.pod.name": "web-1", "proc.name": "bash"},
        "source": "syscall",
        "tags": ["container", "shell"],
        "hostname": "node-a",
    }


@dataclass(frozen=True)
class HookRequest:
    token: str | None
    body: bytes | None  # None: sent chunked (no Content-Length), see ``chunked``
    content_type: str = "application/json"
    chunked: bytes = b""


# (stage, hook, marker) -> the request to send
HookCase = Callable[[Stage, str, str], HookRequest]


def valid_body(hook: str, marker: str, receiver: str = "team-a") -> bytes:
    data = alertmanager_body(marker, receiver) if hook == "alertmanager" else falco_body(marker)
    return json.dumps(data).encode()


def token_of(stage: Stage, hook: str) -> str:
    return stage.secrets.hook_tokens["alertmanager/team-a" if hook == "alertmanager" else "falco"]


def other_hooks_token(stage: Stage, hook: str) -> str:
    return stage.secrets.hook_tokens["falco" if hook == "alertmanager" else "alertmanager/team-a"]


def oversized(hook: str, marker: str) -> bytes:
    data = json.loads(valid_body(hook, marker))
    data["padding"] = "x" * MAX_BODY_BYTES
    return json.dumps(data).encode()


def deeply_nested(hook: str, marker: str) -> bytes:
    # Well under the size limit, far over the nesting limit (32).
    depth = 5_000
    data = valid_body(hook, marker)[:-1] + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"
    assert len(data) < MAX_BODY_BYTES
    return data


HOOK_CASES: dict[str, tuple[HookCase, int, str]] = {
    "no_token": (
        lambda s, h, m: HookRequest(None, valid_body(h, m)),
        401,
        "missing or wrong bearer token",
    ),
    "wrong_token": (
        lambda s, h, m: HookRequest(token_of(s, h)[:-4] + "AAAA", valid_body(h, m)),
        401,
        "missing or wrong bearer token",
    ),
    "another_hooks_token": (
        lambda s, h, m: HookRequest(other_hooks_token(s, h), valid_body(h, m)),
        401,
        "missing or wrong bearer token",
    ),
    "oversized_body": (
        lambda s, h, m: HookRequest(token_of(s, h), oversized(h, m)),
        413,
        f"body too large: the limit is {MAX_BODY_BYTES} bytes (http.max_body_bytes)",
    ),
    "oversized_chunked_body": (
        lambda s, h, m: HookRequest(token_of(s, h), None, chunked=oversized(h, m)),
        413,
        f"body too large: the limit is {MAX_BODY_BYTES} bytes (http.max_body_bytes)",
    ),
    "invalid_json": (
        lambda s, h, m: HookRequest(token_of(s, h), valid_body(h, m)[:-2]),
        400,
        "invalid JSON",
    ),
    "wrong_content_type": (
        lambda s, h, m: HookRequest(token_of(s, h), valid_body(h, m), content_type="text/plain"),
        415,
        "expected Content-Type: application/json",
    ),
    "deeply_nested_json": (
        lambda s, h, m: HookRequest(token_of(s, h), deeply_nested(h, m)),
        400,
        "JSON nested deeper than 32 levels",
    ),
}


async def post_hook(stage: Stage, hook: str, request: HookRequest) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": request.content_type}
    if request.token is not None:
        headers["Authorization"] = f"Bearer {request.token}"
    data: bytes | AsyncIterator[bytes]
    if request.body is not None:
        data = request.body
    else:

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(request.chunked), 8_192):
                yield request.chunked[start : start + 8_192]

        data = chunks()
    async with (
        aiohttp.ClientSession() as session,
        session.post(stage.bot.url(f"/hooks/{hook}"), data=data, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def hook_refused(
    stage: Stage, hook: str, request: HookRequest, marker: str, status: int, detail: str
) -> None:
    answer_status, answer = await post_hook(stage, hook, request)
    refuse(answer_status != 200, f"/hooks/{hook} accepted it")
    assert answer_status == status and detail in str(answer.get("error")), (
        f"answered {answer_status} {answer}"
    )
    # Nothing kept: the marker is nowhere in the bot's database (outbox, groups, aggregates…).
    refuse(marker not in await asyncio.to_thread(stage.store_dump), f"the bot stored {marker}")


def hook_attempt(hook: str, case: str) -> Attempt:
    build, status, detail = HOOK_CASES[case]

    async def run(stage: Stage) -> None:
        marker = f"RbAttack{uuid.uuid4().hex[:12]}"
        await hook_refused(stage, hook, build(stage, hook, marker), marker, status, detail)

    return Attempt(f"{hook}_{case}", f"{status} {detail}", run)


async def alertmanager_other_receivers_token(stage: Stage) -> None:
    marker = f"RbAttack{uuid.uuid4().hex[:12]}"
    # team-a's token, a notification for team-b.
    request = HookRequest(token_of(stage, "alertmanager"), valid_body("alertmanager", marker, "team-b"))
    await hook_refused(
        stage, "alertmanager", request, marker, 403, "this token is not valid for that receiver"
    )


async def unknown_hook_probe(stage: Stage) -> None:
    # Without a token nobody learns which hooks exist: 401, not 404.
    marker = f"RbAttack{uuid.uuid4().hex[:12]}"
    request = HookRequest(None, valid_body("alertmanager", marker))
    await hook_refused(stage, "velero", request, marker, 401, "missing or wrong bearer token")


# -- the table ------------------------------------------------------------------------------------------

ATTEMPTS: list[Attempt] = [
    Attempt("self_approval_under_four_eyes", "ignored: own-request", self_approval_under_four_eyes),
    Attempt("approval_by_non_approver", "ignored: not-authorised", approval_by_non_approver),
    Attempt("approval_with_another_key", "ignored: other-key", approval_with_another_key),
    Attempt(
        "approval_reacted_in_another_room",
        "homeserver 400: relations must be in the same room",
        approval_reacted_in_another_room,
    ),
    Attempt(
        "forged_approval_from_another_served_room",
        "ignored: other-room",
        forged_approval_from_another_served_room,
    ),
    Attempt(
        "forged_approval_from_an_unserved_room",
        "not looked at (room not served)",
        forged_approval_from_an_unserved_room,
    ),
    Attempt("approval_of_another_event", "not a vote (not the prompt)", approval_of_another_event),
    Attempt("approval_after_expiry", "ignored: not-open (expired)", approval_after_expiry),
    Attempt(
        "approval_of_an_approved_request", "ignored: not-open (succeeded)", approval_of_an_approved_request
    ),
    Attempt("approval_of_a_rejected_request", "ignored: not-open (rejected)", approval_of_a_rejected_request),
    Attempt(
        "redacted_approval_after_the_sync_started",
        "withdrawal ignored: not-open; one sync, run to its end",
        redacted_approval_after_the_sync_started,
    ),
    Attempt("sync_of_an_ungated_app", "refused: not a gated app", sync_of_an_ungated_app),
    Attempt("command_in_an_unserved_room", "not looked at (room not served)", command_in_an_unserved_room),
    Attempt(
        "command_by_a_member_not_on_the_allow_list",
        "denied: not allowed",
        command_by_a_member_not_on_the_allow_list,
    ),
    Attempt(
        "command_by_a_member_below_the_power_level",
        "denied: not allowed",
        command_by_a_member_below_the_power_level,
    ),
    Attempt(
        "sync_by_a_member_who_may_not_request",
        "denied: may not request",
        sync_by_a_member_who_may_not_request,
    ),
    Attempt(
        "edit_of_someone_elses_message_into_a_command",
        "skipped: edit",
        edit_of_someone_elses_message_into_a_command,
    ),
    Attempt(
        "edit_of_the_bots_message_into_a_command", "skipped: edit", edit_of_the_bots_message_into_a_command
    ),
    Attempt("edit_of_an_old_message_into_a_command", "skipped: edit", edit_of_an_old_message_into_a_command),
    Attempt(
        "edit_of_a_command_into_another_command", "skipped: edit", edit_of_a_command_into_another_command
    ),
    *(hook_attempt(hook, case) for hook in ("alertmanager", "falco") for case in HOOK_CASES),
    Attempt(
        "alertmanager_another_receivers_token",
        "403 this token is not valid for that receiver",
        alertmanager_other_receivers_token,
    ),
    Attempt("unknown_hook_probe", "401 missing or wrong bearer token", unknown_hook_probe),
]


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=str)
async def test_attempt_is_refused_and_changes_nothing(
    attempt: Attempt, stage: Stage, record_property: Callable[[str, object], None]
) -> None:
    """Each attempt of the table meets its refusal, and nothing it asked for happens."""
    record_property("attempt", attempt.name)
    record_property("expected_refusal", attempt.refusal)
    stage.tally[attempt.name] = "error"
    try:
        await attempt.run(stage)
    except Accepted:
        stage.tally[attempt.name] = "accepted"
        record_property("accepted", 1)
        raise
    stage.tally[attempt.name] = "refused"
    record_property("accepted", 0)


async def test_the_same_requests_done_right_are_accepted(
    stage: Stage, record_property: Callable[[str, object], None]
) -> None:
    """Controls: a correct Alertmanager notification and Falco event are stored and relayed to the room."""
    for hook in ("alertmanager", "falco"):
        marker = f"RbControl{uuid.uuid4().hex[:12]}"
        status, answer = await post_hook(
            stage, hook, HookRequest(token_of(stage, hook), valid_body(hook, marker))
        )
        assert (status, answer.get("status")) == (200, "accepted"), answer
        assert marker in await asyncio.to_thread(stage.store_dump)
        await stage.alice.wait_for(
            lambda e, m=marker: m in str(getattr(e, "body", "")),
            room_id=stage.main,
            timeout=WAIT_S,
            what=f"the relayed {hook} message",
        )
    # No attack marker reached anyone.
    leaked = [
        (person.user_id, str(getattr(event, "body", ""))[:80])
        for person in stage.people
        for _, event in person.received
        if "RbAttack" in str(getattr(event, "source", ""))
    ]
    assert leaked == []
    record_property("controls_accepted", 2)


async def test_no_secret_in_logs_messages_or_metrics(
    stage: Stage, record_property: Callable[[str, object], None]
) -> None:
    """Password, access token, hook tokens and cross-signing keys appear in no log, message or /metrics."""
    secrets = stage.secrets.named(await asyncio.to_thread(stage.access_token))
    secrets |= await asyncio.to_thread(stage.cross_signing_seeds)
    log_lines = stage.bot.log_text().splitlines()
    messages = [
        json.dumps(getattr(event, "source", {}), ensure_ascii=False)
        for person in stage.people
        for _, event in person.received
    ]
    async with aiohttp.ClientSession() as session, session.get(stage.bot.url("/metrics")) as response:
        assert response.status == 200
        metrics = await response.text()
    # The search must have something to search: the log names the bot, the
    # messages include its answers, /metrics has its counters.
    assert any(stage.bot_user in line for line in log_lines)
    assert any(stage.bot_user in message for message in messages)
    assert "readybot_" in metrics

    found = sorted(
        f"{name} in {where}"
        for name, value in secrets.items()
        for where, texts in (("log", log_lines), ("messages", messages), ("/metrics", [metrics]))
        if any(value in text for text in texts)
    )
    record_property("secrets_searched", len(secrets))
    record_property("log_lines_searched", len(log_lines))
    record_property("messages_searched", len(messages))
    record_property("secrets_found", len(found))
    assert found == []


async def test_summary_no_attempt_was_accepted(
    stage: Stage, record_property: Callable[[str, object], None]
) -> None:
    """Every attempt of the table ran and was refused: accepted is 0."""
    tally = stage.tally
    accepted = sorted(name for name, verdict in tally.items() if verdict == "accepted")
    unfinished = sorted(name for name, verdict in tally.items() if verdict == "error")
    record_property("attempts", len(tally))
    record_property("accepted", len(accepted))
    record_property("refused", sum(verdict == "refused" for verdict in tally.values()))
    assert accepted == [], f"accepted: {accepted}"
    assert unfinished == [], f"rows that did not finish: {unfinished}"
    if len(tally) < len(ATTEMPTS):
        pytest.skip(f"only {len(tally)} of {len(ATTEMPTS)} rows ran (a -k selection?)")
