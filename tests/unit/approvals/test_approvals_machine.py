"""The approval state machine and the Application view: pure rules, plus the exactly-once property.

The last part drives the real service on a real SQLite store with Hypothesis:
any interleaving of reactions, redactions, duplicates, faults and restarts
never writes more than one sync operation for a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, settings
from hypothesis import Phase as HypothesisPhase
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bot.approvals.application import (
    INFO_APPROVAL,
    Phase,
    StartVerdict,
    build_operation,
    check_start,
    merged_sync_options,
    operation_patch,
    parse_application,
    progress,
    request_refusal,
    settled,
)
from bot.approvals.machine import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    Effect,
    Ignored,
    ReactionFacts,
    RequestFacts,
    State,
    can_transition,
    decide_cancel,
    decide_reaction,
    is_due_for_expiry,
    withdrawal_counts,
)
from bot.errors import UserError
from tests.places import ROOT, upstream
from tests.unit.approvals_env import (
    ALICE,
    BOB,
    CAROL,
    MALLORY,
    OTHER_ROOM,
    ROOM,
    Env,
    approvals_settings,
    open_env,
)
from tests.unit.argo_fake import REV_A, REV_B, REV_C, Crash, application

# The upstream CRD, a copy checked by its git blob id in tests/deploy/test_manifests.py.
ARGO_CRD = ROOT / "tests" / "deploy" / "schemas" / "argocd-application-crd.yaml"

REQUEST = RequestFacts(State.REQUESTED, ROOM, ALICE, expires_at=1_000.0, four_eyes=True)


def reaction(sender: str = BOB, key: str = "✅", *, approver: bool = True, **kw: Any) -> ReactionFacts:
    return ReactionFacts(kw.get("room", ROOM), sender, key, kw.get("sent_at", 500.0), approver)


# --- the machine -----------------------------------------------------------------


def test_only_active_states_have_ways_out() -> None:
    """Terminal states are final; the only way to 'started' is through 'approved'."""
    assert set(TRANSITIONS) == ACTIVE_STATES
    assert all(not can_transition(t, s) for t in TERMINAL_STATES for s in State)
    assert [s for s in State if can_transition(s, State.STARTED)] == [State.APPROVED]
    assert [s for s in State if can_transition(s, State.APPROVED)] == [State.REQUESTED]


@pytest.mark.parametrize(
    ("request_facts", "facts", "expected"),
    [
        (REQUEST, reaction(), (Effect.APPROVE, None)),
        (REQUEST, reaction(CAROL, "❌"), (Effect.REJECT, None)),
        (REQUEST, reaction(ALICE, "❌", approver=False), (Effect.REJECT, None)),
        (REQUEST, reaction(ALICE, approver=True), (Effect.IGNORED, Ignored.OWN_REQUEST)),
        (REQUEST, reaction(MALLORY, approver=False), (Effect.IGNORED, Ignored.NOT_AUTHORISED)),
        (REQUEST, reaction(MALLORY, "❌", approver=False), (Effect.IGNORED, Ignored.NOT_AUTHORISED)),
        (REQUEST, reaction(key="👍"), (Effect.IGNORED, Ignored.OTHER_KEY)),
        (REQUEST, reaction(room=OTHER_ROOM), (Effect.IGNORED, Ignored.OTHER_ROOM)),
        (REQUEST, reaction(sent_at=1_000.5), (Effect.IGNORED, Ignored.EXPIRED)),
        (REQUEST, reaction(sent_at=1_000.0), (Effect.APPROVE, None)),
        (
            RequestFacts(State.APPROVED, ROOM, ALICE, 1_000.0, True),
            reaction(),
            (Effect.IGNORED, Ignored.NOT_OPEN),
        ),
        (RequestFacts(State.REQUESTED, ROOM, ALICE, 1_000.0, False), reaction(ALICE), (Effect.APPROVE, None)),
        (
            RequestFacts(State.REQUESTED, ROOM, ALICE, 1_000.0, False),
            reaction(ALICE, approver=False),
            (Effect.IGNORED, Ignored.NOT_AUTHORISED),
        ),
    ],
)
def test_decide_reaction(
    request_facts: RequestFacts, facts: ReactionFacts, expected: tuple[Effect, Any]
) -> None:
    """Each reaction rule: who, which key, which room, when, and in which state it counts."""
    decision = decide_reaction(request_facts, facts)
    assert (decision.effect, decision.reason) == expected


def test_a_reaction_in_another_room_is_ignored_before_anything_else() -> None:
    """Even an approver's ✅ on a decided request from another room is reported as other-room."""
    decided = RequestFacts(State.REJECTED, ROOM, ALICE, 1_000.0, True)
    assert decide_reaction(decided, reaction(room=OTHER_ROOM)).reason is Ignored.OTHER_ROOM


