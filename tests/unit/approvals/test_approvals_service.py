"""The approval service on a real SQLite store and outbox, against a fake Argo CD it writes to."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bot.errors import PermissionDenied, UserError
from bot.store.leadership import Fence, LeadershipLost
from tests.unit.approvals_env import (
    ALICE,
    BOB,
    BOT,
    CAROL,
    MALLORY,
    OTHER_ROOM,
    ROOM,
    Env,
    approvals_settings,
    open_env,
)
from tests.unit.argo_fake import REV_A, REV_B, REV_C, Crash

# The store on SQLite and on PostgreSQL (tests.stores).
pytestmark = pytest.mark.usefixtures("store_backend")


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    environment = await open_env(tmp_path)
    yield environment
    await environment.close()


async def votes(env: Env, approval_id: str) -> list[tuple[str, str, str | None]]:
    return [(v.voter, v.effect, v.reason) for v in await env.service.repo.votes(approval_id)]


# --- !sync: the prompt ---------------------------------------------------------


async def test_sync_posts_one_prompt_with_reactions_and_pinned_revision(env: Env) -> None:
    """!sync posts a reply prompt (revisions, statuses, resources, approvers, expiry), ✅ and ❌; audited."""
    approval_id = await env.request()
    rows = await env.messages()
    assert [row["kind"] for row in rows] == ["reply", "reaction", "reaction"]
    prompt = rows[0]["payload"]
    assert [r["payload"]["key"] for r in rows[1:]] == ["✅", "❌"]
    assert all(r["target_outbox_id"] == rows[0]["id"] or r["target_event_id"] for r in rows[1:])
    body = prompt["body"]
    assert approval_id in body and "cilium (argocd/cilium)" in body
    assert f"{REV_A[:10]} → {REV_B}" in body
    assert "OutOfSync, Healthy" in body
    assert "apps/Deployment kube-system/cilium-0" in body and "hubble" not in body
    assert BOB in body and "power level ≥ 50" in body and "not the requester" in body
    assert "open until 2023-11-14 22:23:20 UTC" in body
    assert prompt["m.mentions"] == {"user_ids": [BOB]}
    assert "<code>" in prompt["formatted_body"]
    record = await env.record(approval_id)
    assert (record.state, record.target_revision, record.requester) == ("requested", REV_B, ALICE)
    assert [(e.actor, e.action) for e in await env.audit_rows()] == [(ALICE, "approval:requested")]


async def test_prompt_html_escapes_what_comes_from_the_cluster(env: Env) -> None:
    """Resource names from the cluster cannot inject markup into the prompt."""
    env.argo.edit(
        {
            "status": {
                "resources": [
                    {"kind": "ConfigMap", "namespace": "x", "name": "<b>boom</b>", "status": "OutOfSync"}
                ]
            }
        }
    )
    await env.request()
    html = (await env.messages())[0]["payload"]["formatted_body"]
    assert "<b>boom</b>" not in html and "&lt;b&gt;boom&lt;/b&gt;" in html


async def test_prompt_lists_at_most_the_configured_resources(env: Env) -> None:
    """More out-of-sync resources than prompt_resources_max end with '… and N more'."""
    app = env.argo.obj()
    resources = [
        {"kind": "Secret", "namespace": "n", "name": f"s{i}", "status": "OutOfSync"} for i in range(7)
    ]
    env.argo.put(app | {"status": app["status"] | {"resources": resources}})
    await env.request()
    body = (await env.messages())[0]["payload"]["body"]
    assert "Out of sync (7)" in body and "s2" in body and "s3" not in body and "… and 4 more" in body


@pytest.mark.parametrize(
    ("app", "sender", "expected"),
    [
        ("nginx", ALICE, "nginx is not a gated app (gated: cilium, metallb)"),
        ("cilium", MALLORY, "you may not request syncs of cilium"),
    ],
)
async def test_sync_refuses_ungated_apps_and_unlisted_requesters(
    env: Env, app: str, sender: str, expected: str
) -> None:
    """An app not in the configuration, or a requester not on its list, gets a reason and no prompt."""
    with pytest.raises(UserError, match=re.escape(expected)) as caught:
        await env.service.request(app, room_id=ROOM, sender=sender, event_id="$c")
    assert isinstance(caught.value, PermissionDenied) == (sender == MALLORY)
    assert await env.messages() == []


async def test_sync_refuses_an_app_argo_cd_does_not_know(env: Env) -> None:
    """A gated app whose Application does not exist is refused by name."""
    del env.argo.objects[("argocd", "metallb")]
    with pytest.raises(UserError, match="Argo CD has no Application argocd/metallb"):
        await env.service.request("metallb", room_id=ROOM, sender=ALICE, event_id="$c")


async def test_sync_refuses_an_app_with_automated_sync(tmp_path: Path) -> None:
    """Automated sync enabled makes the gate moot: refused with the reason."""
    settings = approvals_settings(application="podinfo")
    env = await open_env(tmp_path, settings)
    try:
        with pytest.raises(UserError, match=r"automated sync is enabled \(spec.syncPolicy.automated\)"):
            await env.service.request("cilium", room_id=ROOM, sender=ALICE, event_id="$c")
    finally:
        await env.close()


async def test_automated_with_enabled_false_counts_as_off(env: Env) -> None:
    """spec.syncPolicy.automated.enabled: false switches automated sync off: the gate applies."""
    env.argo.edit({"spec": {"syncPolicy": {"automated": {"enabled": False}}}})
    assert await env.request()


async def test_sync_refuses_while_an_operation_runs(env: Env) -> None:
    """An operation already running (e.g. someone synced from the UI) is refused."""
    env.argo.edit({"status": {"operationState": {"phase": "Running", "operation": {"sync": {}}}}})
    with pytest.raises(UserError, match="an operation is already running"):
        await env.service.request("cilium", room_id=ROOM, sender=ALICE, event_id="$c")


async def test_sync_answers_cluster_unreachable(env: Env) -> None:
    """An unreachable cluster is answered 'cluster unreachable: …', not an internal error."""
    env.argo.unreachable = True
    with pytest.raises(UserError, match=r"^cluster unreachable: connection refused"):
        await env.service.request("cilium", room_id=ROOM, sender=ALICE, event_id="$c")


async def test_sync_refuses_a_second_open_request_for_the_same_app(env: Env) -> None:
    """While a request for an app is open, another !sync of it points at the open one."""
    first = await env.request()
    with pytest.raises(UserError, match=f"already open: {first}"):
        await env.service.request("cilium", room_id=ROOM, sender=BOB, event_id="$c2")


async def test_two_concurrent_syncs_post_one_prompt(env: Env) -> None:
    """Two !sync racing for one app: the unique index lets exactly one prompt through."""
    results = await asyncio.gather(
        env.service.request("cilium", room_id=ROOM, sender=ALICE, event_id="$c1"),
        env.service.request("cilium", room_id=ROOM, sender=BOB, event_id="$c2"),
        return_exceptions=True,
    )
    assert sum(isinstance(r, str) for r in results) == 1
    assert sum(isinstance(r, UserError) for r in results) == 1
    assert [r["kind"] for r in await env.messages()].count("reply") == 1


# --- reactions -------------------------------------------------------------------


async def test_approval_writes_the_pinned_operation_once(env: Env) -> None:
    """An approver's ✅ writes operation + clears operationState, with the pinned revision and the id."""
    env.argo.edit({"status": {"operationState": {"phase": "Succeeded", "message": "old"}}})
    approval_id = await env.request()
    await env.react(approval_id, BOB)
    obj = env.argo.obj()
    assert obj["operation"] == {
        "initiatedBy": {"username": ALICE, "automated": False},
        "info": [
            {"name": "readybot-approval", "value": approval_id},
            {"name": "readybot-approved-by", "value": BOB},
        ],
        "sync": {
            "revision": REV_B,
            "prune": True,
            "syncOptions": ["CreateNamespace=true", "ServerSideApply=false", "PruneLast=true"],
        },
    }
    assert "operationState" not in obj["status"]
    assert env.argo.started_for(approval_id) == 1
    record = await env.record(approval_id)
    assert (record.state, record.decided_by) == ("started", BOB)
    actions = [(e.actor, e.action, e.outcome) for e in await env.audit_rows()]
    assert actions[1:] == [
        (BOB, "approval:reaction", "approve"),
        (BOB, "approval:approved", "approved"),
        (BOT, "approval:started", "started"),
    ]
    assert "🔄 Syncing" in (await env.bodies())[-1]


