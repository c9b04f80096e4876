"""Test-only: hold the process at a named point, so a test can SIGKILL it exactly there.

``READYBOT_TEST_HOLD_AT=<point>[:<text>]`` (never set in a deployment): when
the code reaches ``hold_point(<point>, detail)`` and ``<text>`` is part of
``detail``, the process writes ``readybot test hook: holding at <point>`` to
stderr and stops there for good, its event loop blocked on purpose so that
nothing else moves; the test sees the line in the bot's output and kills it.
A kill at "the send reached the homeserver, its answer not recorded" then
lands there every time, whatever the machine's load, where a sleep would race.

Points:

- ``outbox.sent``: after the homeserver answered a send, before the row is
  recorded as sent; ``detail`` is the event's body.
- ``approvals.write``: an approved sync about to write its Argo CD
  ``operation`` (the fence checked, nothing written); ``detail`` is the
  approval id.
- ``approvals.written``: the API server accepted that write, the request not
  yet recorded as started; ``detail`` is the approval id.
"""

from __future__ import annotations

import os
import sys
import time

HOLD_ENV = "READYBOT_TEST_HOLD_AT"


def hold_point(point: str, detail: str = "") -> None:
    """Stop here for good if the test asked to (see the module's docstring); else return at once."""
    spec = os.environ.get(HOLD_ENV)
    if not spec:
        return
    name, _, text = spec.partition(":")
    if name != point or text not in detail:
        return
    sys.stderr.write(f"readybot test hook: holding at {point}\n")
    sys.stderr.flush()
    # Blocking on purpose: the whole process, event loop included, must stand
    # still at this point (an asyncio sleep would let other tasks run on).
    while True:  # the test's SIGKILL ends this
        time.sleep(3600)
