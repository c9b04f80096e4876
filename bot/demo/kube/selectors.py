"""Label and field selectors, and JSON merge / JSON patches, as the API server applies them."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

_LABEL_KEY = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_SET_BASED = re.compile(r"(?P<key>\S+)\s+(?P<op>in|notin)\s+\((?P<values>[^)]*)\)")
FIELD_LABELS = ("metadata.name", "metadata.namespace")


class SelectorError(ValueError):
    """A selector the API server would refuse with 400."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # =, !=, in, notin, exists, !exists
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # != and notin also match objects without the key, as in Kubernetes.
        return not present or value not in self.values


def _split(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    requirements: list[Requirement] = []
    for part in _split(text or ""):
        set_based = _SET_BASED.fullmatch(part)
        if set_based:
            values = frozenset(v.strip() for v in set_based["values"].split(",") if v.strip())
            requirement = Requirement(set_based["key"], set_based["op"], values)
        elif part.startswith("!"):
            requirement = Requirement(part[1:].strip(), "!exists")
        elif "!=" in part:
            key, value = part.split("!=", 1)
            requirement = Requirement(key.strip(), "!=", frozenset({value.strip()}))
        elif "=" in part:
            key, value = part.replace("==", "=", 1).split("=", 1)
            requirement = Requirement(key.strip(), "=", frozenset({value.strip()}))
        else:
            requirement = Requirement(part, "exists")
        if not _LABEL_KEY.fullmatch(requirement.key):
            raise SelectorError(f"unable to parse requirement: invalid label key {requirement.key!r}")
        requirements.append(requirement)
    return requirements


def parse_field_selector(text: str | None) -> list[Requirement]:
    requirements: list[Requirement] = []
    for part in _split(text or ""):
        op = "!=" if "!=" in part else "="
        key, _, value = part.replace("==", "=", 1).partition(op)
        if not _ or key.strip() not in FIELD_LABELS:
            raise SelectorError(f'field label not supported: "{key.strip()}"')
        requirements.append(Requirement(key.strip(), op, frozenset({value.strip()})))
    return requirements


def object_matches(obj: dict[str, Any], labels: list[Requirement], fields: list[Requirement]) -> bool:
    metadata = obj.get("metadata") or {}
    object_labels = metadata.get("labels") or {}
    field_values = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
    }
    return all(r.matches(object_labels) for r in labels) and all(r.matches(field_values) for r in fields)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class PatchError(ValueError):
    """A JSON patch that cannot be applied (422 in the API server)."""


def json_patch(target: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902 add/remove/replace/test (move and copy are not needed here)."""
    document = copy.deepcopy(target)
    for operation in operations:
        op, path = operation.get("op"), operation.get("path", "")
        parent, last = _walk(document, path)
        if op == "test":
            if _get(parent, last) != operation.get("value"):
                raise PatchError(f"test failed at {path}")
        elif op == "remove":
            _get(parent, last)
            del parent[int(last) if isinstance(parent, list) else last]
        elif op in ("add", "replace"):
            if op == "replace":
                _get(parent, last)
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if op == "add":
                    parent.insert(index, operation.get("value"))
                else:
                    parent[index] = operation.get("value")
            else:
                parent[last] = operation.get("value")
        else:
            raise PatchError(f"unsupported JSON patch operation {op!r}")
    return document


def _walk(document: Any, path: str) -> tuple[Any, str]:
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]
    node = document
    for token in tokens[:-1]:
        node = _get(node, token)
    return node, tokens[-1]


def _get(node: Any, token: str) -> Any:
    try:
        return node[int(token)] if isinstance(node, list) else node[token]
    except (KeyError, IndexError, ValueError, TypeError):
        raise PatchError(f"path element {token!r} not found") from None
