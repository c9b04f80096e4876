"""Relays: turn what a source sends (Alertmanager, falcosidekick, Velero) into room messages.

Pure logic as far as possible: state in, decisions out. The I/O (HTTP,
store, outbox) lives with the feature that wires a relay.
"""
