"""The tests' import path of ``bot.demo.kube.selectors`` (one copy: the demo runs the same server)."""

from bot.demo.kube.selectors import (
    FIELD_LABELS,
    PatchError,
    Requirement,
    SelectorError,
    json_patch,
    merge_patch,
    object_matches,
    parse_field_selector,
    parse_label_selector,
)

__all__ = [
    "FIELD_LABELS",
    "PatchError",
    "Requirement",
    "SelectorError",
    "json_patch",
    "merge_patch",
    "object_matches",
    "parse_field_selector",
    "parse_label_selector",
]
