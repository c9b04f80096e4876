"""Fuzz: any request to the webhooks is answered 2xx or 4xx, never 5xx."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import example, given, settings

from bot.http.common import PayloadError, decode_json_object
from tests.fuzz.conftest import FUZZ
from tests.fuzz.fuzz_webhooks import TOKENS, WEBHOOKS, Request


@pytest.fixture(scope="module", autouse=True)
def _close_server() -> Iterator[None]:
    yield
    WEBHOOKS.close()


# Found by bench/fuzz.py: a number of more than 4,300 digits made json.loads raise a
# plain ValueError that escaped the 400 path, and aiohttp answered 500.
_LONG_NUMBER = b'{"version": ' + b"7" * 4_301 + b"}"


@settings(FUZZ, max_examples=500)
@given(WEBHOOKS.strategy)
@example(Request("alertmanager", "POST", "application/json", TOKENS["alertmanager"], _LONG_NUMBER))
@example(Request("falco", "POST", "application/json", TOKENS["falco"], b'{"time": ' + b"1" * 5_000 + b"}"))
def test_any_webhook_request_is_answered_2xx_or_4xx(request_: Request) -> None:
    """Damaged real payloads, arbitrary JSON and bytes, hostile shapes: the answer is never 5xx."""
    WEBHOOKS.check(request_)


def test_a_number_longer_than_python_reads_is_a_400() -> None:
    """A JSON integer over Python's 4,300-digit limit is refused as invalid JSON (400), not a 500."""
    with pytest.raises(PayloadError) as caught:
        decode_json_object(_LONG_NUMBER)
    assert caught.value.status == 400
    assert "too many digits" in caught.value.detail
