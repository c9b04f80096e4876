"""Strict YAML: the one reader of the settings file and the readiness plan.

PyYAML keeps the last of two equal keys without a word; in a config file that
hides a typo or a bad merge (two ``matrix:`` sections), so a repeated key is an
error here. And the problem text of a YAML error may quote the offending
token, which could be a secret on a broken line: ``YamlProblem`` gives the
position only.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            # Keys brought in by "<<: *anchor" may be overridden on purpose.
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable; the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, "duplicate key", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


class YamlProblem(Exception):
    """The text is not usable YAML; says ``what`` and ``at`` where, never the content.

    ``what`` is "duplicate key" or "not valid YAML"; ``at`` is
    `` (line L, column C)`` when the parser knows where, else empty.
    """

    def __init__(self, what: str, at: str = "") -> None:
        super().__init__(f"{what}{at}")
        self.what = what
        self.at = at


def load_strict_yaml(text: str) -> object:
    """The YAML document in ``text``; ``YamlProblem`` when it is broken or repeats a key."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        what = "duplicate key" if error.problem == "duplicate key" else "not valid YAML"
        at = "" if mark is None else f" (line {mark.line + 1}, column {mark.column + 1})"
        raise YamlProblem(what, at) from None
    except yaml.YAMLError:
        raise YamlProblem("not valid YAML") from None
