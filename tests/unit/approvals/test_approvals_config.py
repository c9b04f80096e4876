"""The approvals settings section and how the feature is switched on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.catalog import enabled_features
from bot.errors import ConfigError
from config.approvals import ApprovalsSettings, application_name
from config.loading import load_settings

MINIMAL: dict[str, Any] = {
    "matrix": {"homeserver": "https://matrix.example.org", "user_id": "@bot:example.org", "password": "x"},
}
APPROVER = {"users": ["@bob:example.org"]}


def problems(tmp_path: Path, approvals: dict[str, Any]) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(MINIMAL | {"approvals": approvals}), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    return caught.value.problems


def test_an_empty_section_is_valid_and_gates_nothing() -> None:
    """approvals: {} validates with defaults: no apps, 30 min expiry per app when listed."""
    settings = ApprovalsSettings()
    assert settings.apps == {}
    app = ApprovalsSettings.model_validate({"apps": {"cilium": {"approvers": APPROVER}}}).apps["cilium"]
    assert (app.namespace, app.approvals_required, app.expires_after_s, app.four_eyes) == (
        "argocd",
        1,
        1800,
        True,
    )
    assert application_name("cilium", app) == "cilium"


@pytest.mark.parametrize(
    ("approvals", "expected"),
    [
        ({"apps": {"cilium": {}}}, "approvals.apps.cilium: approvers: set users or min_power_level"),
        ({"apps": {"cilium": {"approvers": APPROVER, "approvals_required": 0}}}, "approvals_required"),
        ({"apps": {"Cilium!": {"approvers": APPROVER}}}, "must be lower case letters"),
        ({"apps": {"my_app": {"approvers": APPROVER}}}, "set application"),
        ({"apps": {"c": {"approvers": APPROVER, "sync_options": ["Prune"]}}}, "Name=value"),
        ({"apps": {"c": {"approvers": APPROVER, "namespace": "Argo CD"}}}, "namespace name"),
        (
            {
                "apps": {
                    "a": {"approvers": APPROVER, "application": "x"},
                    "b": {"approvers": APPROVER, "application": "x"},
                }
            },
            "gate the same Application argocd/x",
        ),
        ({"apps": {"cilium": {"approvers": APPROVER, "typo": 1}}}, "approvals.apps.cilium.typo: unknown key"),
    ],
)
def test_invalid_gates_are_refused_with_a_line_each(
    tmp_path: Path, approvals: dict[str, Any], expected: str
) -> None:
    """Open approver rules, zero approvals, bad names, bad options, duplicates and typos are config errors."""
    assert any(expected in line for line in problems(tmp_path, approvals)), problems(tmp_path, approvals)


def test_the_feature_starts_after_kubernetes_and_only_with_apps() -> None:
    """No gated apps: no approvals feature; with apps it comes after the kubernetes feature it needs."""
    from config.settings import Settings

    base = Settings.model_validate(MINIMAL | {"kubernetes": {"enabled": True}})
    assert "approvals_feature" not in [f.__name__ for f in enabled_features(base)]
    gated = Settings.model_validate(
        MINIMAL
        | {"kubernetes": {"enabled": True}, "approvals": {"apps": {"cilium": {"approvers": APPROVER}}}}
    )
    names = [f.__name__ for f in enabled_features(gated)]
    assert names.index("kubernetes_feature") < names.index("approvals_feature")
