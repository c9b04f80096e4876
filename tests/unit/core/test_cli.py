"""The command line: check-config output and exit codes."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from bot import __version__
from bot.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, main

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "example.yaml"


def test_check_config_accepts_the_example(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shipped example validates (password from the environment) and exits 0."""
    monkeypatch.setenv("READYBOT_MATRIX__PASSWORD", "example-password-value")
    assert main(["check-config", "-c", str(EXAMPLE)]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("configuration OK")
    assert "example-password-value" not in out


def test_check_config_names_each_bad_field_and_exits_78(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken file prints one line per field path, never the values, and exits 78."""
    for name in list(os.environ):
        if name.startswith("READYBOT_"):
            monkeypatch.delenv(name)
    config = tmp_path / "bad.yaml"
    config.write_text(
        "matrix:\n"
        "  homeserver: not-a-url-SECRETISH\n"
        "  user_id: alice\n"
        "  password: hunter2-SECRETISH\n"
        "http:\n"
        "  port: 99999\n"
        "  colour: blue\n"
    )
    assert main(["check-config", "-c", str(config)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    lines = [line.strip() for line in err.splitlines()[1:]]
    assert any(line.startswith("matrix.homeserver: ") for line in lines)
    assert any(line.startswith("matrix.user_id: ") for line in lines)
    assert any(line.startswith("http.port: ") for line in lines)
    assert any(line.startswith("http.colour: unknown key") for line in lines)
    assert "SECRETISH" not in err


def test_version_flag_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`readybot --version` prints the package version and exits 0."""
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_no_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a subcommand the help is printed and the exit code is 2."""
    assert main([]) == 2
    assert "check-config" in capsys.readouterr().out


def _clear_readybot_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("READYBOT_"):
            monkeypatch.delenv(name)


def test_check_config_refuses_a_store_url_that_is_not_postgresql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """store.url that is not a postgresql:// URL exits 78 naming store.url, without the URL."""
    _clear_readybot_environ(monkeypatch)
    config = tmp_path / "bad.yaml"
    config.write_text(
        "matrix:\n"
        "  homeserver: https://matrix.example.org\n"
        '  user_id: "@bot:example.org"\n'
        "  password: pw\n"
        "store:\n"
        "  url: mysql://bot:hunter2-SECRETISH@db/readybot\n"
    )
    assert main(["check-config", "-c", str(config)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "store.url: " in err
    assert "SECRETISH" not in err


def test_run_with_postgresql_unreachable_exits_1_with_one_masked_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listening at store.url: exit 1, one error line with the password masked, no traceback."""
    _clear_readybot_environ(monkeypatch)
    # setup_logging replaces the root handlers; give them back to pytest afterwards.
    monkeypatch.setattr(logging.getLogger(), "handlers", list(logging.getLogger().handlers))
    monkeypatch.setattr(logging.getLogger(), "level", logging.getLogger().level)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    config = tmp_path / "pg.yaml"
    config.write_text(
        "matrix:\n"
        "  homeserver: http://127.0.0.1:9\n"
        '  user_id: "@bot:example.org"\n'
        "  password: pw\n"
        f"  store_dir: {tmp_path / 'crypto'}\n"
        "http:\n"
        "  port: 0\n"
        "store:\n"
        f"  path: {tmp_path / 'unused.sqlite3'}\n"
        f"  url: postgresql://readybot:hunter2-SECRETISH@127.0.0.1:{port}/readybot\n"
    )
    assert main(["run", "-c", str(config)]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "the store cannot be opened: cannot connect to postgresql://readybot:***@127.0.0.1:" in err
    assert "SECRETISH" not in err
    assert "Traceback" not in err
    assert not (tmp_path / "unused.sqlite3").exists()
