"""Alertmanager: its API (silences, alerts) and the tools built on it."""
