"""The homeserver's per-user message limit, modelled so relays can fold before it bites.

Synapse lets a user send a burst (10 by default), then about 12 messages a
minute. The limit is per user, across every room and feature, so every relay
feeds the same model from what the outbox actually sent.
"""

from __future__ import annotations

from collections.abc import Iterable


class RateBudget:
    """A token bucket standing for the homeserver's per-user message limit.

    ``observe`` feeds it the times events were actually sent; ``delay`` says
    how long an event with ``ahead`` events queued before it would wait. A
    homeserver more generous than the model only makes the model fold
    earlier than needed, never lose anything: the bucket never goes below 0.
    """

    def __init__(self, burst: int, per_minute: float, now: float) -> None:
        self.burst = float(burst)
        self.rate = per_minute / 60.0
        self._level = self.burst
        self._at = now
        # The newest send time fed by ``observe_sent``: the ``since`` of the
        # next ``Outbox.send_load``.
        self.last_seen = 0.0

    def observe(self, sent_at: Iterable[float]) -> None:
        """Account for events sent at these times (oldest first; each after earlier observations)."""
        for moment in sent_at:
            self._level = max(0.0, self._refilled(moment) - 1.0)
            self._at = max(self._at, moment)

    def observe_sent(self, sent_at: list[float]) -> None:
        """Account for the outbox's send times (``Outbox.send_load(budget.last_seen, …)``), each once.

        Only times after the last one seen count: send_load's times may come
        back rounded (SQLite's JSON keeps 15 digits, ~10 µs at today's epoch),
        and a rounded-down time is returned again by "settled_at > since";
        observing it twice would spend a token the homeserver still has.
        """
        fresh = [t for t in sent_at if t > self.last_seen]
        if fresh:
            self.observe(fresh)
            self.last_seen = fresh[-1]

    def tokens(self, now: float) -> float:
        return self._refilled(now)

    def delay(self, ahead: int, now: float) -> float:
        """Seconds until the (ahead + 1)-th next event may be sent."""
        missing = ahead + 1 - self._refilled(now)
        return max(0.0, missing / self.rate)

    def _refilled(self, moment: float) -> float:
        return min(self.burst, self._level + max(0.0, moment - self._at) * self.rate)