def test_withdrawal_and_expiry_only_matter_while_requested() -> None:
    """A redacted ✅ and the expiry clock only change a request still waiting for approval."""
    assert withdrawal_counts(State.REQUESTED, Effect.APPROVE)
    assert not withdrawal_counts(State.APPROVED, Effect.APPROVE)
    assert not withdrawal_counts(State.REQUESTED, Effect.IGNORED)
    assert is_due_for_expiry(State.REQUESTED, 10.0, 10.1)
    assert not is_due_for_expiry(State.REQUESTED, 10.0, 10.0)
    assert not is_due_for_expiry(State.STARTED, 10.0, 99.0)


@pytest.mark.parametrize(
    ("state", "requester", "approver", "allowed", "reason"),
    [
        (State.REQUESTED, True, False, True, ""),
        (State.REQUESTED, False, True, True, ""),
        (State.REQUESTED, False, False, False, "only the requester or an approver"),
        (State.STARTED, True, True, False, "already started"),
        (State.REVISION_MOVED, True, False, False, "already revision moved"),
    ],
)
def test_decide_cancel(state: State, requester: bool, approver: bool, allowed: bool, reason: str) -> None:
    """Requester or approver may cancel an open request, nothing else."""
    decision = decide_cancel(state, requester, approver)
    assert decision.allowed is allowed and reason in decision.reason


# --- the Application view ----------------------------------------------------------


def synced_app() -> dict[str, Any]:
    """Our Application with the fields an operation is built from: a retry policy and a resourceVersion."""
    obj = application()
    obj["metadata"]["resourceVersion"] = "722811357"
    obj["spec"]["syncPolicy"]["retry"] = {"limit": 10, "backoff": {"duration": "5s", "factor": 2}}
    return obj


def upstream_app() -> dict[str, Any]:
    """Argo CD's own Application with a full status (../shared/fixtures; skips without it)."""
    text = upstream("argocd/diff-cache.yaml").read_text(encoding="utf-8")
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def test_parse_the_upstream_application() -> None:
    """Argo CD's own Application (../shared) reads: current = last history revision, target = sync rev."""
    view = parse_application(upstream_app())
    assert (view.namespace, view.name, view.resource_version) == ("argo-cd", "velero-test", "722811357")
    assert (view.sync_status, view.health_status) == ("Synced", "Healthy")
    assert view.current_revision == "ea8759964626a583667a2bfd08f334ec2070040a"
    assert view.target_revision == "rev1"
    assert not view.automated and not view.operation_running and not view.multi_source
    assert view.sync_options[0] == "CreateNamespace=true"
    assert view.retry is not None and view.retry["limit"] == 10
    assert view.operation_state is not None and view.operation_state.phase == "Succeeded"


@pytest.mark.parametrize("name", ["application-healthy.yaml", "application-degraded.yaml"])
def test_parse_minimal_applications(name: str) -> None:
    """An Application with almost nothing (no metadata, no sync status) still reads, as not comparable."""
    view = parse_application(yaml.safe_load(upstream(f"argocd/{name}").read_text(encoding="utf-8")))
    assert view.sync_status == "Unknown" and view.target_revision is None and view.current_revision is None
    assert request_refusal(view) is not None and "not compared it yet" in (request_refusal(view) or "")


def test_a_fresh_application_without_status_cannot_be_requested() -> None:
    """No status at all: refused as not compared yet, not a crash."""
    obj = application()
    del obj["status"]
    assert "not compared" in (request_refusal(parse_application(obj)) or "")


def test_multi_source_apps_are_refused() -> None:
    """spec.sources (several sources) is refused: one pinned revision cannot describe it."""
    obj = application()
    obj["spec"]["sources"] = [obj["spec"].pop("source")]
    assert "several sources" in (request_refusal(parse_application(obj)) or "")


