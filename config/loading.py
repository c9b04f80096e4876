"""Load ``Settings`` from a YAML file, the environment and secret files.

Layers, each overriding the one before:

1. the YAML file (optional; its top level must be a mapping of sections);
2. environment variables ``READYBOT_<SECTION>__<KEY>[__<KEY>…]``, names
   case-insensitive, e.g. ``READYBOT_HTTP__PORT=9000`` or
   ``READYBOT_HTTP__HOOK_TOKENS__ALERTMANAGER=…``;
3. secret files in a directory (a mounted Kubernetes Secret), named like the
   variable without its prefix, e.g. ``matrix__password``.

A value set at a path replaces whatever the earlier layers had at exactly that
path; other keys of the same section are kept. Scalars are given as plain
text (pydantic converts ``"9000"`` to an int); list, mapping and section
values are given as JSON.

Why a merge of plain dicts instead of pydantic-settings sources: with
pydantic-settings a misspelt top-level variable (``READYBOT_MATRX__…``, or
``READYBOT_MATRIX_PASSWORD`` with one underscore) is silently ignored, its
secrets source has its own rules for nested names, and its errors carry the
input value. Here every ``READYBOT_*`` variable and every secret file must
name a real key, each layer is a few lines we can test, and one
``Settings.model_validate`` at the end gives the error locations we report.
"""

from __future__ import annotations

import copy
import json
import os
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from config.errors import ConfigError
from config.settings import Settings
from config.yaml import YamlProblem, load_strict_yaml

ENV_PREFIX = "READYBOT_"
SECRETS_DIR_ENV = "READYBOT_SECRETS_DIR"
# READYBOT_* variables that configure the loader itself rather than naming a
# setting (the secrets dir, the CLI's config path, the demo's Synapse
# interpreter, the real cluster the Kubernetes tests may target, the fault tests'
# hold point in bot/testhooks.py); every other READYBOT_* variable must name a setting.
RESERVED_ENV_NAMES = frozenset(
    {
        SECRETS_DIR_ENV,
        "READYBOT_CONFIG",
        "READYBOT_SYNAPSE_PYTHON",
        "READYBOT_TEST_KUBECONFIG",
        "READYBOT_TEST_HOLD_AT",
    }
)
PATH_DELIMITER = "__"

# pydantic prefixes messages of ValueError/AssertionError raised in validators;
# the field path already says where, so the prefix is noise.
_MESSAGE_PREFIXES = ("Value error, ", "Assertion failed, ")
# A validator message containing the input would leak it (it may be a
# secret). Shorter inputs are left alone: they cannot hide much, and
# blanking e.g. "IN" inside "'INFO'" would garble the message.
_MIN_REDACTED_INPUT = 4


@dataclass(frozen=True)
class _Override:
    """One value from the environment or a secret file, at a settings path."""

    path: tuple[str, ...]
    raw: str
    origin: str  # "READYBOT_HTTP__PORT" or "secret file /run/…/http__port"


