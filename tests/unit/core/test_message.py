"""Message rendering: content shape, size limits and autoescaping."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from bot.render.message import MAX_FIELD_BYTES, Message, escaped_size, fit_lines
from bot.render.templates import Templates


def test_content_is_a_notice_with_html() -> None:
    """Bot output is m.notice with both a plain body and HTML."""
    content = Message("hi", "<b>hi</b>").content()
    assert content == {
        "msgtype": "m.notice",
        "body": "hi",
        "format": "org.matrix.custom.html",
        "formatted_body": "<b>hi</b>",
    }


def test_fit_lines_keeps_everything_that_fits() -> None:
    """Short lists come back unchanged."""
    assert fit_lines(["a", "b"]) == ["a", "b"]


def test_fit_lines_says_how_many_were_left_out() -> None:
    """A list over budget ends with '… and N more' and N is exact."""
    lines = [f"alert number {i} " + "x" * 80 for i in range(1000)]
    kept = fit_lines(lines)
    assert kept[-1].startswith("… and ")
    left_out = int(kept[-1].split()[2])
    assert len(kept) - 1 + left_out == 1000
    assert sum(escaped_size(line) for line in kept) <= MAX_FIELD_BYTES


@given(st.text(min_size=0, max_size=40_000))
def test_any_text_renders_within_the_event_limit(text: str) -> None:
    """Whatever the text, an edit of it (carried twice) stays far below 65,536 bytes."""
    content = Message(text, text).content()
    edit = {"body": content["body"], "m.new_content": content, "formatted_body": content["formatted_body"]}
    assert len(json.dumps(edit).encode()) < 65_536 * 3 // 4  # room left for encryption's base64


def test_html_templates_escape_markup() -> None:
    """User-controlled text in an HTML template is escaped; the plain one is left as is."""
    message = Templates().render(
        "ping", version="<script>", delay_ms=3, bot_device="<b>dev</b>", sender_device="not encrypted"
    )
    assert message.html is not None
    assert "<script>" not in message.html and "&lt;script&gt;" in message.html
    assert "<script>" in message.plain


def test_user_templates_override_shipped_ones(tmp_path: object) -> None:
    """A template in the override directory replaces the shipped one."""
    from pathlib import Path

    directory = Path(str(tmp_path))
    (directory / "ping.txt.j2").write_text("custom {{ version }}")
    (directory / "ping.html.j2").write_text("<i>custom</i>")
    message = Templates(directory).render("ping", version="1.2", delay_ms=1)
    assert message.plain == "custom 1.2"
    assert message.html == "<i>custom</i>"