async def test_approval_by_power_level_counts(env: Env) -> None:
    """An approver by power level (not listed by name) starts the sync too."""
    approval_id = await env.request()
    await env.react(approval_id, CAROL)
    assert await env.state(approval_id) == "started"


async def test_the_requesters_own_approval_does_not_count(env: Env) -> None:
    """Four eyes: BOB requests and approves his own request; nothing starts; the vote is recorded."""
    approval_id = await env.request(sender=BOB)
    await env.react(approval_id, BOB)
    assert await env.state(approval_id) == "requested"
    assert env.argo.operations == []
    assert await votes(env, approval_id) == [(BOB, "ignored", "own-request")]


async def test_without_four_eyes_a_requester_who_approves_counts(tmp_path: Path) -> None:
    """four_eyes: false lets a requester who is an approver approve their own request."""
    env = await open_env(tmp_path, approvals_settings(four_eyes=False))
    try:
        approval_id = await env.request(sender=BOB)
        await env.react(approval_id, BOB)
        assert await env.state(approval_id) == "started"
    finally:
        await env.close()


@pytest.mark.parametrize(
    ("sender", "key", "room", "reason"),
    [
        (MALLORY, "✅", ROOM, "not-authorised"),
        (MALLORY, "❌", ROOM, "not-authorised"),
        (BOB, "👍", ROOM, "other-key"),
        (BOB, "✅", OTHER_ROOM, "other-room"),
    ],
)
async def test_reactions_that_change_nothing_are_recorded(
    env: Env, sender: str, key: str, room: str, reason: str
) -> None:
    """Outsiders, other keys and other rooms leave the request open; each is a vote row and an audit row."""
    approval_id = await env.request()
    reaction = await env.react(approval_id, sender, key, room=room)
    assert await env.state(approval_id) == "requested"
    assert env.argo.operations == []
    assert await votes(env, approval_id) == [(sender, "ignored", reason)]
    entry = (await env.audit_rows())[-1]
    assert (entry.actor, entry.action, entry.outcome, entry.detail, entry.event_id) == (
        sender,
        "approval:reaction",
        "ignored",
        reason,
        reaction,
    )


