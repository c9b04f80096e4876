"""The Velero relay: backup and restore outcomes, missed schedules and storage locations in the room.

``model`` reads the objects, ``outcomes`` decides (pure; schedules are read by ``config.cron``),
``service`` records and posts, ``feature`` wires the watches and the checks.
Nothing here imports the ``kubernetes`` client except ``feature``.
"""