def load_settings(
    path: Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    secrets_dir: Path | None = None,
) -> Settings:
    """Build and validate the settings, or raise ``ConfigError`` listing every problem.

    ``environ`` defaults to ``os.environ``; ``secrets_dir`` defaults to
    ``$READYBOT_SECRETS_DIR`` (read from ``environ``), else no secret files.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    problems: list[str] = []

    merged: dict[str, Any] = {}
    file_ok = True
    if path is not None:
        try:
            merged = _read_yaml(path)
        except _FileProblem as exc:
            problems.append(str(exc))
            file_ok = False

    overrides = _env_overrides(env, problems)
    if secrets_dir is None:
        # Case-insensitive like every other READYBOT_* name.
        named = [value for name, value in env.items() if name.upper() == SECRETS_DIR_ENV and value]
        secrets_dir = Path(named[0]) if named else None
    if secrets_dir is not None:
        overrides += _secret_file_overrides(secrets_dir, problems)

    origins: dict[tuple[str, ...], str] = {}
    for override in overrides:
        value = _parse_override(override, problems)
        if value is _INVALID:
            continue
        _set_path(merged, override.path, value)
        origins[override.path] = override.origin

    if not file_ok:
        # Without the file most of what validation would say ("matrix: Field
        # required") is noise; report what is wrong with the sources alone.
        raise ConfigError(problems)

    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        problems.extend(problems_from_validation_error(exc, origins))
    if problems:
        raise ConfigError(problems)
    return settings


def format_problems(error: ConfigError) -> str:
    """A block of text for the terminal / log: a heading, then one problem per line."""
    count = len(error.problems)
    heading = f"invalid configuration ({count} problem{'s' if count != 1 else ''}):"
    return "\n".join([heading, *(f"  - {problem}" for problem in error.problems)])


def problems_from_validation_error(
    exc: ValidationError, origins: Mapping[tuple[str, ...], str] | None = None
) -> list[str]:
    """One ``section.key: message`` line per pydantic error, never containing the input value.

    ``origins`` maps paths set by the environment or secret files to where
    they came from, so the line can say which variable or file to fix.
    """
    lines: list[str] = []
    for err in exc.errors(include_url=False, include_input=True):
        loc = tuple(str(part) for part in err["loc"])
        where = ".".join(loc) or "config"
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        else:
            message = _clean_message(err["msg"], err.get("input"))
        origin = _origin_for(loc, origins or {})
        line = f"{where}: {message}" + (f" (from {origin})" if origin else "")
        if line not in lines:
            lines.append(line)
    return lines


# --- the YAML layer -------------------------------------------------------


class _FileProblem(Exception):
    """The YAML file cannot be used; the message is the problem line."""


def _read_yaml(path: Path) -> dict[str, Any]:
    """The file's top-level mapping; raises ``_FileProblem`` with a line that never quotes the content."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _FileProblem(f"config: file not found: {path}") from None
    except IsADirectoryError:
        raise _FileProblem(f"config: not a file: {path}") from None
    except UnicodeDecodeError:
        raise _FileProblem(f"config: {path} is not valid UTF-8") from None
    except OSError as exc:
        raise _FileProblem(f"config: cannot read {path}: {exc.strerror or type(exc).__name__}") from None

    try:
        data = load_strict_yaml(text)
    except YamlProblem as problem:
        raise _FileProblem(f"config: {problem.what} in {path}{problem.at}") from None

    if data is None:  # an empty file (or only comments): all defaults
        return {}
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else "a single value"
        raise _FileProblem(f"config: the top level of {path} must be a mapping of sections, not {kind}")
    # A section whose keys are all commented out ("http:" alone) loads as
    # None; it means "defaults", like leaving the section out.
    return {key: value for key, value in data.items() if value is not None}


# --- the environment and secret-file layers -------------------------------


def _env_overrides(environ: Mapping[str, str], problems: list[str]) -> list[_Override]:
    found: list[_Override] = []
    for name, raw in environ.items():
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in RESERVED_ENV_NAMES:
            continue
        found.append(_Override(_split_name(name[len(ENV_PREFIX) :]), raw, name))
    return _checked(found, problems)


def _secret_file_overrides(directory: Path, problems: list[str]) -> list[_Override]:
    if not directory.exists():
        problems.append(f"config: secrets directory not found: {directory}")
        return []
    if not directory.is_dir():
        problems.append(f"config: secrets directory is not a directory: {directory}")
        return []

    found: list[_Override] = []
    for entry in sorted(directory.iterdir()):
        # Kubernetes mounts a Secret as symlinks into "..data" -> "..<timestamp>"
        # directories; those and any other dotfile are not keys.
        if entry.name.startswith("."):
            continue
        # A subdirectory cannot hold one value; nested keys use "__" in the name.
        if not entry.is_file():
            continue
        origin = f"secret file {entry}"
        try:
            raw = entry.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{_dotted(_split_name(entry.name))}: {origin} is not valid UTF-8")
            continue
        except OSError as exc:
            problems.append(
                f"{_dotted(_split_name(entry.name))}: cannot read {origin}: "
                f"{exc.strerror or type(exc).__name__}"
            )
            continue
        # `echo secret > file` and editors add a final newline that is not
        # part of the secret; CRLF comes from files written on Windows.
        found.append(_Override(_split_name(entry.name), raw.rstrip("\r\n"), origin))
    return _checked(found, problems)


def _split_name(name: str) -> tuple[str, ...]:
    # Names are case-insensitive: environment variables are written in upper
    # case, settings keys (and hook/command names) in lower case.
    return tuple(name.lower().split(PATH_DELIMITER))


def _dotted(path: Iterable[str]) -> str:
    return ".".join(path)


