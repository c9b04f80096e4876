"""Restore drills: prove that backups restore, on demand (approved like a sync) and on a schedule.

A capability above Velero and the approval gates: it chooses a Velero backup
(``bot.velero.model``), asks for approval through ``bot.approvals`` (a request
of kind ``restore-drill``), then writes one Restore into scratch namespaces,
follows it, reports and cleans up. Readiness reads its last passed drill.
"""
