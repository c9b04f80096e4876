"""Configuration loading: layers, precedence, unknown keys and safe error lines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr, ValidationError, field_validator

from bot.errors import ConfigError
from config.loading import format_problems, load_settings, problems_from_validation_error
from config.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "example.yaml"
# Distinctive values, so "not in the output" cannot pass by accident.
SECRET = "hunter2-S3cr3t-Zq9xV7"
TOKEN = "tok-Alertmanager-W4k8pR"

MINIMAL = """\
matrix:
  homeserver: https://matrix.example.org
  user_id: "@bot:example.org"
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(
    path: Path | None,
    environ: dict[str, str] | None = None,
    secrets_dir: Path | None = None,
) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ or {}, secrets_dir=secrets_dir)
    return caught.value.problems


def secrets(tmp_path: Path, files: dict[str, str]) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir()
    for name, content in files.items():
        (directory / name).write_text(content, encoding="utf-8")
    return directory


# --- the example file -----------------------------------------------------


def test_example_yaml_loads_with_password_from_environ() -> None:
    """config/example.yaml is valid once the password comes from the environment."""
    settings = load_settings(EXAMPLE, environ={"READYBOT_MATRIX__PASSWORD": SECRET})
    assert settings.matrix.password is not None
    assert settings.matrix.password.get_secret_value() == SECRET
    assert settings.matrix.rooms == ["!AbCdEfGhIjKlMnOpQr:example.org", "#ops:example.org"]
    assert settings.matrix.invite_from
    assert settings.permissions.rule_for("ping").users == []
    assert settings.permissions.rule_for("ping").min_power_level is None
    assert settings.permissions.rule_for("help").min_power_level is None
    sync = settings.permissions.rule_for("sync")
    assert sync.users
    assert sync.min_power_level == 100


def test_example_yaml_holds_no_credential() -> None:
    """Without a credential from outside, the example is refused: it holds no secret itself."""
    assert any(line.startswith("matrix: set exactly one of") for line in problems_of(EXAMPLE))


def test_example_yaml_shows_every_key() -> None:
    """Every settings key appears in example.yaml, set or commented out."""
    text = EXAMPLE.read_text(encoding="utf-8")
    missing = [
        f"{section}.{key}"
        for section, field in Settings.model_fields.items()
        for key in _model_of(field.annotation).model_fields
        if f"{key}:" not in text
    ]
    assert missing == []


def _model_of(annotation: object) -> type[BaseModel]:
    assert isinstance(annotation, type)
    assert issubclass(annotation, BaseModel)
    return annotation


# --- layers and precedence ------------------------------------------------


def test_environment_overrides_yaml_per_nested_key(tmp_path: Path) -> None:
    """READYBOT_HTTP__PORT replaces http.port from the file and keeps the other http keys."""
    path = write(tmp_path, MINIMAL + "  password: from-file\nhttp:\n  host: 0.0.0.0\n  port: 8000\n")
    settings = load_settings(path, environ={"READYBOT_HTTP__PORT": "9000"})
    assert settings.http.port == 9000
    assert settings.http.host == "0.0.0.0"


def test_environment_names_are_case_insensitive_and_take_json_for_lists(tmp_path: Path) -> None:
    """readybot_matrix__rooms (any case) sets matrix.rooms from a JSON list."""
    path = write(tmp_path, MINIMAL)
    settings = load_settings(
        path,
        environ={"readybot_Matrix__Rooms": '["!a:example.org"]', "READYBOT_MATRIX__PASSWORD": SECRET},
    )
    assert settings.matrix.rooms == ["!a:example.org"]


def test_environment_sets_keys_inside_mappings(tmp_path: Path) -> None:
    """A per-command rule can be set key by key: permissions.commands.<name>.<key>."""
    environ = {
        "READYBOT_MATRIX__PASSWORD": SECRET,
        "READYBOT_PERMISSIONS__COMMANDS__SYNC__MIN_POWER_LEVEL": "75",
    }
    settings = load_settings(write(tmp_path, MINIMAL), environ=environ)
    assert settings.permissions.rule_for("sync").min_power_level == 75