def test_operation_running_from_either_field() -> None:
    """.operation set, or operationState Running/Terminating, both mean an operation is running."""
    pending = application() | {"operation": {"sync": {"revision": REV_B}}}
    assert parse_application(pending).operation_running
    for phase, running in (("Running", True), ("Terminating", True), ("Failed", False)):
        obj = application()
        obj["status"]["operationState"] = {"phase": phase, "operation": {}}
        assert parse_application(obj).operation_running is running


def test_operation_carries_the_pinned_revision_the_id_and_merged_options() -> None:
    """The operation: requester, not automated, approval id, pinned revision, prune, merged options, retry."""
    view = parse_application(synced_app())
    operation = build_operation(
        view,
        approval_id="0badc0de",
        requester=ALICE,
        approvers=[BOB, CAROL],
        revision=REV_B,
        prune=True,
        sync_options=["ServerSideApply=false"],
    )
    assert operation["initiatedBy"] == {"username": ALICE, "automated": False}
    assert {"name": INFO_APPROVAL, "value": "0badc0de"} in operation["info"]
    assert operation["sync"]["revision"] == REV_B and operation["sync"]["prune"] is True
    assert "ServerSideApply=false" in operation["sync"]["syncOptions"]
    assert "ServerSideApply=true" not in operation["sync"]["syncOptions"]
    assert operation["retry"]["limit"] == 10
    patch = operation_patch(view.resource_version, operation)
    assert patch["metadata"] == {"resourceVersion": "722811357"}
    assert patch["status"] == {"operationState": None}


def test_the_written_operation_is_valid_for_the_upstream_crd() -> None:
    """The Application with our operation validates against the CRD's openAPIV3Schema."""
    crd = yaml.safe_load(ARGO_CRD.read_text(encoding="utf-8"))
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    view = parse_application(synced_app())
    operation = build_operation(
        view, approval_id="1", requester=ALICE, approvers=[BOB], revision=REV_B, prune=False, sync_options=[]
    )
    obj = copy.deepcopy(synced_app()) | {"operation": operation}
    jsonschema.validate(obj, schema)


def test_merged_sync_options_configured_wins_by_name() -> None:
    """A configured option replaces the app's option of the same name; order is kept."""
    assert merged_sync_options(["A=1", "B=1"], ["B=2", "C=3"]) == ["A=1", "B=2", "C=3"]


def test_check_start() -> None:
    """Right before the write: same revision and source → go; moved or changed → moved; blocked → refused."""
    obj = application()
    view = parse_application(obj)
    assert check_start(view, REV_B, view.source_fingerprint).verdict is StartVerdict.GO
    assert check_start(view, REV_C, view.source_fingerprint).verdict is StartVerdict.MOVED
    assert check_start(view, REV_B, "other").verdict is StartVerdict.MOVED
    automated = parse_application(application(automated=True))
    assert check_start(automated, REV_B, automated.source_fingerprint).verdict is StartVerdict.REFUSED


def test_progress_is_correlated_by_the_approval_id() -> None:
    """Queued while in .operation, then the controller's phase; someone else's operation is 'lost'."""
    obj = application()
    mine = {"info": [{"name": INFO_APPROVAL, "value": "me"}], "sync": {"revision": REV_B}}
    obj["operation"] = mine
    assert progress(parse_application(obj), "me").phase is Phase.QUEUED
    obj.pop("operation")
    obj["status"]["operationState"] = {"phase": "Running", "operation": mine}
    assert progress(parse_application(obj), "me").phase is Phase.RUNNING
    obj["status"]["operationState"] |= {"phase": "Succeeded", "syncResult": {"revision": REV_B}}
    done = progress(parse_application(obj), "me")
    assert (done.phase, done.result_revision) == (Phase.SUCCEEDED, REV_B)
    assert progress(parse_application(obj), "someone-else").phase is Phase.LOST


