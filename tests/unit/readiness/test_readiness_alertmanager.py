"""Reading Alertmanager's loaded configuration: receivers that deliver, and where an alert is routed."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from bot.readiness.alertmanager_config import AlertmanagerConfigError, parse_config
from tests.places import upstream


def status(config_yaml: str) -> dict[str, Any]:
    """An /api/v2/status answer holding this configuration."""
    return {"config": {"original": config_yaml}, "versionInfo": {"version": "0.25.0"}}


REDUNDANT = """
route:
  receiver: matrix
  routes:
    - matchers: ['alertname = "Watchdog"']
      receiver: readybot-watchdog
    - matchers: [severity="critical"]
      receiver: matrix
      continue: true
    - match: {severity: critical}
      receiver: mail
    - match_re: {severity: "warn.*"}
      receiver: matrix
receivers:
  - name: matrix
    webhook_configs: [{url: "http://readybot:8080/hooks/alertmanager"}]
  - name: mail
    email_configs: [{to: ops@example.org}]
  - name: readybot-watchdog
    webhook_configs: [{url: "http://readybot:8080/hooks/alertmanager"}]
  - name: "null"
"""


def test_the_kube_prometheus_default_delivers_nowhere() -> None:
    """kube-prometheus's default configuration (../shared): four receivers, no integration, zero channels."""
    secret = yaml.safe_load(upstream("alertmanager/alertmanager-secret.yaml").read_text())
    config = parse_config(status(secret["stringData"]["alertmanager.yaml"]))
    assert sorted(config.receivers) == ["Critical", "Default", "Watchdog", "null"]
    assert config.delivering() == []
    assert [r.name for r in config.reached_by({"severity": "critical"})] == ["Critical"]
    assert [r.name for r in config.reached_by({"alertname": "Watchdog"})] == ["Watchdog"]
    assert [r.name for r in config.reached_by({"severity": "info"})] == ["Default"]


def test_receivers_with_integrations_count_and_the_null_one_does_not() -> None:
    """webhook and email receivers deliver; a receiver without *_configs does not."""
    config = parse_config(status(REDUNDANT))
    assert [r.describe() for r in config.delivering()] == [
        "matrix (webhook)",
        "mail (email)",
        "readybot-watchdog (webhook)",
    ]


def test_routing_follows_continue_and_first_match_as_alertmanager_does() -> None:
    """critical reaches matrix then (continue) mail; a warning stops at matrix; others go to the root."""
    config = parse_config(status(REDUNDANT))
    assert [r.name for r in config.reached_by({"severity": "critical"})] == ["matrix", "mail"]
    assert [r.name for r in config.reached_by({"severity": "warning"})] == ["matrix"]
    assert [r.name for r in config.reached_by({"severity": "info"})] == ["matrix"]
    assert [r.name for r in config.reached_by({"alertname": "Watchdog", "severity": "critical"})] == [
        "readybot-watchdog"
    ]


def test_a_status_without_configuration_is_an_error_not_a_count() -> None:
    """No config.original, or YAML that is not a mapping, cannot be judged."""
    with pytest.raises(AlertmanagerConfigError, match="holds no configuration"):
        parse_config({"versionInfo": {}})
    with pytest.raises(AlertmanagerConfigError, match="not a mapping"):
        parse_config(status("- a list"))