def test_finer_variable_wins_over_whole_json_value(tmp_path: Path) -> None:
    """READYBOT_HTTP__HOOK_TOKENS__A overrides key a of a JSON READYBOT_HTTP__HOOK_TOKENS."""
    environ = {
        "READYBOT_MATRIX__PASSWORD": SECRET,
        "READYBOT_HTTP__HOOK_TOKENS__A": "fine",
        "READYBOT_HTTP__HOOK_TOKENS": '{"a": "coarse", "b": "other"}',
    }
    tokens = load_settings(write(tmp_path, MINIMAL), environ=environ).http.hook_tokens
    assert {name: token.get_secret_value() for name, token in tokens.items()} == {"a": "fine", "b": "other"}


def test_secret_files_override_environment(tmp_path: Path) -> None:
    """The secret file matrix__password beats READYBOT_MATRIX__PASSWORD; its final newline is dropped."""
    directory = secrets(tmp_path, {"matrix__password": SECRET + "\n"})
    settings = load_settings(
        write(tmp_path, MINIMAL), environ={"READYBOT_MATRIX__PASSWORD": "from-env"}, secrets_dir=directory
    )
    assert settings.matrix.password is not None
    assert settings.matrix.password.get_secret_value() == SECRET


def test_secret_files_set_hook_tokens(tmp_path: Path) -> None:
    """http__hook_tokens__alertmanager becomes hook_tokens["alertmanager"], over the environment's."""
    directory = secrets(tmp_path, {"matrix__password": SECRET, "http__hook_tokens__alertmanager": TOKEN})
    environ = {
        "READYBOT_HTTP__HOOK_TOKENS__ALERTMANAGER": "from-env",
        "READYBOT_HTTP__HOOK_TOKENS__FALCO": "f",
    }
    settings = load_settings(write(tmp_path, MINIMAL), environ=environ, secrets_dir=directory)
    tokens = {name: token.get_secret_value() for name, token in settings.http.hook_tokens.items()}
    assert tokens == {"alertmanager": TOKEN, "falco": "f"}


def test_secrets_dir_comes_from_environment(tmp_path: Path) -> None:
    """Without the argument, READYBOT_SECRETS_DIR names the directory (and is not itself a setting)."""
    directory = secrets(tmp_path, {"matrix__access_token": TOKEN})
    settings = load_settings(write(tmp_path, MINIMAL), environ={"READYBOT_SECRETS_DIR": str(directory)})
    assert settings.matrix.access_token is not None
    assert settings.matrix.access_token.get_secret_value() == TOKEN


def test_kubernetes_secret_layout_is_understood(tmp_path: Path) -> None:
    """A mounted Secret works: dotfiles and ..data / ..<timestamp> dirs skipped, symlinks followed."""
    directory = tmp_path / "secrets"
    stamp = directory / "..2024_01_01_00_00_00.000000001"
    stamp.mkdir(parents=True)
    (stamp / "matrix__password").write_text(SECRET, encoding="utf-8")
    (directory / "..data").symlink_to(stamp.name)
    (directory / "matrix__password").symlink_to(Path("..data") / "matrix__password")
    (directory / ".hidden").write_text("not a key", encoding="utf-8")
    settings = load_settings(write(tmp_path, MINIMAL), environ={}, secrets_dir=directory)
    assert settings.matrix.password is not None
    assert settings.matrix.password.get_secret_value() == SECRET


def test_missing_secrets_dir_is_reported(tmp_path: Path) -> None:
    """A secrets directory that does not exist is an error, not silently no secrets."""
    missing = tmp_path / "nope"
    problems = problems_of(write(tmp_path, MINIMAL + "  password: x\n"), secrets_dir=missing)
    assert problems == [f"config: secrets directory not found: {missing}"]