async def test_variation_selector_does_not_change_the_key(env: Env) -> None:
    """'✅️' (with VS16, as some pickers send it) approves like '✅'."""
    approval_id = await env.request()
    await env.react(approval_id, BOB, "✅\ufe0f")
    assert await env.state(approval_id) == "started"


@pytest.mark.parametrize("sender", [ALICE, BOB])
async def test_reject_by_requester_or_approver(env: Env, sender: str) -> None:
    """❌ from the requester or an approver rejects; the prompt says so; later ✅ changes nothing."""
    approval_id = await env.request()
    await env.react(approval_id, sender, "❌")
    assert await env.state(approval_id) == "rejected"
    assert f"Rejected by {sender}" in (await env.bodies())[-1]
    await env.react(approval_id, CAROL)
    assert await env.state(approval_id) == "rejected"
    assert env.argo.operations == []
    assert (await votes(env, approval_id))[-1] == (CAROL, "ignored", "not-open")


async def test_a_replayed_reaction_is_recorded_once(env: Env) -> None:
    """The same reaction event delivered twice (sync replay) is one vote and one audit row."""
    approval_id = await env.request()
    await env.react(approval_id, MALLORY, event_id="$r1")
    await env.react(approval_id, MALLORY, event_id="$r1")
    assert len(await votes(env, approval_id)) == 1
    assert [e.action for e in await env.audit_rows()].count("approval:reaction") == 1


async def test_two_approvals_needed_counts_distinct_people(tmp_path: Path) -> None:
    """approvals_required 2: the same approver twice is one approval; a second person starts it."""
    env = await open_env(tmp_path, approvals_settings(approvals_required=2))
    try:
        approval_id = await env.request()
        await env.react(approval_id, BOB)
        await env.react(approval_id, BOB)
        assert await env.state(approval_id) == "requested"
        await env.react(approval_id, CAROL)
        record = await env.record(approval_id)
        assert (record.state, record.decided_by) == ("started", f"{BOB}, {CAROL}")
        assert env.argo.started_for(approval_id) == 1
    finally:
        await env.close()


async def test_a_redacted_approval_stops_counting(tmp_path: Path) -> None:
    """A ✅ withdrawn (redacted) before the second approval does not count towards it."""
    env = await open_env(tmp_path, approvals_settings(approvals_required=2))
    try:
        approval_id = await env.request()
        first = await env.react(approval_id, BOB)
        await env.service.on_redaction(ROOM, BOB, first, "$redaction")
        await env.react(approval_id, CAROL)
        assert await env.state(approval_id) == "requested"
        assert [(e.action, e.outcome) for e in await env.audit_rows()][-2] == (
            "approval:withdrawn",
            "withdrawn",
        )
    finally:
        await env.close()


async def test_a_redaction_seen_before_its_reaction_wins(env: Env) -> None:
    """Handlers run as separate tasks: a redaction handled first still cancels its reaction."""
    approval_id = await env.request()
    await env.service.on_redaction(ROOM, BOB, "$late", "$redaction")
    await env.react(approval_id, BOB, event_id="$late")
    assert await env.state(approval_id) == "requested"
    assert await votes(env, approval_id) == [(BOB, "ignored", "redacted")]


async def test_concurrent_approvals_start_the_sync_once(tmp_path: Path) -> None:
    """Two approvers reacting at the same moment: one compare-and-set wins, one operation is written."""
    env = await open_env(tmp_path)
    try:
        approval_id = await env.request()
        target = await env.prompt_event(approval_id)
        await asyncio.gather(
            env.service.on_reaction(ROOM, BOB, target, "✅", "$r1", sent_at=env.clock()),
            env.service.on_reaction(ROOM, CAROL, target, "✅", "$r2", sent_at=env.clock()),
        )
        assert env.argo.started_for(approval_id) == 1
        assert [e.action for e in await env.audit_rows()].count("approval:approved") == 1
    finally:
        await env.close()


# --- expiry and time -------------------------------------------------------------


async def test_expiry_closes_the_request_and_edits_the_prompt(env: Env) -> None:
    """The expiry tick closes an overdue request once; the prompt says expired; a late ✅ is ignored."""
    approval_id = await env.request()
    env.clock.now += 599
    assert await env.service.expire_due() == 0
    env.clock.now += 2
    assert await env.service.expire_due() == 1
    assert await env.service.expire_due() == 0
    assert await env.state(approval_id) == "expired"
    assert "⌛ Expired at" in (await env.bodies())[-2]
    await env.react(approval_id, BOB)
    assert env.argo.operations == []
    assert (await votes(env, approval_id))[-1] == (BOB, "ignored", "not-open")


