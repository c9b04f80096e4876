"""readybot: ChatOps for a small Kubernetes platform, from a Matrix room."""

import sys
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("readybot")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"


def _import_peewee_without_psycopg() -> None:
    """Import peewee once with psycopg hidden, so that nio does not load PostgreSQL's driver.

    matrix-nio's crypto store is built on peewee, and peewee imports psycopg at
    import time whenever it is installed (we install it for ``store.url``).
    That costs about 13 MiB of RSS in every bot, though nio's store is always
    SQLite. Hidden, peewee records "no psycopg 3"; our own store still imports
    psycopg normally when ``store.url`` asks for PostgreSQL.
    """
    if "peewee" in sys.modules or "psycopg" in sys.modules:
        return
    sys.modules["psycopg"] = None  # type: ignore[assignment]  # makes `import psycopg` raise ImportError
    try:
        import peewee  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:  # nio without its e2e extra has no peewee: nothing to do
        pass
    finally:
        del sys.modules["psycopg"]


_import_peewee_without_psycopg()