def test_no_file_builds_from_environment_alone() -> None:
    """With path=None the environment alone can configure the bot."""
    environ = {
        "READYBOT_MATRIX__HOMESERVER": "https://matrix.example.org",
        "READYBOT_MATRIX__USER_ID": "@bot:example.org",
        "READYBOT_MATRIX__ACCESS_TOKEN": TOKEN,
    }
    settings = load_settings(None, environ=environ)
    assert str(settings.matrix.homeserver) == "https://matrix.example.org/"


def test_other_environment_variables_are_ignored(tmp_path: Path) -> None:
    """Only READYBOT_* variables are read: PATH, HOME etc. are not unknown keys."""
    environ = {"PATH": "/usr/bin", "HOME": "/root", "MATRIX__PASSWORD": "x", "READYBOT_MATRIX__PASSWORD": "p"}
    assert load_settings(write(tmp_path, MINIMAL), environ=environ).matrix.password is not None


def test_environ_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without environ=, os.environ is read."""
    monkeypatch.setenv("READYBOT_MATRIX__PASSWORD", SECRET)
    assert os.environ["READYBOT_MATRIX__PASSWORD"] == SECRET
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.matrix.password is not None


def test_commented_out_section_means_defaults(tmp_path: Path) -> None:
    """A section header with every key commented out ("http:" alone) gives the defaults."""
    settings = load_settings(write(tmp_path, MINIMAL + "  password: x\nhttp:\n  # port: 1\n"), environ={})
    assert settings.http.port == 8080


def test_yaml_anchor_shared_by_two_rules_is_overridden_for_one_only(tmp_path: Path) -> None:
    """An override of a key under a YAML alias changes that path only, not every alias of the anchor."""
    text = MINIMAL + (
        "  password: x\n"
        "permissions:\n  default: &rule\n    min_power_level: 50\n  commands:\n    sync: *rule\n"
    )
    environ = {"READYBOT_PERMISSIONS__COMMANDS__SYNC__MIN_POWER_LEVEL": "100"}
    settings = load_settings(write(tmp_path, text), environ=environ)
    assert settings.permissions.rule_for("sync").min_power_level == 100
    assert settings.permissions.default.min_power_level == 50


# --- unknown keys ---------------------------------------------------------


def test_unknown_key_in_yaml_is_named_with_its_path(tmp_path: Path) -> None:
    """A typo in the file is "matrix.pasword: unknown key"."""
    problems = problems_of(write(tmp_path, MINIMAL + "  pasword: x\n  access_token: t\n"))
    assert problems == ["matrix.pasword: unknown key"]


def test_unknown_section_in_yaml(tmp_path: Path) -> None:
    """An unknown top-level section is reported by its name."""
    problems = problems_of(write(tmp_path, MINIMAL + "  access_token: t\nhtpp:\n  port: 1\n"))
    assert problems == ["htpp: unknown key"]


def test_unknown_key_in_environment_names_path_and_variable(tmp_path: Path) -> None:
    """READYBOT_MATRIX__PASWORD is an error naming matrix.pasword and the variable."""
    environ = {"READYBOT_MATRIX__PASSWORD": "p", "READYBOT_MATRIX__PASWORD": "p"}
    problems = problems_of(write(tmp_path, MINIMAL), environ)
    assert problems == ["matrix.pasword: unknown key (from READYBOT_MATRIX__PASWORD)"]


def test_single_underscore_variable_is_an_unknown_key(tmp_path: Path) -> None:
    """READYBOT_MATRIX_PASSWORD (one underscore) is refused with a hint, not silently ignored."""
    problems = problems_of(
        write(tmp_path, MINIMAL + "  access_token: t\n"), {"READYBOT_MATRIX_PASSWORD": "p"}
    )
    assert len(problems) == 1
    assert problems[0].startswith("matrix_password: unknown key; separate the section and the key with __")


def test_unknown_key_in_secret_file(tmp_path: Path) -> None:
    """A secret file matrix__pasword is an error naming matrix.pasword and the file."""
    directory = secrets(tmp_path, {"matrix__password": "p", "matrix__pasword": SECRET})
    problems = problems_of(write(tmp_path, MINIMAL), secrets_dir=directory)
    assert problems == [f"matrix.pasword: unknown key (from secret file {directory / 'matrix__pasword'})"]


def test_key_below_a_scalar_is_unknown(tmp_path: Path) -> None:
    """READYBOT_HTTP__PORT__X cannot name anything: port is a number."""
    problems = problems_of(write(tmp_path, MINIMAL + "  password: p\n"), {"READYBOT_HTTP__PORT__X": "1"})
    assert problems == ["http.port.x: unknown key (from READYBOT_HTTP__PORT__X)"]


def test_same_key_twice_in_environment_is_refused(tmp_path: Path) -> None:
    """Two spellings of one variable are refused: which one wins would be arbitrary."""
    environ = {"READYBOT_MATRIX__PASSWORD": "a", "readybot_matrix__password": "b"}
    problems = problems_of(write(tmp_path, MINIMAL), environ)
    assert "matrix.password: set more than once (READYBOT_MATRIX__PASSWORD, readybot_matrix__password)" in (
        problems
    )


# --- bad values -----------------------------------------------------------


def test_bad_values_name_the_field_without_the_value(tmp_path: Path) -> None:
    """Each bad value gives "section.key: message", and no line contains the value."""
    text = MINIMAL.replace("https://matrix.example.org", SECRET) + f"  password: p\nhttp:\n  port: {SECRET}\n"
    environ = {"READYBOT_MATRIX__USER_ID": SECRET, "READYBOT_LOGGING__LEVEL": SECRET}
    problems = problems_of(write(tmp_path, text), environ)
    fields = sorted(line.split(":", 1)[0] for line in problems)
    assert fields == ["http.port", "logging.level", "matrix.homeserver", "matrix.user_id"]
    for line in problems:
        assert SECRET not in line
        assert "input_value" not in line
        assert "[type=" not in line
    assert "http.port: Input should be a valid integer, unable to parse string as an integer" in problems


def test_out_of_range_value(tmp_path: Path) -> None:
    """http.port above 65535 is reported with pydantic's bound, and says which variable set it."""
    problems = problems_of(write(tmp_path, MINIMAL + "  password: p\n"), {"READYBOT_HTTP__PORT": "70000"})
    assert problems == ["http.port: Input should be less than or equal to 65535 (from READYBOT_HTTP__PORT)"]