async def test_a_reaction_made_in_time_counts_when_handled_late(env: Env) -> None:
    """A ✅ made before the expiry but handled after it (bot was down) still counts if not yet expired."""
    approval_id = await env.request()
    made_at = env.clock() + 500
    env.clock.now += 900
    await env.react(approval_id, BOB, sent_at=made_at)
    assert await env.state(approval_id) == "started"


async def test_a_reaction_made_after_the_expiry_does_not_count(env: Env) -> None:
    """A ✅ whose own timestamp is past the expiry is ignored as expired, even before the tick ran."""
    approval_id = await env.request()
    env.clock.now += 900
    await env.react(approval_id, BOB)
    assert await env.state(approval_id) == "requested"
    assert await votes(env, approval_id) == [(BOB, "ignored", "expired")]


# --- starting: what can go wrong between prompt and write ------------------------


async def test_revision_moved_since_the_prompt_is_not_synced(env: Env) -> None:
    """If Git moved on after the prompt, nothing is written and the thread offers a fresh !sync."""
    approval_id = await env.request()
    env.argo.edit({"status": {"sync": {"revision": REV_C}}})
    await env.react(approval_id, BOB)
    assert await env.state(approval_id) == "revision_moved"
    assert env.argo.operations == []
    note = (await env.messages())[-1]
    assert note["kind"] == "thread"
    assert f"the target revision moved to {REV_C}" in note["payload"]["body"]
    assert "Send !sync cilium for a fresh prompt" in note["payload"]["body"]


async def test_source_changed_since_the_prompt_is_not_synced(env: Env) -> None:
    """A changed spec.source (another branch) counts as moved, even with the same revision."""
    approval_id = await env.request()
    env.argo.edit({"spec": {"source": {"targetRevision": "release-2"}}})
    await env.react(approval_id, BOB)
    assert await env.state(approval_id) == "revision_moved"
    assert env.argo.operations == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"spec": {"syncPolicy": {"automated": {"selfHeal": True}}}}, "automated sync is enabled"),
        ({"operation": {"sync": {"revision": REV_C}}}, "an operation is already running"),
    ],
)
async def test_checks_are_repeated_at_approval(env: Env, change: dict[str, object], reason: str) -> None:
    """Automated sync turned on, or an operation started elsewhere, after the prompt: aborted, not synced."""
    approval_id = await env.request()
    env.argo.edit(change)
    await env.react(approval_id, BOB)
    record = await env.record(approval_id)
    assert record.state == "aborted"
    assert record.outcome is not None and reason in record.outcome["message"]
    assert env.argo.operations == []


async def test_cluster_unreachable_at_approval_aborts_with_the_reason(env: Env) -> None:
    """The cluster gone when the approval arrives: aborted with 'cluster unreachable: …' in the thread."""
    approval_id = await env.request()
    env.argo.unreachable = True
    await env.react(approval_id, BOB)
    assert await env.state(approval_id) == "aborted"
    assert "Not synced: cluster unreachable: connection refused" in (await env.bodies())[-1]


async def test_a_conflicting_write_is_re_read_and_written_once(env: Env) -> None:
    """A 409 (the app changed under us) leads to a re-read, re-check and one successful write."""
    approval_id = await env.request()
    env.argo.conflict_next_patch = True
    await env.react(approval_id, BOB)
    assert env.argo.patches == 2
    assert env.argo.started_for(approval_id) == 1
    assert await env.state(approval_id) == "started"


async def test_a_write_with_unknown_outcome_is_never_repeated(env: Env) -> None:
    """The write applied but its answer lost: the bot reads, finds its id, follows; one operation."""
    approval_id = await env.request()
    env.argo.fail_after_applying_next_patch = True
    await env.react(approval_id, BOB)
    assert env.argo.patches == 1
    assert await env.state(approval_id) == "started"


async def test_restart_mid_start_follows_ours_and_writes_the_missing_one_once(env: Env) -> None:
    """Requests left 'approved' by a crash: ours found is followed; one never written is written, once."""
    ours = await env.request()
    await env.react(ours, BOB)
    other = await env.request("metallb")
    # As if the bot died right after each approval's compare-and-set.
    await env.db.conn.execute("UPDATE approvals SET state = 'approved'")
    await env.db.conn.commit()
    await env.close()
    await env.open()
    await env.service.runner.resume()
    assert await env.state(ours) == "started"
    assert await env.state(other) == "started"
    assert env.argo.started_for(ours) == 1 and env.argo.started_for(other) == 1
    assert env.argo.patches == 2


async def test_a_write_still_in_flight_and_the_recovery_write_cannot_both_land(env: Env) -> None:
    """The answer timed out while the API server still held the write: one of the two writes lands."""
    approval_id = await env.request()
    env.argo.hold_next_patch = True
    await env.react(approval_id, BOB)
    assert await env.state(approval_id) == "started"
    assert env.argo.land_held() == [False]  # conditional on a resourceVersion that is gone
    assert env.argo.started_for(approval_id) == 1 and env.argo.patches == 2


# --- following -------------------------------------------------------------------


