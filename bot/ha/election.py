"""Leader election decisions, without I/O: what to write to the Lease, and when to step down.

Follows client-go's ``leaderelection`` package in what it decides, with one
rule kept strictly: a Lease held by another replica is judged expired by our
own monotonic clock, counted from when we last saw its record change, never
by comparing that replica's ``renewTime`` with our wall clock (the two
machines' clocks may disagree by more than the lease).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class LeaseRecord:
    """The Lease's spec as the election reads and writes it (``V1LeaseSpec``)."""

    holder: str  # "" when released
    duration_s: int
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int


@dataclass(frozen=True)
class Observed:
    """The Lease as last read, its resourceVersion, and when (monotonic) its record last changed."""

    record: LeaseRecord
    resource_version: str
    changed_at: float


def observe(previous: Observed | None, record: LeaseRecord, resource_version: str, now: float) -> Observed:
    """Remember a read; the change time moves only when the record changed since the last read.

    An unchanged record keeps its old change time, so a holder that stopped
    renewing expires ``duration`` after we first saw its last renewal.
    """
    if previous is not None and previous.record == record:
        return dataclasses.replace(previous, resource_version=resource_version)
    return Observed(record, resource_version, now)


class Verb(enum.Enum):
    CREATE = "create"  # no Lease yet: create it, held by us
    TAKE = "take"  # released or expired: replace it (conditionally), held by us, a new term
    RENEW = "renew"  # ours, in this term: replace it with a new renewTime
    WAIT = "wait"  # another replica holds it and it has not expired


@dataclass(frozen=True)
class Decision:
    verb: Verb
    # What to write (CREATE, TAKE, RENEW); None for WAIT.
    record: LeaseRecord | None = None


@dataclass(frozen=True)
class Term:
    """One leadership term of this process: its fencing token is the Lease's transitions at acquisition."""

    token: int
    acquired_at: datetime


def decide(
    *,
    identity: str,
    duration_s: int,
    observed: Observed | None,
    term: Term | None,
    now: float,
    wall_now: datetime,
    floor: int,
) -> Decision:
    """What this replica does with the Lease now.

    ``observed``: the Lease as just read (None: there is none). ``term``: our
    current term, if this process leads. ``floor``: the largest fencing token
    the store has seen; a new term's token is always above it, so a Lease
    that was deleted and recreated cannot hand out an old token again.
    ``now`` is monotonic (expiry), ``wall_now`` only goes into the record.
    """
    if observed is None:
        token = floor + 1
        return Decision(Verb.CREATE, LeaseRecord(identity, duration_s, wall_now, wall_now, token))
    current = observed.record
    if term is not None and current.holder == identity and current.transitions == term.token:
        return Decision(Verb.RENEW, dataclasses.replace(current, duration_s=duration_s, renew_time=wall_now))
    # Ours from an earlier process of the same name (a restarted pod keeps its
    # name), released, or expired: a new term, with a new token. An earlier
    # process of ours counts as another replica: it may still be paused, not
    # dead, so its lease must expire first, like anyone's.
    expired = now - observed.changed_at >= max(current.duration_s, 1)
    if current.holder and not expired:
        return Decision(Verb.WAIT)
    token = max(current.transitions, floor) + 1
    return Decision(Verb.TAKE, LeaseRecord(identity, duration_s, wall_now, wall_now, token))


def must_step_down(*, last_renewed: float, now: float, renew_deadline_s: float) -> bool:
    """A leader that could not renew within the deadline stops acting, before others may take the Lease."""
    return now - last_renewed >= renew_deadline_s


def still_ours(observed: Observed, *, identity: str, term: Term) -> bool:
    """Whether the Lease as read still belongs to this term (another holder or a new term: it does not)."""
    return observed.record.holder == identity and observed.record.transitions == term.token


def released(record: LeaseRecord) -> LeaseRecord:
    """The record a leader writes when it steps down cleanly: no holder, so a standby takes it at once."""
    return dataclasses.replace(record, holder="", duration_s=1)