def test_invalid_json_for_a_list_is_reported_without_its_text(tmp_path: Path) -> None:
    """A list variable that is not JSON is reported by path, without echoing the text."""
    environ = {"READYBOT_MATRIX__PASSWORD": "p", "READYBOT_HTTP__HOOK_TOKENS": "{" + SECRET}
    problems = problems_of(write(tmp_path, MINIMAL), environ)
    assert len(problems) == 1
    assert problems[0].startswith("http.hook_tokens: not valid JSON")
    assert SECRET not in problems[0]


def test_missing_required_field(tmp_path: Path) -> None:
    """A missing matrix.user_id is "matrix.user_id: Field required"."""
    text = "matrix:\n  homeserver: https://matrix.example.org\n  password: p\n"
    assert problems_of(write(tmp_path, text)) == ["matrix.user_id: Field required"]


def test_validator_echoing_its_input_is_redacted() -> None:
    """A validator message quoting the input value has the value blanked out."""

    class Echo(BaseModel):
        token: str

        @field_validator("token")
        @classmethod
        def _refuse(cls, value: str) -> str:
            raise ValueError(f"{value} is not allowed")

    with pytest.raises(ValidationError) as caught:
        Echo.model_validate({"token": SECRET})
    assert problems_from_validation_error(caught.value) == ["token: <value> is not allowed"]


@pytest.mark.parametrize(
    "credentials",
    [pytest.param("", id="neither"), pytest.param("  password: p\n  access_token: t\n", id="both")],
)
def test_credentials_exactly_one(tmp_path: Path, credentials: str) -> None:
    """Both or neither of password / access_token gives the one matrix line."""
    problems = problems_of(write(tmp_path, MINIMAL + credentials))
    assert problems == ["matrix: set exactly one of matrix.password and matrix.access_token"]