async def approved_and_started(env: Env) -> str:
    approval_id = await env.request()
    await env.react(approval_id, BOB)
    assert await env.state(approval_id) == "started"
    return approval_id


async def test_follow_reports_success_after_the_app_settles(env: Env) -> None:
    """Running → Succeeded at the pinned revision, Synced + Healthy: succeeded, prompt edited, thread note."""
    approval_id = await approved_and_started(env)
    env.argo.controller_picks_up()
    env.argo.controller_finishes()
    await asyncio.wait_for(env.service.runner.follow(approval_id), 5)
    record = await env.record(approval_id)
    assert record.state == "succeeded"
    assert record.outcome is not None and record.outcome["settled"] is True
    rows = await env.messages()
    assert (
        rows[-2]["kind"] == "edit"
        and f"✅ Synced {REV_B[:10]}: Synced, Healthy." in rows[-2]["payload"]["body"]
    )
    assert rows[-1]["kind"] == "thread" and "✅ Synced" in rows[-1]["payload"]["body"]
    assert (await env.audit_rows())[-1].action == "approval:succeeded"


async def test_follow_waits_for_health_then_reports_what_it_is(env: Env) -> None:
    """Succeeded but Progressing: waits up to settle_timeout_s, then reports the app as it is (⚠️)."""
    approval_id = await approved_and_started(env)
    env.argo.controller_picks_up()
    env.argo.controller_finishes(health="Progressing")
    follow = asyncio.create_task(env.service.runner.follow(approval_id))
    await asyncio.sleep(0.1)
    assert await env.state(approval_id) == "started"
    env.clock.now += 31
    await asyncio.wait_for(follow, 5)
    assert await env.state(approval_id) == "succeeded"
    assert "⚠️ Synced" in (await env.bodies())[-2] and "Progressing" in (await env.bodies())[-2]


async def test_follow_reports_a_failed_sync_with_its_failed_resources(env: Env) -> None:
    """Failed: the prompt says failed, the thread lists the failed resources and Argo CD's message."""
    approval_id = await approved_and_started(env)
    env.argo.controller_picks_up()
    failed = {
        "group": "apps",
        "kind": "Deployment",
        "namespace": "kube-system",
        "name": "cilium-0",
        "status": "SyncFailed",
        "message": "admission webhook denied the request",
    }
    env.argo.controller_finishes("Failed", message="one or more objects failed to apply", resources=[failed])
    await asyncio.wait_for(env.service.runner.follow(approval_id), 5)
    assert await env.state(approval_id) == "failed"
    note = (await env.bodies())[-1]
    assert "one or more objects failed to apply" in note
    assert "apps/Deployment kube-system/cilium-0: admission webhook denied the request" in note


async def test_follow_fails_a_sync_of_another_revision(env: Env) -> None:
    """Succeeded at a revision other than the approved one is reported as failed."""
    approval_id = await approved_and_started(env)
    env.argo.controller_picks_up()
    env.argo.controller_finishes(revision=REV_C)
    await asyncio.wait_for(env.service.runner.follow(approval_id), 5)
    record = await env.record(approval_id)
    assert record.state == "failed"
    assert record.outcome is not None and "not the approved" in record.outcome["message"]


async def test_follow_reports_an_operation_replaced_by_another(env: Env) -> None:
    """If another operation replaces ours before it finished, the request ends in error."""
    approval_id = await approved_and_started(env)
    env.argo.edit({"operation": None, "status": {"operationState": {"phase": "Running", "operation": {}}}})
    await asyncio.wait_for(env.service.runner.follow(approval_id), 5)
    assert await env.state(approval_id) == "error"


async def test_follow_gives_up_after_the_follow_timeout(env: Env) -> None:
    """Still running after follow_timeout_s: reported as an error, no longer followed."""
    approval_id = await approved_and_started(env)
    env.argo.controller_picks_up()
    env.clock.now += 61
    await asyncio.wait_for(env.service.runner.follow(approval_id), 5)
    record = await env.record(approval_id)
    assert record.state == "error"
    assert record.outcome is not None and "still running after 60 s" in record.outcome["message"]


async def test_follow_rides_out_a_cluster_outage(env: Env) -> None:
    """An unreachable cluster while following is retried; the outcome is reported once it answers."""
    approval_id = await approved_and_started(env)
    env.argo.unreachable = True
    follow = asyncio.create_task(env.service.runner.follow(approval_id))
    await asyncio.sleep(0.1)
    env.argo.unreachable = False
    env.argo.controller_picks_up()
    env.argo.controller_finishes()
    await asyncio.wait_for(follow, 5)
    assert await env.state(approval_id) == "succeeded"


async def test_a_restarted_bot_follows_syncs_in_progress(env: Env) -> None:
    """After a restart, resume() + run() follow a started request to its outcome."""
    approval_id = await approved_and_started(env)
    await env.close()
    await env.open()
    stop = asyncio.Event()
    runner = asyncio.create_task(env.service.runner.run(stop))
    await env.service.runner.resume()
    env.argo.controller_picks_up()
    env.argo.controller_finishes()
    for _ in range(200):
        if await env.state(approval_id) == "succeeded":
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(runner, 5)
    assert await env.state(approval_id) == "succeeded"


