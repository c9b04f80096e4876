"""The approval state machine: states, allowed transitions and pure decisions.

Nothing here does I/O. The service reads a request inside a transaction,
asks these functions what a reaction, redaction, cancel or tick means, and
applies the answer with a compare-and-set ``UPDATE … WHERE state = ?``.

::

    requested ──✅ enough──▶ approved ──operation written──▶ started ──▶ succeeded
        │                      │                                 ├──▶ failed
        ├──❌──▶ rejected       ├──target moved──▶ revision_moved └──▶ error
        ├──time──▶ expired      └──check refused──▶ aborted
        └──!cancel──▶ cancelled

Only the task whose ``requested → approved`` update succeeds may write the
sync operation, which is what makes a sync start at most once per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

APPROVE_KEY = "✅"
REJECT_KEY = "❌"
# Emoji pickers add VARIATION SELECTOR-16 to some emoji ("✅️"); it is
# presentation only and must not make an approval look like another key.
_VARIATION_SELECTORS = str.maketrans("", "", "\ufe0e\ufe0f")


class State(StrEnum):
    REQUESTED = "requested"
    # Enough approvals; the winner of this transition is starting the sync.
    APPROVED = "approved"
    # The operation is written to the Application; followed to its end.
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ERROR = "error"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    # The target revision (or the app's source) changed after the prompt: not synced.
    REVISION_MOVED = "revision_moved"
    # Approved, but a check before writing refused (operation running,
    # automated sync turned on, cluster unreachable, …): not synced.
    ABORTED = "aborted"


ACTIVE_STATES = frozenset({State.REQUESTED, State.APPROVED, State.STARTED})
TERMINAL_STATES = frozenset(State) - ACTIVE_STATES

TRANSITIONS: dict[State, frozenset[State]] = {
    State.REQUESTED: frozenset({State.APPROVED, State.REJECTED, State.EXPIRED, State.CANCELLED}),
    State.APPROVED: frozenset({State.STARTED, State.REVISION_MOVED, State.ABORTED}),
    State.STARTED: frozenset({State.SUCCEEDED, State.FAILED, State.ERROR}),
}


def can_transition(source: State, target: State) -> bool:
    return target in TRANSITIONS.get(source, frozenset())


class Effect(StrEnum):
    """What a reaction did to its request."""

    APPROVE = "approve"
    REJECT = "reject"
    IGNORED = "ignored"


class Ignored(StrEnum):
    """Why a reaction changed nothing (recorded with the vote and in the audit log)."""

    OTHER_ROOM = "other-room"
    OTHER_KEY = "other-key"
    NOT_OPEN = "not-open"
    EXPIRED = "expired"
    OWN_REQUEST = "own-request"
    NOT_AUTHORISED = "not-authorised"
    # Its redaction was seen before the reaction itself.
    REDACTED = "redacted"
    # The gate needs `!approve` from a device its sender cross-signed; a
    # reaction (sent unencrypted by Element) or an unverified device proves none.
    DEVICE_NOT_CROSS_SIGNED = "device-not-cross-signed"


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the decisions need to know about a request."""

    state: State
    room_id: str
    requester: str
    expires_at: float
    four_eyes: bool


@dataclass(frozen=True, slots=True)
class ReactionFacts:
    room_id: str
    sender: str
    key: str
    # The homeserver's timestamp of the reaction: a reaction made while the
    # bot was down counts if it was made before the request expired.
    sent_at: float
    sender_is_approver: bool
    # False when the gate requires a cross-signed device and this vote came
    # without one (every reaction, for such a gate).
    device_ok: bool = True


@dataclass(frozen=True, slots=True)
class ReactionDecision:
    effect: Effect
    reason: Ignored | None = None


def normalize_key(key: str) -> str:
    return key.translate(_VARIATION_SELECTORS).strip()


def decide_reaction(request: RequestFacts, reaction: ReactionFacts) -> ReactionDecision:  # noqa: PLR0911 - one per rule
    """Whether a reaction approves, rejects, or changes nothing (and why)."""
    key = normalize_key(reaction.key)
    if reaction.room_id != request.room_id:
        return ReactionDecision(Effect.IGNORED, Ignored.OTHER_ROOM)
    if key not in (APPROVE_KEY, REJECT_KEY):
        return ReactionDecision(Effect.IGNORED, Ignored.OTHER_KEY)
    if request.state is not State.REQUESTED:
        return ReactionDecision(Effect.IGNORED, Ignored.NOT_OPEN)
    if reaction.sent_at > request.expires_at:
        return ReactionDecision(Effect.IGNORED, Ignored.EXPIRED)
    is_requester = reaction.sender == request.requester
    if key == REJECT_KEY:
        if is_requester or reaction.sender_is_approver:
            return ReactionDecision(Effect.REJECT)
        return ReactionDecision(Effect.IGNORED, Ignored.NOT_AUTHORISED)
    if is_requester and request.four_eyes:
        return ReactionDecision(Effect.IGNORED, Ignored.OWN_REQUEST)
    if not reaction.sender_is_approver:
        return ReactionDecision(Effect.IGNORED, Ignored.NOT_AUTHORISED)
    if not reaction.device_ok:
        # Only approving is gated on the device: a rejection never writes to
        # the cluster, so it is never the way a stolen token does harm.
        return ReactionDecision(Effect.IGNORED, Ignored.DEVICE_NOT_CROSS_SIGNED)
    return ReactionDecision(Effect.APPROVE)


def approved_enough(approvers: set[str] | frozenset[str], required: int) -> bool:
    """Distinct approvers, so one person reacting twice counts once."""
    return len(approvers) >= required


def withdrawal_counts(state: State, effect: Effect) -> bool:
    """A redacted ✅ stops counting only while the request is still open."""
    return state is State.REQUESTED and effect is Effect.APPROVE


def is_due_for_expiry(state: State, expires_at: float, now: float) -> bool:
    return state is State.REQUESTED and now > expires_at


@dataclass(frozen=True, slots=True)
class CancelDecision:
    allowed: bool
    reason: str = ""


def decide_cancel(
    state: State,
    sender_is_requester: bool,
    sender_is_approver: bool,
    started: str = "the sync has already started; stop it in Argo CD if you must",
) -> CancelDecision:
    """Requester or approver may withdraw a request that is still waiting for approval."""
    if not (sender_is_requester or sender_is_approver):
        return CancelDecision(False, "only the requester or an approver may cancel it")
    if state is State.REQUESTED:
        return CancelDecision(True)
    if state in (State.APPROVED, State.STARTED):
        return CancelDecision(False, started)
    return CancelDecision(False, f"it is already {state.value.replace('_', ' ')}")