def test_empty_secret_is_refused(tmp_path: Path) -> None:
    """An empty hook token (which would accept "Bearer ") is an error naming the hook."""
    environ = {"READYBOT_MATRIX__PASSWORD": "p", "READYBOT_HTTP__HOOK_TOKENS__FALCO": ""}
    problems = problems_of(write(tmp_path, MINIMAL), environ)
    assert problems == ["http.hook_tokens.falco: must not be empty (from READYBOT_HTTP__HOOK_TOKENS__FALCO)"]


# --- the file itself ------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    """A config path that does not exist gives "config: file not found: <path>"."""
    missing = tmp_path / "absent.yaml"
    assert problems_of(missing) == [f"config: file not found: {missing}"]


def test_invalid_yaml_gives_line_not_content(tmp_path: Path) -> None:
    """Broken YAML is reported with its line number and without the file's text."""
    path = write(tmp_path, MINIMAL + f'  password: "{SECRET}\n  bad: [\n')
    problems = problems_of(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"config: not valid YAML in {path} (line ")
    assert SECRET not in problems[0]


def test_duplicate_yaml_key_is_refused(tmp_path: Path) -> None:
    """A key repeated in one mapping is an error with its line, not a silent last-one-wins."""
    path = write(tmp_path, MINIMAL + "  password: a\n  password: b\n")
    assert problems_of(path) == [f"config: duplicate key in {path} (line 5, column 3)"]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    """A file holding a list is refused with a clear line."""
    path = write(tmp_path, "- matrix\n- http\n")
    assert problems_of(path) == [f"config: the top level of {path} must be a mapping of sections, not a list"]


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    """An empty file is no error of its own: only the required matrix keys are missing."""
    problems = problems_of(write(tmp_path, "# nothing yet\n"))
    assert problems == ["matrix: Field required"]


def test_format_problems_lists_one_line_each() -> None:
    """format_problems gives a counted heading and one indented line per problem."""
    text = format_problems(ConfigError(["a: x", "b: y"]))
    assert text == "invalid configuration (2 problems):\n  - a: x\n  - b: y"


# --- secrets stay secret --------------------------------------------------


def test_secrets_are_secretstr_and_not_printed(tmp_path: Path) -> None:
    """Password and hook tokens are SecretStr; repr() and str() of the settings never show them."""
    directory = secrets(tmp_path, {"matrix__password": SECRET, "http__hook_tokens__alertmanager": TOKEN})
    settings = load_settings(write(tmp_path, MINIMAL), environ={}, secrets_dir=directory)
    assert isinstance(settings.matrix.password, SecretStr)
    assert isinstance(settings.http.hook_tokens["alertmanager"], SecretStr)
    for text in (repr(settings), str(settings), repr(settings.matrix), str(settings.http)):
        assert SECRET not in text
        assert TOKEN not in text


def test_secret_values_lists_every_secret(tmp_path: Path) -> None:
    """Settings.secret_values() returns the password and every hook token, for log redaction."""
    environ = {
        "READYBOT_MATRIX__PASSWORD": SECRET,
        "READYBOT_HTTP__HOOK_TOKENS__ALERTMANAGER": TOKEN,
        "READYBOT_HTTP__HOOK_TOKENS__FALCO": "falco-token",
    }
    settings = load_settings(write(tmp_path, MINIMAL), environ=environ)
    assert sorted(settings.secret_values()) == sorted([SECRET, TOKEN, "falco-token"])


# --- store.url (PostgreSQL) ---------------------------------------------------


def test_store_url_absent_means_the_sqlite_file(tmp_path: Path) -> None:
    """Without store.url the store is the SQLite file at store.path, as it always was."""
    settings = load_settings(write(tmp_path, MINIMAL), environ={"READYBOT_MATRIX__PASSWORD": SECRET})
    assert settings.store.url is None
    assert settings.store.path == Path("state/readybot.sqlite3")


