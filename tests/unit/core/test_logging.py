"""Log redaction: no configured secret reaches a log line."""

from __future__ import annotations

import logging

from bot.logging_setup import RedactingFormatter, mask_secret, setup_logging

SECRET = "syt_c2VjcmV0X3Rva2Vu_abcdef"


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError(f"boom with {SECRET}")
        except RuntimeError:
            import sys

            exc_info = sys.exc_info()
    return logging.LogRecord("t", logging.ERROR, __file__, 1, msg, args, exc_info)


def test_secret_in_message_and_args_is_masked() -> None:
    """A secret in the format string or its arguments is replaced by ***."""
    formatter = RedactingFormatter("%(message)s", [SECRET], as_json=False)
    line = formatter.format(_record("token=%s and " + SECRET, SECRET))
    assert SECRET not in line
    assert line.count("***") == 2


def test_secret_in_a_traceback_is_masked() -> None:
    """An exception whose text holds a secret is masked in the traceback too."""
    formatter = RedactingFormatter("%(message)s", [SECRET], as_json=False)
    line = formatter.format(_record("failed", exc=True))
    assert "RuntimeError" in line and SECRET not in line


def test_json_lines_are_masked_too() -> None:
    """The JSON format masks secrets as well."""
    formatter = RedactingFormatter(None, [SECRET], as_json=True)
    line = formatter.format(_record("x %s", SECRET))
    assert SECRET not in line and '"level": "ERROR"' in line


def test_a_secret_learnt_at_run_time_is_masked_from_then_on() -> None:
    """mask_secret() adds a token (e.g. the one login returns) to the installed formatter's mask."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        setup_logging("INFO", "text", [])
        formatter = root.handlers[0].formatter
        assert isinstance(formatter, RedactingFormatter)
        assert SECRET in formatter.format(_record("GET /sync?access_token=%s", SECRET))
        mask_secret(SECRET)
        line = formatter.format(_record("GET /sync?access_token=%s", SECRET))
        assert SECRET not in line and "access_token=***" in line
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
