"""The Velero relay: backup and restore outcomes, missed schedules and storage locations in the room.

``model`` reads the objects, ``cron`` and ``outcomes`` decide (pure),
``service`` records and posts, ``feature`` wires the watches and the checks.
Nothing here imports the ``kubernetes`` client except ``feature``.
"""