# --- !cancel, !approvals, !apps --------------------------------------------------


@pytest.mark.parametrize("sender", [ALICE, CAROL])
async def test_requester_or_approver_may_cancel(env: Env, sender: str) -> None:
    """!cancel by the requester or an approver closes the request; the prompt says cancelled."""
    approval_id = await env.request()
    answer = await env.service.cancel(approval_id, room_id=ROOM, sender=sender)
    assert answer.startswith(f"Cancelled sync request {approval_id}")
    assert await env.state(approval_id) == "cancelled"
    assert f"Cancelled by {sender}" in (await env.bodies())[-2]


async def test_others_may_not_cancel_and_a_started_sync_cannot_be(env: Env) -> None:
    """Others' !cancel is refused; a started sync cannot be cancelled; ids of other rooms are unknown."""
    approval_id = await env.request()
    with pytest.raises(UserError, match="only the requester or an approver"):
        await env.service.cancel(approval_id, room_id=ROOM, sender=MALLORY)
    with pytest.raises(UserError, match="no sync request"):
        await env.service.cancel(approval_id, room_id=OTHER_ROOM, sender=ALICE)
    await env.react(approval_id, BOB)
    with pytest.raises(UserError, match="already started"):
        await env.service.cancel(approval_id, room_id=ROOM, sender=ALICE)


async def test_approvals_lists_this_rooms_active_requests(env: Env) -> None:
    """!approvals shows open and syncing requests of this room only."""
    open_one = await env.request()
    syncing = await env.request("metallb")
    await env.react(syncing, BOB)
    listing = (await env.service.open_requests(ROOM)).plain
    assert open_one in listing and "requested" in listing and syncing in listing and "started" in listing
    assert "No open sync requests" in (await env.service.open_requests(OTHER_ROOM)).plain


async def test_apps_lists_sync_and_health_and_marks_gated(env: Env) -> None:
    """!apps shows every Application with its statuses; gated ones are marked, auto-sync is noted."""
    listing = (await env.service.list_apps()).plain
    lines = listing.splitlines()
    assert lines[1].startswith("🔐 argocd/cilium · OutOfSync · Healthy")
    assert any(line.startswith("🔐 argocd/metallb · Synced") for line in lines)
    assert any("argocd/podinfo" in line and "auto-sync" in line and "🔐" not in line for line in lines)


async def test_apps_shows_the_notes_an_application_carries_in_spec_info(env: Env) -> None:
    """!apps shows an Application's spec.info items (Argo CD's Info panel) on its line, plain and HTML."""
    app = env.argo.obj("cilium")
    app["spec"]["info"] = [{"name": "note", "value": "simulated: a stand-in controller syncs it"}]
    env.argo.put(app)
    listing = await env.service.list_apps()
    (line,) = [line for line in listing.plain.splitlines() if "argocd/cilium" in line]
    assert line.endswith("ℹ️ note: simulated: a stand-in controller syncs it")
    assert "<em>note: simulated: a stand-in controller syncs it</em>" in listing.html


async def test_apps_answers_cluster_unreachable(env: Env) -> None:
    """!apps with the cluster down answers the reason instead of an empty list."""
    env.argo.unreachable = True
    with pytest.raises(UserError, match="cluster unreachable"):
        await env.service.list_apps()


@pytest.mark.parametrize("finished_meanwhile", [False, True])
async def test_death_after_the_write_is_not_written_again_after_restart(
    env: Env, finished_meanwhile: bool
) -> None:
    """Died after writing, before recording it: the restart finds the operation (even finished), follows."""
    approval_id = await env.request()
    env.argo.crash_next_patch = "after"
    with pytest.raises(Crash):
        await env.react(approval_id, BOB)
    assert await env.state(approval_id) == "approved"
    if finished_meanwhile:
        env.argo.controller_picks_up()
        env.argo.controller_finishes()
    await env.close()
    await env.open()
    await env.service.runner.resume()
    assert await env.state(approval_id) == "started"
    assert env.argo.started_for(approval_id) == 1


async def test_death_before_the_write_writes_once_after_restart(env: Env) -> None:
    """Died before the write: the restart finds no operation of ours, nothing else ran, so writes it once."""
    approval_id = await env.request()
    env.argo.crash_next_patch = "before"
    with pytest.raises(Crash):
        await env.react(approval_id, BOB)
    await env.close()
    await env.open()
    await env.service.runner.resume()
    assert await env.state(approval_id) == "started"
    assert env.argo.started_for(approval_id) == 1


@pytest.mark.parametrize("lands_before_restart", [False, True])
async def test_death_while_the_write_is_held_starts_one_sync(env: Env, lands_before_restart: bool) -> None:
    """Died while the API server held the write: whether it lands before or after the restart, one sync."""
    approval_id = await env.request()
    env.argo.crash_next_patch = "held"
    with pytest.raises(Crash):
        await env.react(approval_id, BOB)
    if lands_before_restart:
        assert env.argo.land_held() == [True]
    await env.close()
    await env.open()
    await env.service.runner.resume()
    assert env.argo.land_held() == ([] if lands_before_restart else [False])
    assert await env.state(approval_id) == "started"
    assert env.argo.started_for(approval_id) == 1


