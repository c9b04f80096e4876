"""The command line: check-config output and exit codes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot import __version__
from bot.cli import EXIT_CONFIG, EXIT_OK, main

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
