"""`!silence` arguments: Alertmanager matchers, durations with bounds, and the comment."""

from __future__ import annotations

import shlex
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.alertmanager.matchers import (
    Matcher,
    MatchType,
    check_not_match_all,
    format_matchers,
    parse_matchers,
    parse_silence,
)
from bot.errors import UsageError
from config.durations import format_duration, parse_duration

WEEK = timedelta(days=7)


def silence_words(line: str) -> list[str]:
    """The words the command registry hands over: the chat line after the name, split as shlex does."""
    return shlex.split(line)


# --- matchers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('alertname="Foo"', [Matcher("alertname", "Foo")]),
        ("alertname=Foo", [Matcher("alertname", "Foo")]),
        ("severity!=info", [Matcher("severity", "info", MatchType.NOT_EQUAL)]),
        ('job=~"api|web"', [Matcher("job", "api|web", MatchType.REGEX)]),
        ('job!~"batch.*"', [Matcher("job", "batch.*", MatchType.NOT_REGEX)]),
        ('{alertname="Foo", namespace="shop"}', [Matcher("alertname", "Foo"), Matcher("namespace", "shop")]),
        ("a=1,b=2", [Matcher("a", "1"), Matcher("b", "2")]),
        ('a="x,y"', [Matcher("a", "x,y")]),
        ('a="say \\"hi\\""', [Matcher("a", 'say "hi"')]),
        ('a=~"v\\.1"', [Matcher("a", "v\\.1", MatchType.REGEX)]),
        ("a = b", [Matcher("a", "b")]),
        ("{a=b}", [Matcher("a", "b")]),
    ],
)
def test_matcher_syntax(text: str, expected: list[Matcher]) -> None:
    """Every operator, quoted or not, with commas and optional braces, parses as Alertmanager reads it."""
    assert parse_matchers(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("alertname", "is not a matcher"),
        ("9lives=yes", "not a label name"),
        ("a-b=c", "not a label name"),
        ('a="open', "unbalanced quote"),
        ('a=b"c"', "stray quote"),
        ('a=~"(unclosed"', "invalid regex"),
    ],
)
def test_bad_matchers_are_usage_errors_with_an_example(text: str, problem: str) -> None:
    """A bad matcher is named, and the answer carries the usage line and an example."""
    with pytest.raises(UsageError) as caught:
        parse_matchers(text)
    message = str(caught.value)
    assert problem in message
    assert "Usage: `!silence <matchers> <duration> [comment…]`" in message
    assert "e.g. `!silence alertname=" in message


def test_matchers_convert_to_and_from_the_api_form() -> None:
    """isRegex/isEqual follow the operator, and the API form converts back to the same matcher."""
    for op, is_regex, is_equal in (
        (MatchType.EQUAL, False, True),
        (MatchType.NOT_EQUAL, False, False),
        (MatchType.REGEX, True, True),
        (MatchType.NOT_REGEX, True, False),
    ):
        matcher = Matcher("job", "api", op)
        api = matcher.to_api()
        assert api == {"name": "job", "value": "api", "isRegex": is_regex, "isEqual": is_equal}
        assert Matcher.from_api(api) == matcher


_LABEL = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True)
_VALUE = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)


@given(_LABEL, _VALUE, st.sampled_from([MatchType.EQUAL, MatchType.NOT_EQUAL]))
def test_printed_matchers_parse_back(name: str, value: str, op: MatchType) -> None:
    """str(matcher) is valid matcher syntax that parses back to the same matcher, whatever the value."""
    matcher = Matcher(name, value, op)
    assert parse_matchers(str(matcher)) == [matcher]
    assert parse_matchers(format_matchers([matcher, matcher])) == [matcher, matcher]


def test_regex_matchers_are_anchored_like_alertmanager() -> None:
    """A regex matcher must match the whole value, and a missing label reads as the empty string."""
    assert Matcher("job", "api", MatchType.REGEX).matches("api")
    assert not Matcher("job", "api", MatchType.REGEX).matches("api-2")
    assert Matcher("job", "x", MatchType.NOT_EQUAL).matches("")


# --- durations ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86400),
        ("1h30m", 5400),
        ("1w2d", 777600),
        ("90s", 90),
        ("2H", 7200),
    ],
)
def test_duration_syntax(text: str, seconds: int) -> None:
    """Durations combine w, d, h, m, s, largest first, as Alertmanager writes them."""
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "2", "h", "2x", "1.5h", "30m1h", "1h1h", "-1h", "1h 30m"])
def test_bad_durations_are_refused(text: str) -> None:
    """A duration without unit, with an unknown unit, or with units out of order is refused."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.6, "1m"), (90, "1m30s"), (7200, "2h"), (5400, "1h30m"), (90061, "1d1h"), (-5, "0s")],
)
def test_duration_formatting_keeps_the_two_largest_units(seconds: float, text: str) -> None:
    """Durations are shown compactly with their two largest units, never negative."""
    assert format_duration(seconds) == text


# --- the whole !silence line ----------------------------------------------


def test_silence_line_splits_into_matchers_duration_and_comment() -> None:
    """Matchers come first, the first duration ends them, and the rest is the comment."""
    request = parse_silence(
        silence_words('alertname="KubePodCrashLooping" namespace=shop 2h deploying the fix'),
        max_duration=WEEK,
    )
    assert request.matchers == (Matcher("alertname", "KubePodCrashLooping"), Matcher("namespace", "shop"))
    assert request.duration == timedelta(hours=2)
    assert request.comment == "deploying the fix"


def test_silence_line_accepts_braces_split_across_words() -> None:
    """`{a="x", b="y"}` typed with a space is still one set of matchers."""
    request = parse_silence(silence_words('{alertname=Foo, severity=~"warn|crit"} 1h30m'), max_duration=WEEK)
    assert request.matchers == (
        Matcher("alertname", "Foo"),
        Matcher("severity", "warn|crit", MatchType.REGEX),
    )
    assert request.duration == timedelta(minutes=90)


def test_silence_comment_defaults_when_none_given() -> None:
    """Without a comment the default one is used (Alertmanager wants a comment)."""
    request = parse_silence(["alertname=Foo", "30m"], max_duration=WEEK, default_comment="from Matrix")
    assert request.comment == "from Matrix"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("alertname=Foo", "give the duration"),
        ("alertname=Foo 5x", "`5x` is not a duration"),
        ("alertname=Foo 30s", "at least 1m"),
        ("alertname=Foo 8d", "at most 1w"),
        ("2h", "give at least one matcher"),
        ("foo 2h", "`foo` is not a matcher"),
        ('alertname=~".*" 2h', "would silence every alert"),
        ("alertname!=Foo 2h", "would silence every alert"),
    ],
)
def test_bad_silence_lines_get_usage_and_example(line: str, problem: str) -> None:
    """Bad matchers, bad or out-of-bounds durations and match-all silences get the usage and an example."""
    with pytest.raises(UsageError) as caught:
        parse_silence(silence_words(line), max_duration=WEEK, prefix="?")
    message = str(caught.value)
    assert problem in message
    assert "Usage: `?silence <matchers> <duration> [comment…]`" in message
    assert "e.g. `?silence " in message


def test_match_all_check_accepts_one_matcher_that_needs_a_value() -> None:
    """A negative matcher is fine next to one that needs a value."""
    check_not_match_all([Matcher("severity", "info", MatchType.NOT_EQUAL), Matcher("job", "api")])