async def test_death_then_another_operation_is_not_guessed_over(env: Env) -> None:
    """Died mid-start and another operation ran meanwhile: ours may have run before it; not written again."""
    approval_id = await env.request()
    env.argo.crash_next_patch = "after"
    with pytest.raises(Crash):
        await env.react(approval_id, BOB)
    env.argo.controller_picks_up()
    env.argo.controller_finishes()
    # Someone syncs again from the Argo CD UI: our operationState is replaced.
    manual = {"info": [{"name": "reason", "value": "manual"}], "sync": {"revision": REV_B}}
    env.argo.edit({"operation": manual})
    env.argo.controller_picks_up()
    env.argo.controller_finishes()
    await env.close()
    await env.open()
    await env.service.runner.resume()
    record = await env.record(approval_id)
    assert record.state == "aborted"
    assert record.outcome is not None
    assert "could not confirm whether the sync started" in record.outcome["message"]
    assert env.argo.started_for(approval_id) == 1


async def test_death_then_the_revision_moved_is_not_synced_after_restart(env: Env) -> None:
    """Died before the write and Git moved meanwhile: the restart refuses the unpinned revision."""
    approval_id = await env.request()
    env.argo.crash_next_patch = "before"
    with pytest.raises(Crash):
        await env.react(approval_id, BOB)
    env.argo.edit({"status": {"sync": {"revision": REV_C}}})
    await env.close()
    await env.open()
    await env.service.runner.resume()
    assert await env.state(approval_id) == "revision_moved"
    assert env.argo.operations == []


async def test_resume_leaves_alone_a_start_in_progress(env: Env) -> None:
    """On start-up, a catch-up ✅ being started while resume() runs is not taken for a crashed start."""
    approval_id = await env.request()
    env.argo.latency = 0.01
    handler = asyncio.create_task(env.react(approval_id, BOB))
    while await env.state(approval_id) == "requested":
        await asyncio.sleep(0.001)
    await env.service.runner.resume()
    await handler
    assert await env.state(approval_id) == "started"
    assert env.argo.started_for(approval_id) == 1


async def test_the_prompt_survives_the_outbox_pruning_its_row(env: Env) -> None:
    """The expiry tick keeps the prompt's event id; pruned outbox rows do not break reactions or edits."""
    approval_id = await env.request()
    await env.service.expire_due()
    assert (await env.record(approval_id)).prompt_event_id is not None
    assert await env.outbox.prune(settled_before=env.clock() + 1) >= 3
    await env.react(approval_id, BOB)
    assert await env.state(approval_id) == "started"
    assert "🔄 Syncing" in (await env.bodies())[-1]


async def test_a_reaction_arriving_before_the_prompts_send_is_recorded_counts(env: Env) -> None:
    """A ✅ that overtakes the outbox's record of the prompt's event id waits for it and counts."""
    approval_id = await env.service.request("cilium", room_id=ROOM, sender=ALICE, event_id=env.event_id())
    target = await env.prompt_event(approval_id)  # what the homeserver will answer, not recorded yet
    reaction = asyncio.create_task(
        env.service.on_reaction(ROOM, BOB, target, "✅", "$late", sent_at=env.clock())
    )
    await asyncio.sleep(0.3)
    assert not reaction.done()
    await env.send_all()
    await asyncio.wait_for(reaction, 5)
    assert await env.state(approval_id) == "started"
    assert env.argo.started_for(approval_id) == 1


async def test_a_reaction_to_another_event_is_dropped_once_no_prompt_is_unsent(env: Env) -> None:
    """With every prompt's event id known, a reaction to some other event is ignored at once."""
    approval_id = await env.request()
    await asyncio.wait_for(
        env.service.on_reaction(ROOM, BOB, "$elsewhere", "✅", "$r", sent_at=env.clock()), 0.5
    )
    assert await env.state(approval_id) == "requested"


# --- gates that need a cross-signed device (!approve / !reject) -----------------


@pytest.fixture
async def signed_env(tmp_path: Path) -> AsyncIterator[Env]:
    environment = await open_env(tmp_path, approvals_settings(require_cross_signed_device=True))
    yield environment
    await environment.close()


async def vote(env: Env, approval_id: str, sender: str, *, approve: bool = True, cross_signed: bool) -> str:
    answer = await env.service.vote_by_command(
        approval_id,
        approve=approve,
        room_id=ROOM,
        sender=sender,
        event_id=env.event_id(),
        sent_at=env.clock(),
        cross_signed=cross_signed,
    )
    await env.send_all()
    return answer


async def test_signed_gate_refuses_a_request_from_an_unproven_device(signed_env: Env) -> None:
    """!sync of a gate that needs a cross-signed device is refused from any other device, with the reason."""
    with pytest.raises(PermissionDenied, match="verified"):
        await signed_env.service.request(
            "cilium", room_id=ROOM, sender=ALICE, event_id="$x", cross_signed=False
        )
    assert await signed_env.messages() == []


