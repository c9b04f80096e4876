"""The store's schema: every migration, in the one order ``PRAGMA user_version`` counts.

Assembled here, by the composition root, so the store core
(``bot.store.migrations``) imports no capability: each capability keeps its
tables' migration next to its repository, and this list orders them.
Migration ``N`` is ``MIGRATIONS[N - 1]`` in every store ever written: append,
never edit or reorder (an existing state file must keep working).
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.alertmanager.store import migrate_alert_groups
from bot.approvals.store import migrate_approvals
from bot.deadman.store import migrate_heartbeats
from bot.drills.store import migrate_restore_drills
from bot.falco.store import migrate_falco
from bot.outbox.inflight import migrate_outbox_in_flight
from bot.outbox.media import migrate_outbox_media
from bot.readiness.store import migrate_readiness
from bot.store.leadership import migrate_leadership
from bot.store.migrations import Migration, v1_initial, v9_audit_sender_device
from bot.velero.store import migrate_velero

MIGRATIONS: Sequence[Migration] = (
    v1_initial,
    migrate_heartbeats,
    migrate_approvals,
    migrate_alert_groups,
    migrate_velero,
    migrate_falco,
    migrate_outbox_media,
    migrate_readiness,
    v9_audit_sender_device,
    migrate_restore_drills,
    migrate_outbox_in_flight,
    migrate_leadership,
)
