"""Reading Alertmanager's loaded configuration (``/api/v2/status`` → ``config.original``). Pure.

Counts the receivers that deliver somewhere (a receiver without any
``*_configs`` is a "null" receiver that drops alerts), and walks the routing
tree as Alertmanager does to find which receivers an alert with given labels
reaches: a node's children are tried in order, the first match takes the
alert unless it sets ``continue: true``, and a node none of whose children
matched delivers to its own receiver (inherited from its parent if unset).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from bot.alertmanager.matchers import Matcher, MatchType, parse_matchers
from bot.errors import UsageError


class AlertmanagerConfigError(ValueError):
    """The configuration could not be read; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Receiver:
    name: str
    # Integration kinds, e.g. ("webhook", "email"); empty for a null receiver.
    integrations: tuple[str, ...]

    @property
    def delivers(self) -> bool:
        return bool(self.integrations)

    def describe(self) -> str:
        kinds = ", ".join(self.integrations) if self.integrations else "no integration"
        return f"{self.name} ({kinds})"


@dataclass(frozen=True)
class AlertmanagerConfig:
    receivers: dict[str, Receiver]
    route: dict[str, Any]

    def delivering(self) -> list[Receiver]:
        return [receiver for receiver in self.receivers.values() if receiver.delivers]

    def reached_by(self, labels: dict[str, str]) -> list[Receiver]:
        """The receivers an alert with ``labels`` is delivered to, in routing order."""
        names: list[str] = []
        _walk(self.route, labels, str(self.route.get("receiver", "")), names)
        unique = list(dict.fromkeys(names))
        return [self.receivers.get(name, Receiver(name, ())) for name in unique]


def parse_config(status: dict[str, Any]) -> AlertmanagerConfig:
    """The receivers and routing tree from an ``/api/v2/status`` answer."""
    original = (status.get("config") or {}).get("original")
    if not isinstance(original, str):
        raise AlertmanagerConfigError("the status answer holds no configuration")
    try:
        config = yaml.safe_load(original)
    except yaml.YAMLError:
        raise AlertmanagerConfigError("the loaded configuration is not valid YAML") from None
    if not isinstance(config, dict):
        raise AlertmanagerConfigError("the loaded configuration is not a mapping")
    receivers: dict[str, Receiver] = {}
    for item in config.get("receivers") or []:
        if not isinstance(item, dict) or "name" not in item:
            continue
        kinds = tuple(
            key.removesuffix("_configs")
            for key, value in item.items()
            if key.endswith("_configs") and isinstance(value, list) and value
        )
        receivers[str(item["name"])] = Receiver(str(item["name"]), kinds)
    route = config.get("route")
    return AlertmanagerConfig(receivers, route if isinstance(route, dict) else {})


def _walk(node: dict[str, Any], labels: dict[str, str], inherited: str, into: list[str]) -> None:
    receiver = str(node.get("receiver") or inherited)
    matched_child = False
    for child in node.get("routes") or []:
        if not isinstance(child, dict) or not _matches(child, labels):
            continue
        matched_child = True
        _walk(child, labels, receiver, into)
        if not child.get("continue", False):
            break
    if not matched_child:
        into.append(receiver)


def _matches(route: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(matcher.matches(labels.get(matcher.name, "")) for matcher in _route_matchers(route))


def _route_matchers(route: dict[str, Any]) -> list[Matcher]:
    found: list[Matcher] = []
    for name, value in (route.get("match") or {}).items():
        found.append(Matcher(str(name), str(value), MatchType.EQUAL))
    for name, value in (route.get("match_re") or {}).items():
        found.append(Matcher(str(name), str(value), MatchType.REGEX))
    for text in route.get("matchers") or []:
        try:
            found.extend(parse_matchers(str(text)))
        except UsageError:
            # Alertmanager accepted it, so it is a syntax we do not read
            # (UTF-8 names): match nothing rather than guess.
            found.append(Matcher("__unreadable__", re.escape(str(text)), MatchType.EQUAL))
    return found