async def test_signed_gate_prompt_offers_approve_command_not_a_reaction(signed_env: Env) -> None:
    """The prompt of such a gate names `!approve <id>` and the bot adds only ❌, no ✅ to click."""
    approval_id = await signed_env.service.request(
        "cilium", room_id=ROOM, sender=ALICE, event_id="$x", cross_signed=True
    )
    await signed_env.send_all()
    rows = await signed_env.messages()
    assert [r["payload"]["key"] for r in rows if r["kind"] == "reaction"] == ["❌"]
    assert f"!approve {approval_id} from a verified device" in rows[0]["payload"]["body"]


async def test_signed_gate_ignores_a_check_mark_reaction_and_says_why(signed_env: Env) -> None:
    """An approver's ✅ does not approve such a gate: recorded ignored, nothing written, told why."""
    approval_id = await signed_env.service.request(
        "cilium", room_id=ROOM, sender=ALICE, event_id="$x", cross_signed=True
    )
    await signed_env.send_all()

    await signed_env.react(approval_id, BOB)

    assert await signed_env.state(approval_id) == "requested"
    assert signed_env.argo.started_for(approval_id) == 0
    assert await votes(signed_env, approval_id) == [(BOB, "ignored", "device-not-cross-signed")]
    assert any(f"!approve {approval_id}" in body and BOB in body for body in await signed_env.bodies())


async def test_signed_gate_approves_by_command_from_a_cross_signed_device_only(signed_env: Env) -> None:
    """`!approve` from an unproven device is refused with the reason; from a cross-signed one it syncs."""
    approval_id = await signed_env.service.request(
        "cilium", room_id=ROOM, sender=ALICE, event_id="$x", cross_signed=True
    )
    await signed_env.send_all()

    with pytest.raises(UserError, match="verified"):
        await vote(signed_env, approval_id, BOB, cross_signed=False)
    assert await signed_env.state(approval_id) == "requested"

    answer = await vote(signed_env, approval_id, BOB, cross_signed=True)

    assert "counts" in answer
    assert signed_env.argo.started_for(approval_id) == 1
    assert [v[1] for v in await votes(signed_env, approval_id)] == ["ignored", "approve"]


async def test_reject_command_rejects_without_a_proven_device(signed_env: Env) -> None:
    """`!reject` counts from an unverified device too: a rejection never writes to the cluster."""
    approval_id = await signed_env.service.request(
        "cilium", room_id=ROOM, sender=ALICE, event_id="$x", cross_signed=True
    )
    await signed_env.send_all()

    answer = await vote(signed_env, approval_id, BOB, approve=False, cross_signed=False)

    assert answer.startswith("❌ Rejected")
    assert await signed_env.state(approval_id) == "rejected"


async def test_approve_command_keeps_four_eyes_on_any_gate(env: Env) -> None:
    """`!approve` by the requester does not count (four eyes), from a cross-signed device or not."""
    approval_id = await env.request()

    with pytest.raises(UserError, match="someone else must approve"):
        await vote(env, approval_id, ALICE, cross_signed=True)

    assert await env.state(approval_id) == "requested"


async def test_approve_command_for_an_unknown_request_names_it(env: Env) -> None:
    """`!approve` of an id with no request in this room says so and points to !approvals."""
    with pytest.raises(UserError, match="no sync request deadbeef in this room"):
        await vote(env, "deadbeef", BOB, cross_signed=True)


# --- two replicas: only the leader's term acts ----------------------------------------


async def test_a_replica_that_lost_the_lead_counts_no_approval(env: Env) -> None:
    """After another replica took the lead, this one's ✅ changes nothing: no transition, no operation."""
    env.fenced = True
    await env.close()
    await env.open()
    assert env.fence is not None and await env.fence.take("readybot-0", 1)
    approval_id = await env.request()
    assert await Fence(env.db).take("readybot-1", 2)
    with pytest.raises(LeadershipLost):
        await env.react(approval_id, BOB)
    assert await env.state(approval_id) == "requested"
    assert env.argo.patches == 0


async def test_a_leader_that_loses_the_lead_before_the_write_writes_no_operation(env: Env) -> None:
    """Another replica leads by the time of the write: nothing written; the new leader writes it once."""
    env.fenced = True
    await env.close()
    await env.open()
    assert env.fence is not None and await env.fence.take("readybot-0", 1)
    approval_id = await env.request()
    read = env.argo.get

    async def read_then_lose_the_lead(namespace: str, name: str) -> Mapping[str, Any]:
        await Fence(env.db).take("readybot-1", 2)
        return await read(namespace, name)

    env.argo.get = read_then_lose_the_lead  # type: ignore[method-assign]
    with pytest.raises(LeadershipLost):
        await env.react(approval_id, BOB)
    assert await env.state(approval_id) == "approved"
    assert env.argo.patches == 0
    # The new leader (term 2) builds its service at the takeover and resumes: one sync.
    env.argo.get = read  # type: ignore[method-assign]
    await env.close()
    await env.open()
    assert env.fence is not None and await env.fence.take("readybot-1", 3)
    await env.service.runner.resume()
    assert await env.state(approval_id) == "started"
    assert env.argo.started_for(approval_id) == 1
