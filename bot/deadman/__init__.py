"""The dead-man's switch: Watchdog heartbeats in; an alarm in the room and elsewhere when they stop."""
