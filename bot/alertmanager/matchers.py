"""Parsing ``!silence`` arguments: Alertmanager matchers, a duration, a comment. Pure.

Matchers use Alertmanager's syntax: ``name="value"``, ``name=value``,
``name!=value``, ``name=~"regex"``, ``name!~"regex"``, several separated by
commas or spaces, optionally inside ``{…}``. The chat line has already been
split into words by ``shlex`` (so ``name="a b"`` arrives as ``name=a b``);
quoted and unquoted values are both accepted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from bot.errors import UsageError
from config.durations import DURATION_HINT, format_duration, parse_duration

SILENCE_USAGE = "{prefix}silence <matchers> <duration> [comment…]"
SILENCE_EXAMPLE = '{prefix}silence alertname="KubePodCrashLooping" namespace=shop 2h deploying the fix'
MIN_SILENCE = timedelta(minutes=1)

# Alertmanager 0.25's classic label names; UTF-8 names came later.
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Longest operators first, so "!=~" can never be read as "!=" + "~…".
_MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*", re.DOTALL)


class MatchType(StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    value: str
    op: MatchType = MatchType.EQUAL

    @property
    def is_regex(self) -> bool:
        return self.op in (MatchType.REGEX, MatchType.NOT_REGEX)

    @property
    def is_equal(self) -> bool:
        return self.op in (MatchType.EQUAL, MatchType.REGEX)

    def matches(self, value: str) -> bool:
        """Alertmanager's semantics: regexes are anchored; a missing label is the empty string."""
        hit = re.fullmatch(self.value, value) is not None if self.is_regex else value == self.value
        return hit if self.is_equal else not hit

    def to_api(self) -> dict[str, Any]:
        """The API v2 form: ``{"name", "value", "isRegex", "isEqual"}``."""
        return {"name": self.name, "value": self.value, "isRegex": self.is_regex, "isEqual": self.is_equal}

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Matcher:
        is_regex, is_equal = bool(data.get("isRegex")), data.get("isEqual", True) is not False
        op = {
            (False, True): MatchType.EQUAL,
            (False, False): MatchType.NOT_EQUAL,
            (True, True): MatchType.REGEX,
            (True, False): MatchType.NOT_REGEX,
        }[(is_regex, is_equal)]
        return cls(str(data["name"]), str(data["value"]), op)

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op.value}"{escaped}"'


@dataclass(frozen=True, slots=True)
class SilenceRequest:
    matchers: tuple[Matcher, ...]
    duration: timedelta
    comment: str


def format_matchers(matchers: Sequence[Matcher]) -> str:
    return "{" + ", ".join(str(m) for m in matchers) + "}"


def usage_error(problem: str, prefix: str = "!") -> UsageError:
    """A UsageError carrying the problem, the usage line and an example."""
    usage = SILENCE_USAGE.format(prefix=prefix)
    example = SILENCE_EXAMPLE.format(prefix=prefix)
    return UsageError(f"{problem}. Usage: `{usage}`, e.g. `{example}`")


def parse_silence(
    words: Sequence[str], *, max_duration: timedelta, prefix: str = "!", default_comment: str = ""
) -> SilenceRequest:
    """Split ``!silence`` words into matchers, then the first duration, then the comment.

    Raises ``UsageError`` (with the usage line and an example) for a bad
    matcher, a missing or out-of-bounds duration, or matchers that would
    silence everything.
    """
    matchers: list[Matcher] = []
    duration: timedelta | None = None
    rest_at = len(words)
    for index, word in enumerate(words):
        if _looks_like_duration(word):
            if not matchers:
                raise usage_error("give at least one matcher before the duration", prefix)
            duration = parse_duration_bounded(word, max_duration=max_duration, prefix=prefix)
            rest_at = index + 1
            break
        matchers.extend(parse_matchers(word, prefix=prefix))
    if not matchers:
        raise usage_error("give at least one matcher", prefix)
    if duration is None:
        raise usage_error(f"give the duration after the matchers ({DURATION_HINT})", prefix)
    check_not_match_all(matchers, prefix=prefix)
    comment = " ".join(words[rest_at:]).strip() or default_comment
    return SilenceRequest(tuple(matchers), duration, comment)


def parse_duration_bounded(text: str, *, max_duration: timedelta, prefix: str = "!") -> timedelta:
    try:
        duration = parse_duration(text)
    except ValueError as exc:
        raise usage_error(f"`{text}` is {exc}", prefix) from None
    if duration < MIN_SILENCE:
        raise usage_error(f"a silence lasts at least {format_duration(MIN_SILENCE)}", prefix)
    if duration > max_duration:
        raise usage_error(f"a silence lasts at most {format_duration(max_duration)}", prefix)
    return duration


def parse_matchers(text: str, *, prefix: str = "!") -> list[Matcher]:
    """One word of matchers: ``a=b``, ``{a="b", c=~"d.*"}``, ``a=b,c!=d``. Empty pieces are skipped."""
    body = text.strip()
    body = body.removeprefix("{").removesuffix("}")
    matchers = []
    for piece in _split_outside_quotes(body, prefix):
        if piece.strip():
            matchers.append(_parse_one(piece, prefix))
    return matchers


def check_not_match_all(matchers: Sequence[Matcher], *, prefix: str = "!") -> None:
    """Refuse matchers that all match the empty string: they would silence every alert.

    Alertmanager refuses such silences too; saying so here gives a clearer answer.
    """
    if all(matcher.matches("") for matcher in matchers):
        raise usage_error("these matchers would silence every alert; add one that needs a value", prefix)


def _looks_like_duration(word: str) -> bool:
    # A matcher always has an operator; a duration starts with a digit and has none.
    return bool(word) and word[0].isdigit() and not any(op in word for op in ("=", "~"))


def _split_outside_quotes(text: str, prefix: str) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            current.append(char)
            escaped = True
        elif char == '"':
            current.append(char)
            quoted = not quoted
        elif char == "," and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise usage_error(f"unbalanced quote in `{text}`", prefix)
    pieces.append("".join(current))
    return pieces


def _parse_one(piece: str, prefix: str) -> Matcher:
    found = _MATCHER.fullmatch(piece)
    if found is None:
        name = re.split(r"[=!~\s]", piece.strip(), maxsplit=1)[0]
        if name and not _LABEL_NAME.fullmatch(name):
            raise usage_error(f"`{name}` is not a label name", prefix)
        raise usage_error(f'`{piece.strip()}` is not a matcher like name="value"', prefix)
    name, op_text, raw = found.groups()
    value = _unquote(raw, piece, prefix)
    op = MatchType(op_text)
    matcher = Matcher(name, value, op)
    if matcher.is_regex:
        try:
            re.compile(value)
        except re.error as exc:
            raise usage_error(f"`{piece.strip()}` has an invalid regex ({exc.msg})", prefix) from None
    return matcher


def _unquote(raw: str, piece: str, prefix: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        # Only the escapes a quoted value needs; "a\.b" keeps its regex backslash.
        return re.sub(r'\\([\\"])', r"\1", raw[1:-1])
    if '"' in raw:
        raise usage_error(f"`{piece.strip()}` has a stray quote", prefix)
    return raw