def test_failed_resources_include_failed_hooks() -> None:
    """A Failed sync lists resources that failed to apply and hooks that failed."""
    obj = application()
    obj["status"]["operationState"] = {
        "phase": "Failed",
        "message": "one or more objects failed to apply",
        "operation": {"info": [{"name": INFO_APPROVAL, "value": "me"}]},
        "syncResult": {
            "revision": REV_B,
            "resources": [
                {
                    "kind": "Deployment",
                    "group": "apps",
                    "namespace": "a",
                    "name": "d",
                    "status": "SyncFailed",
                    "message": "denied",
                },
                {
                    "kind": "Job",
                    "group": "batch",
                    "namespace": "a",
                    "name": "migrate",
                    "hookType": "PreSync",
                    "hookPhase": "Failed",
                    "message": "BackoffLimitExceeded",
                },
                {"kind": "Service", "namespace": "a", "name": "s", "status": "Synced"},
            ],
        },
    }
    state = progress(parse_application(obj), "me")
    assert state.phase is Phase.FAILED
    assert [r.label() for r in state.failed_resources] == ["apps/Deployment a/d", "batch/Job a/migrate"]


def test_settled_needs_synced_healthy_at_the_pinned_revision() -> None:
    """Settled means Synced to the approved revision and Healthy."""
    assert settled(parse_application(application(sync="Synced", target=REV_B)), REV_B)
    assert not settled(parse_application(application(sync="Synced", target=REV_A)), REV_B)
    assert not settled(parse_application(application(sync="Synced", health="Progressing")), REV_B)


# --- exactly once, under any interleaving -------------------------------------------

VOTERS = (ALICE, BOB, CAROL, MALLORY)
KEYS = ("✅", "✅", "❌", "👍")
STARTED_OR_LATER = {State.STARTED.value, State.SUCCEEDED.value, State.FAILED.value, State.ERROR.value}
NEVER_STARTED = {
    State.REQUESTED.value,
    State.REJECTED.value,
    State.EXPIRED.value,
    State.CANCELLED.value,
    State.REVISION_MOVED.value,
}


