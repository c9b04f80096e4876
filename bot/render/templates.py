"""Jinja2 templates for messages: ``NAME.txt.j2`` (plain) and ``NAME.html.j2`` (HTML).

HTML templates autoescape, so a label or alert text can never inject markup.
A directory given by the user is searched first, which is how operators
override a message's look without forking the bot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    select_autoescape,
)

from bot.render.message import Message


class Templates:
    def __init__(self, override_dir: Path | None = None) -> None:
        loaders: list[Any] = []
        if override_dir is not None:
            loaders.append(FileSystemLoader(str(override_dir)))
        loaders.append(PackageLoader("bot.render", "templates"))
        self._env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            # Templates are read once per process: an operator's override
            # takes effect on restart. Checking each file's mtime on every
            # render cost two stat calls per message (a storm renders
            # thousands of digest lines).
            auto_reload=False,
        )

    def render(self, name: str, **context: Any) -> Message:
        plain = self._env.get_template(f"{name}.txt.j2").render(**context).strip()
        html = self._env.get_template(f"{name}.html.j2").render(**context).strip()
        return Message(plain=plain, html=html)