def test_store_url_from_a_secret_file_is_a_secret(tmp_path: Path) -> None:
    """store__url from a mounted Secret is a SecretStr; its password is redacted from logs on its own."""
    url = f"postgresql://readybot:{SECRET}@db.example.org:5432/readybot"
    directory = secrets(tmp_path, {"matrix__password": "p", "store__url": url + "\n"})
    settings = load_settings(write(tmp_path, MINIMAL), environ={}, secrets_dir=directory)
    assert isinstance(settings.store.url, SecretStr)
    assert settings.store.url.get_secret_value() == url
    assert SECRET not in repr(settings)
    assert {url, SECRET} <= set(settings.secret_values())


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"mysql://readybot:{SECRET}@db:3306/readybot", "must be a postgresql:// URL"),
        (f"postgresql://readybot:{SECRET}@db:port/readybot", "is not a URL"),
        (f"postgresql://readybot:{SECRET}@/readybot", "names no host"),
    ],
)
def test_bad_store_url_names_the_field_and_hides_the_value(tmp_path: Path, url: str, why: str) -> None:
    """A store.url that is no PostgreSQL URL is a config error on store.url that never shows the URL."""
    problems = problems_of(
        write(tmp_path, MINIMAL), environ={"READYBOT_MATRIX__PASSWORD": "p", "READYBOT_STORE__URL": url}
    )
    assert len(problems) == 1
    assert problems[0].startswith("store.url") and why in problems[0]
    assert SECRET not in problems[0]


# --- ha (two replicas) -----------------------------------------------------


def test_ha_is_off_by_default_with_client_go_durations(tmp_path: Path) -> None:
    """Without an ha section one replica always acts; the durations are client-go's 15/10/2 s."""
    ha = load_settings(write(tmp_path, MINIMAL), environ={"READYBOT_MATRIX__PASSWORD": SECRET}).ha
    assert not ha.enabled
    assert (ha.lease_duration_s, ha.renew_deadline_s, ha.retry_period_s) == (15.0, 10.0, 2.0)


def test_ha_identity_comes_from_the_pod_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The replica's identity defaults to POD_NAME, as the downward API sets it."""
    monkeypatch.setenv("POD_NAME", "readybot-1")
    ha = load_settings(write(tmp_path, MINIMAL), environ={"READYBOT_MATRIX__PASSWORD": SECRET}).ha
    assert ha.identity == "readybot-1"


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"READYBOT_HA__RENEW_DEADLINE_S": "15"}, "shorter than ha.lease_duration_s"),
        ({"READYBOT_HA__RETRY_PERIOD_S": "10"}, "shorter than ha.renew_deadline_s"),
        ({"READYBOT_HA__LEASE_NAME": "Readybot Leader"}, "ha.lease_name"),
    ],
)
def test_ha_durations_and_names_are_checked(tmp_path: Path, extra: dict[str, str], problem: str) -> None:
    """A renew deadline not below the lease, a retry not below it, or a bad Lease name is refused."""
    environ = {"READYBOT_MATRIX__PASSWORD": SECRET, "READYBOT_HA__ENABLED": "true", **extra}
    assert any(problem in line for line in problems_of(write(tmp_path, MINIMAL), environ=environ))


def test_ha_needs_the_kubernetes_connection_and_a_shared_store(tmp_path: Path) -> None:
    """ha.enabled is refused without kubernetes.enabled (the Lease) or store.url (one shared store)."""
    environ = {"READYBOT_MATRIX__PASSWORD": SECRET, "READYBOT_HA__ENABLED": "true"}
    problems = problems_of(write(tmp_path, MINIMAL), environ=environ)
    assert any("ha.enabled needs kubernetes.enabled" in line for line in problems)
    environ["READYBOT_KUBERNETES__ENABLED"] = "true"
    problems = problems_of(write(tmp_path, MINIMAL), environ=environ)
    assert any("ha.enabled needs store.url" in line for line in problems)
    environ["READYBOT_STORE__URL"] = "postgresql://readybot@db.example.org:5432/readybot"
    assert load_settings(write(tmp_path, MINIMAL), environ=environ).ha.enabled
