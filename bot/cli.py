"""``readybot run | check-config | readiness | demo``, with exit codes an operator can act on.

Exit codes: 0 clean stop; 1 the bot failed at run time (a root task died);
2 bad command line; 69 Synapse missing for the demo; 77 the homeserver
refused the bot's credentials; 75 this replica lost the lead (``ha.enabled``:
Kubernetes restarts it as a standby); 78 the configuration is invalid
(EX_CONFIG), or the store is newer than this version of the bot.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from bot import __version__
from bot.errors import ConfigError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69
EXIT_NOPERM = 77
EXIT_CONFIG = 78
# ha.enabled: this replica lost the lead (EX_TEMPFAIL: run again, as a standby).
EXIT_LOST_LEAD = 75

log = logging.getLogger("readybot")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    handlers: dict[str, Callable[[], int]] = {
        "check-config": lambda: _check_config(args.config),
        "run": lambda: _run(args.config),
        "demo": lambda: _demo(args.workdir, outage=args.outage, pace=args.tour_pace),
        "readiness": lambda: _readiness(args),
        "copy-store": lambda: _copy_store(args.config),
    }
    if args.command in handlers:
        return handlers[args.command]()
    return EXIT_USAGE  # pragma: no cover - argparse refuses other values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="readybot", description="ChatOps for Kubernetes, from Matrix.")
    parser.add_argument("--version", action="version", version=f"readybot {__version__}")
    sub = parser.add_subparsers(dest="command")
    default_config = os.environ.get("READYBOT_CONFIG")
    for name, text in (
        ("run", "run the bot"),
        ("check-config", "validate the configuration and exit"),
        ("readiness", "print the production-readiness scorecard; exit 1 if a criterion fails"),
        (
            "copy-store",
            "copy the SQLite store (store.path) into a new PostgreSQL store (store.url); bot stopped",
        ),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument(
            "-c",
            "--config",
            type=Path,
            default=Path(default_config) if default_config else None,
            help="YAML configuration file (default: $READYBOT_CONFIG)",
        )
    readiness = sub.choices["readiness"]
    readiness.add_argument("target", nargs="?", help="a category, phase, step or criterion: its details")
    readiness.add_argument("--json", action="store_true", help="the whole scorecard as JSON")
    readiness.add_argument("--strict", action="store_true", help="exit 1 also when a criterion is unknown")
    demo = sub.add_parser("demo", help="start a throwaway Synapse and run the bot against it")
    demo.add_argument("--workdir", type=Path, default=None, help="keep the demo's state here")
    demo.add_argument(
        "--outage",
        action="store_true",
        help="stop the Watchdog after a while: see the dead-man's switch alarm and the second channel",
    )
    # For the tests: the tour's delays times this factor (0.1: the alert resolves after 6.5 s).
    demo.add_argument("--tour-pace", type=float, default=1.0, help=argparse.SUPPRESS)
    return parser


def _check_config(config: Path | None) -> int:
    from config.loading import load_settings

    try:
        settings = load_settings(config)
    except ConfigError as error:
        _print_problems(error)
        return EXIT_CONFIG
    if settings.readiness.enabled:
        from config.readiness_plan import load_plan

        try:
            load_plan(settings.readiness.plan_path)
        except ConfigError as error:
            _print_problems(error)
            return EXIT_CONFIG
    rooms = len(settings.matrix.rooms)
    print(
        f"configuration OK: {settings.matrix.user_id} on {settings.matrix.homeserver}, "
        f"{rooms} room(s), encryption {'on' if settings.matrix.encryption else 'off'}"
    )
    return EXIT_OK


def _copy_store(config: Path | None) -> int:
    from bot.errors import StoreUnavailableError
    from bot.schema import MIGRATIONS
    from bot.store.copy import StoreCopyError, copy_sqlite_to_postgres
    from bot.store.migrations import SchemaTooNewError
    from bot.store.postgres import mask_url
    from config.loading import load_settings

    try:
        settings = load_settings(config)
    except ConfigError as error:
        _print_problems(error)
        return EXIT_CONFIG
    store = settings.store
    if store.url is None:
        print("copy-store: store.url is not set: it names the PostgreSQL store to copy into", file=sys.stderr)
        return EXIT_CONFIG
    url = store.url.get_secret_value()
    try:
        copied = asyncio.run(copy_sqlite_to_postgres(store.path, url, MIGRATIONS))
    except (StoreCopyError, SchemaTooNewError) as error:
        print(f"copy-store: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except StoreUnavailableError as error:
        print(f"copy-store: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    rows = sum(copied.values())
    print(f"copied {rows} rows in {len(copied)} tables from {store.path} to {mask_url(url)}")
    return EXIT_OK


def _print_problems(error: ConfigError) -> None:
    print("configuration invalid:", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)


def _run(config: Path | None) -> int:
    from bot.app import ReadyBot
    from bot.errors import StoreUnavailableError
    from bot.logging_setup import setup_logging
    from bot.matrix.connection import LoginRefused
    from bot.store.leadership import LeadershipLost
    from bot.store.migrations import SchemaTooNewError
    from config.loading import load_settings

    try:
        settings = load_settings(config)
    except ConfigError as error:
        _print_problems(error)
        return EXIT_CONFIG
    setup_logging(settings.logging.level, settings.logging.format, settings.secret_values())

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await ReadyBot(settings).run(stop)

    code = EXIT_OK
    try:
        asyncio.run(serve())
    except* LoginRefused as group:
        log.error("the homeserver refused the bot's credentials (%s)", group.exceptions[0])
        code = EXIT_NOPERM
    except* LeadershipLost as group:
        # Restarted by Kubernetes as a standby, with nothing in memory from this term.
        log.warning("exiting: %s", group.exceptions[0])
        code = EXIT_LOST_LEAD
    except* SchemaTooNewError as group:
        log.error("%s", group.exceptions[0])
        code = EXIT_CONFIG
    except* StoreUnavailableError as group:
        # PostgreSQL unreachable at start-up (the message masks the password):
        # exit non-zero and let Kubernetes restart the pod; no stack trace.
        log.error("the store cannot be opened: %s", group.exceptions[0])
        code = EXIT_FAILURE
    except* ConfigError as group:
        # A feature found its configuration unusable at start-up (e.g. no kubeconfig).
        for refused in group.exceptions:
            for problem in getattr(refused, "problems", [str(refused)]):
                log.error("invalid configuration: %s", problem)
        code = EXIT_CONFIG
    except* Exception:
        log.exception("readybot stopped on an error")
        code = EXIT_FAILURE
    return code


def _readiness(args: argparse.Namespace) -> int:
    """The scorecard in the terminal (exit codes: bot.readiness.cli)."""
    from bot.readiness.cli import run

    return run(args.config, as_json=args.json, strict=args.strict, target=args.target)


def _demo(workdir: Path | None, *, outage: bool, pace: float) -> int:
    from bot.demo.run import run_demo
    from bot.demo.tour import TourTiming
    from bot.logging_setup import setup_logging

    setup_logging("INFO", "text", [])
    # The demo's terminal shows the banner and the tour: not every scheduler tick.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)

    async def demo() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run_demo(workdir, stop=stop, outage=outage, timing=TourTiming(pace=max(pace, 0.01)))

    return asyncio.run(demo())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
