"""The homeserver's per-user message limit, modelled so relays can fold before it bites.

Synapse lets a user send a burst (10 by default), then about 12 messages a
minute. The limit is per user, across every room and feature, so every relay
feeds the same model from what the outbox actually sent.
"""

from __future__ import annotations

from collections import deque
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

    def observe_sent(self, sent_at: list[float]) -> list[float]:
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
        return fresh

    def tokens(self, now: float) -> float:
        return self._refilled(now)

    def delay(self, ahead: int, now: float) -> float:
        """Seconds until the (ahead + 1)-th next event may be sent."""
        missing = ahead + 1 - self._refilled(now)
        return max(0.0, missing / self.rate)

    def _refilled(self, moment: float) -> float:
        return min(self.burst, self._level + max(0.0, moment - self._at) * self.rate)


class SendThroughput:
    """How fast the outbox is really sending, measured from its recent send times.

    A rate budget the operator raised (or a homeserver without limits) says
    nothing about how fast the queue drains: each send still takes a round
    trip. This measures sends per second over the last ``window_s`` and
    predicts how long an event with ``ahead`` events before it would wait.
    With fewer than ``min_sends`` sends in the window (idle, or a trickle)
    there is no measurement yet and ``prior_rate`` stands in for it: a burst
    arriving at a quiet outbox queues hundreds of events before the first
    eight are sent, and must not all be let through unmeasured.
    """

    def __init__(self, window_s: float = 10.0, min_sends: int = 8, prior_rate: float = 10.0) -> None:
        self.window_s = window_s
        self.min_sends = min_sends
        self.prior_rate = prior_rate
        self._times: deque[float] = deque()

    def observe(self, sent_at: Iterable[float]) -> None:
        """Account for events sent at these times (oldest first, each once)."""
        self._times.extend(sent_at)

    def measured(self, now: float) -> float | None:
        """Sends per second over the window, or None without enough sends to tell."""
        times = self._times
        while times and times[0] < now - self.window_s:
            times.popleft()
        if len(times) < self.min_sends:
            return None
        span = max(times[-1] - times[0], 1e-3)
        return (len(times) - 1) / span

    def rate(self, now: float) -> float:
        """The measured rate, or ``prior_rate`` while there is no measurement."""
        measured = self.measured(now)
        return self.prior_rate if measured is None else measured

    def wait(self, ahead: int, now: float) -> float:
        """Seconds until the (ahead + 1)-th next event is sent at that rate."""
        return (ahead + 1) / self.rate(now)