class ApprovalInterleavings(RuleBasedStateMachine):
    """Reactions, replays, redactions (before or after their reaction), concurrency, faults, restarts.

    A crash (the process dying just before or after the write of the
    operation, or while the API server still holds it) ends the rule with a
    restart, as Kubernetes would restart the pod; meanwhile the Argo CD
    controller may have run the operation. A held write lands (or is refused
    as stale) whenever ``held_writes_land`` says, even after the restarted bot
    wrote again; someone else may sync the app from Argo CD meanwhile.
    """

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp(prefix="approvals-prop-"))
        self.env: Env | None = None
        self.requests: list[str] = []
        # Reaction events made so far: event id -> (sender, key, room); delivered or not.
        self.reactions: dict[str, tuple[str, str, str]] = {}
        self.counter = 0

    def run(self, work: Any) -> Any:
        return self.loop.run_until_complete(work)

    @property
    def e(self) -> Env:
        assert self.env is not None
        return self.env

    @initialize(
        required=st.integers(1, 2),
        four_eyes=st.booleans(),
        fragile=st.sampled_from((None, "before", "after", "held")),
    )
    def open(self, required: int, four_eyes: bool, fragile: str | None) -> None:
        """``fragile``: in this run the bot dies around every write it makes."""
        # The clock stands still between rules: report the app as it is
        # once the operation ended, instead of waiting for it to settle.
        settings = approvals_settings(approvals_required=required, four_eyes=four_eyes, settle_timeout_s=0.0)
        self.env = self.run(open_env(self.tmp, settings))
        self.e.argo.crash_every_patch = fragile
        self.requests.append(self.run(self.e.request()))

    def teardown(self) -> None:
        if self.env is not None:
            self.run(self.env.close())
        self.loop.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def new_reaction(self, sender: str, key: str, room: str) -> str:
        self.counter += 1
        event_id = f"$reaction{self.counter}"
        self.reactions[event_id] = (sender, key, room)
        return event_id

    async def deliver(self, event_id: str) -> bool:
        """Hand one reaction event to the bot; False if the bot died handling it."""
        sender, key, room = self.reactions[event_id]
        target = await self.e.prompt_event(self.requests[-1])
        try:
            await self.e.service.on_reaction(room, sender, target, key, event_id, sent_at=self.e.clock())
        except Crash:
            return False
        return True

    def bot(self, *deliveries: str, controller_meanwhile: bool = True) -> None:
        """Deliver reactions (several at once, as the router's separate tasks); restart after a crash."""

        async def all_of_them() -> list[bool]:
            return list(await asyncio.gather(*(self.deliver(d) for d in deliveries)))

        if not all(self.run(all_of_them())):
            self.restart(controller_meanwhile)

    @rule(
        sender=st.sampled_from(VOTERS),
        key=st.sampled_from(KEYS),
        room=st.sampled_from((ROOM, ROOM, OTHER_ROOM)),
        dies=st.sampled_from((None, "before", "after", "held")),
        controller_meanwhile=st.booleans(),
    )
    def react(self, sender: str, key: str, room: str, dies: str | None, controller_meanwhile: bool) -> None:
        """A reaction; if it starts the sync, the process may die just before or after the write."""
        self.e.argo.crash_next_patch = dies
        self.bot(self.new_reaction(sender, key, room), controller_meanwhile=controller_meanwhile)
        self.e.argo.crash_next_patch = None

    @rule(approver=st.sampled_from((BOB, CAROL)), controller_meanwhile=st.booleans())
    def approve(self, approver: str, controller_meanwhile: bool) -> None:
        """An approver's ✅ in the room: the reaction that matters most, so it gets its own rule."""
        self.bot(self.new_reaction(approver, "✅", ROOM), controller_meanwhile=controller_meanwhile)

    @rule(sender=st.sampled_from(VOTERS), key=st.sampled_from(KEYS))
    def react_later(self, sender: str, key: str) -> None:
        """A reaction that exists (and can be redacted) but whose handler has not run yet."""
        self.new_reaction(sender, key, ROOM)

    @precondition(lambda self: bool(self.reactions))
    @rule(data=st.data())
    def deliver_again_or_late(self, data: st.DataObject) -> None:
        """A replayed or late delivery of a reaction event."""
        self.bot(data.draw(st.sampled_from(sorted(self.reactions))))

    @precondition(lambda self: bool(self.reactions))
    @rule(data=st.data())
    def redact(self, data: st.DataObject) -> None:
        event_id = data.draw(st.sampled_from(sorted(self.reactions)))
        sender = self.reactions[event_id][0]
        self.counter += 1
        self.run(self.e.service.on_redaction(ROOM, sender, event_id, f"$redaction{self.counter}"))

    @rule(first=st.sampled_from(VOTERS), second=st.sampled_from(VOTERS))
    def react_at_once(self, first: str, second: str) -> None:
        """Two ✅ handled concurrently."""
        self.bot(self.new_reaction(first, "✅", ROOM), self.new_reaction(second, "✅", ROOM))

    @rule(
        fault=st.sampled_from(
            (
                "conflict",
                "lost-answer",
                "in-flight",
                "down",
                "up",
                "crash-before",
                "crash-after",
                "crash-held",
            )
        )
    )
    def cluster_fault(self, fault: str) -> None:
        """Armed for the next write (or, for down/up, every call until changed)."""
        argo = self.e.argo
        if fault == "conflict":
            argo.conflict_next_patch = True
        elif fault == "lost-answer":
            argo.fail_after_applying_next_patch = True
        elif fault == "in-flight":
            argo.hold_next_patch = True
        elif fault.startswith("crash-"):
            argo.crash_next_patch = fault.removeprefix("crash-")
        else:
            argo.unreachable = fault == "down"

    @rule(phase=st.sampled_from(("Succeeded", "Failed", "Error")))
    def controller_acts(self, phase: str) -> None:
        """The Argo CD controller runs the pending operation to its end; the bot follows it."""
        argo = self.e.argo
        if argo.obj().get("operation"):
            argo.controller_picks_up()
            argo.controller_finishes(phase)
        if argo.unreachable:
            return
        for approval_id in self.requests:
            if self.run(self.e.state(approval_id)) == State.STARTED.value:
                self.run(asyncio.wait_for(self.e.service.runner.follow(approval_id), 5))

    @precondition(lambda self: bool(self.e.argo.held))
    @rule()
    def held_writes_land(self) -> None:
        """The API server gets to the writes it held: applied, or 409 if the app changed since."""
        self.e.argo.land_held()

    @rule(phase=st.sampled_from(("Succeeded", "Failed")))
    def someone_else_syncs(self, phase: str) -> None:
        """A person syncs the app from Argo CD (not through the bot), when no operation is running."""
        argo = self.e.argo
        if argo.unreachable or parse_application(argo.obj()).operation_running:
            return
        argo.edit({"operation": {"info": [{"name": "reason", "value": "ui"}], "sync": {"revision": REV_B}}})
        argo.controller_picks_up()
        argo.controller_finishes(phase)

    @rule(moved=st.booleans())
    def git_moves(self, moved: bool) -> None:
        self.e.argo.edit({"status": {"sync": {"revision": REV_C if moved else REV_B}}})

    @rule(seconds=st.sampled_from((1.0, 300.0, 700.0)))
    def time_passes(self, seconds: float) -> None:
        self.e.clock.now += seconds
        self.run(self.e.service.expire_due())

    @rule(sender=st.sampled_from(VOTERS), now=st.integers(0, 3))
    def cancel(self, sender: str, now: int) -> None:
        if now:
            return  # a cancel now and then: too many would close requests before anything else happens
        # A refusal (not allowed, already decided) leaves the request as it was.
        with contextlib.suppress(UserError):
            self.run(self.e.service.cancel(self.requests[-1], room_id=ROOM, sender=sender))

    @rule(controller_meanwhile=st.booleans())
    def restart(self, controller_meanwhile: bool) -> None:
        """Stop and start the bot; meanwhile the controller may have finished a pending operation."""
        if controller_meanwhile and self.e.argo.obj().get("operation"):
            self.e.argo.controller_picks_up()
            self.e.argo.controller_finishes()
        self.run(self.e.close())
        self.run(self.e.open())
        # resume() may write again (recovery), and so die again: the next
        # restart recovers from that too.
        with contextlib.suppress(Crash):
            self.run(self.e.service.runner.resume())

    @rule(approver=st.sampled_from((BOB, CAROL)))
    def restart_with_catch_up(self, approver: str) -> None:
        """A restart whose catch-up sync's approval is being started while resume() (on_ready) runs."""
        self.run(self.e.close())
        self.run(self.e.open())
        reaction = self.new_reaction(approver, "✅", ROOM)

        async def both() -> None:
            self.e.argo.latency = 0.002
            try:
                handler = asyncio.create_task(self.deliver(reaction))
                while not handler.done() and await self.e.state(self.requests[-1]) == State.REQUESTED.value:
                    await asyncio.sleep(0.001)
                await self.e.service.runner.resume()
                await handler
            finally:
                self.e.argo.latency = 0.0

        with contextlib.suppress(Crash):
            self.run(both())

    @rule()
    def request_again(self) -> None:
        """A new !sync; refused while a request for the app is open or syncing."""
        with contextlib.suppress(UserError):
            self.requests.append(self.run(self.e.request()))

    @invariant()
    def never_more_than_one_sync(self) -> None:
        if self.env is None:
            return
        for approval_id in self.requests:
            started = self.e.argo.started_for(approval_id)
            assert started <= 1, f"{approval_id} started {started} times"
            state = self.run(self.e.state(approval_id))
            if state in STARTED_OR_LATER:
                assert started == 1, f"{approval_id} is {state} but no operation was written"
            if state in NEVER_STARTED:
                assert started == 0, f"{approval_id} is {state} but an operation was written"
            if state == State.ABORTED.value and started:
                # Only when the cluster could not tell whether the write landed
                # may the bot say "aborted" about a written operation, and then
                # it says so.
                outcome = self.run(self.e.record(approval_id)).outcome or {}
                assert "could not confirm" in outcome.get("message", ""), f"{approval_id}: {outcome}"


ApprovalInterleavings.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # No shrinking: every step does real SQLite I/O, and shrinking a failure
    # takes minutes; the unshrunk steps are printed and are readable enough.
    phases=[HypothesisPhase.explicit, HypothesisPhase.reuse, HypothesisPhase.generate],
)
test_any_interleaving_starts_at_most_one_sync = ApprovalInterleavings.TestCase
test_any_interleaving_starts_at_most_one_sync.__doc__ = (
    "Any interleaving of reactions, replays, redactions, faults and restarts "
    "writes at most one sync per request"
)
