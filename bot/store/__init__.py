"""Persistence: one SQLite file or one PostgreSQL database, one connection, one small repository per table."""

from bot.store.audit import AuditEntry, AuditRepo
from bot.store.database import Database
from bot.store.handled import HandledEvents
from bot.store.kv import KeyValueRepo
from bot.store.migrations import SchemaTooNewError
from bot.store.tx import Row, Tx

__all__ = [
    "AuditEntry",
    "AuditRepo",
    "Database",
    "HandledEvents",
    "KeyValueRepo",
    "Row",
    "SchemaTooNewError",
    "Tx",
]