def _checked(found: list[_Override], problems: list[str]) -> list[_Override]:
    """Drop (and report) overrides naming no setting or colliding with another.

    The survivors come shortest path first, so a whole value given as JSON
    (``READYBOT_HTTP__HOOK_TOKENS``) is applied before a single key inside
    it (``READYBOT_HTTP__HOOK_TOKENS__ALERTMANAGER``) and the finer one wins.
    """
    by_path: dict[tuple[str, ...], list[_Override]] = {}
    for override in found:
        problem = _path_problem(override.path)
        if problem is not None:
            problems.append(f"{problem} (from {override.origin})")
            continue
        by_path.setdefault(override.path, []).append(override)

    kept: list[_Override] = []
    for key_path, group in by_path.items():
        if len(group) > 1:
            # e.g. READYBOT_MATRIX__PASSWORD and readybot_matrix__password:
            # which one wins would depend on dict order, so refuse both.
            names = ", ".join(sorted(o.origin for o in group))
            problems.append(f"{_dotted(key_path)}: set more than once ({names})")
            continue
        kept.append(group[0])
    return sorted(kept, key=lambda o: (len(o.path), o.path))


def _path_problem(path: tuple[str, ...]) -> str | None:
    """Why ``path`` names no setting, or None when it does."""
    annotation: Any = Settings
    for depth, name in enumerate(path):
        here = _dotted(path[: depth + 1])
        if not name:
            return f"{here}: empty key in name"
        target = _unwrap(annotation)
        if isinstance(target, type) and issubclass(target, BaseModel):
            field = target.model_fields.get(name)
            if field is None:
                return f"{here}: unknown key{_separator_hint(path) if depth == 0 else ''}"
            annotation = field.annotation
        elif get_origin(target) is dict:
            # A mapping such as http.hook_tokens accepts any name.
            annotation = get_args(target)[1]
        elif get_origin(target) is list:
            parent = _dotted(path[:depth])
            return f"{here}: unknown key; give {parent} as one JSON list"
        else:
            return f"{here}: unknown key"
    return None


def _separator_hint(path: tuple[str, ...]) -> str:
    # READYBOT_MATRIX_PASSWORD (one underscore) is the likeliest typo of all.
    section = path[0].split("_", 1)[0]
    if section in Settings.model_fields and path[0] != section:
        return f"; separate the section and the key with {PATH_DELIMITER}"
    return ""


def _annotation_at(path: tuple[str, ...]) -> Any:
    """The type at a path already accepted by ``_path_problem``."""
    annotation: Any = Settings
    for name in path:
        target = _unwrap(annotation)
        if isinstance(target, type) and issubclass(target, BaseModel):
            annotation = target.model_fields[name].annotation
        else:
            annotation = get_args(target)[1]
    return _unwrap(annotation)


def _unwrap(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, …]`` -> ``X``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _is_structured(annotation: Any) -> bool:
    """Whether values for this type come as JSON (lists, mappings, sections)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return get_origin(annotation) in (list, dict, tuple, set, frozenset)


# A sentinel distinct from every JSON value (None included).
_INVALID: Any = object()


def _parse_override(override: _Override, problems: list[str]) -> Any:
    if not _is_structured(_annotation_at(override.path)):
        return override.raw
    try:
        return json.loads(override.raw)
    except json.JSONDecodeError as exc:
        # JSONDecodeError's str() is position-only, but say even less: the
        # text may be a secret mapping such as hook tokens.
        problems.append(
            f"{_dotted(override.path)}: not valid JSON (line {exc.lineno}, column {exc.colno}) "
            f"(from {override.origin})"
        )
        return _INVALID


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for name in path[:-1]:
        child = node.get(name)
        # A later layer wins, also over a malformed earlier value. Copy on the
        # way down so that a YAML anchor shared by two sections is not changed
        # for both.
        child = copy.copy(child) if isinstance(child, dict) else {}
        node[name] = child
        node = child
    node[path[-1]] = value


def _origin_for(loc: tuple[str, ...], origins: Mapping[tuple[str, ...], str]) -> str | None:
    """The variable or file that set ``loc`` or the closest section above it."""
    for end in range(len(loc), 0, -1):
        origin = origins.get(loc[:end])
        if origin is not None:
            return origin
    return None


def _clean_message(message: str, value: Any) -> str:
    for prefix in _MESSAGE_PREFIXES:
        if message.startswith(prefix):
            message = message[len(prefix) :]
    # pydantic's str(ValidationError) appends "[type=…, input_value=…]";
    # err["msg"] has no such suffix, but a message built from one would.
    message = message.split(" [type=", 1)[0]
    if isinstance(value, str) and len(value) >= _MIN_REDACTED_INPUT and value in message:
        message = message.replace(value, "<value>")
    return message
