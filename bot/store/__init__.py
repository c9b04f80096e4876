"""SQLite persistence: one file, one connection, one small repository per table."""

from bot.store.audit import AuditEntry, AuditRepo
from bot.store.database import Database
from bot.store.handled import HandledEvents
from bot.store.kv import KeyValueRepo
from bot.store.migrations import SchemaTooNewError

__all__ = [
    "AuditEntry",
    "AuditRepo",
    "Database",
    "HandledEvents",
    "KeyValueRepo",
    "SchemaTooNewError",
]
