"""Settings of the approval gates for critical Argo CD apps (issue 4).

A gated app is synced only through ``!sync <app>`` and approval by reaction.
Every field has a default so an empty ``approvals`` section validates; the
feature is off while ``apps`` is empty.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from config.base import PermissionRule, Section

# The name people type after !sync: short, lower case, no spaces or quotes.
CHAT_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# Kubernetes object names (DNS subdomain) and namespaces (DNS label).
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Argo CD sync options are "Name=value" (CreateNamespace=true, ServerSideApply=true, …).
_SYNC_OPTION = re.compile(r"^[A-Za-z][A-Za-z0-9]*=[^\s=]+$")


class GatedApp(Section):
    """One Argo CD Application whose syncs need approval."""

    # The Argo CD Application's name; defaults to the chat name (the key).
    application: str | None = None
    # Where the Application object lives (Argo CD's own namespace).
    namespace: str = "argocd"
    # Who may ask for a sync with !sync. Open ({}) means anyone the
    # permissions.commands.sync rule lets run !sync.
    requesters: PermissionRule = Field(default_factory=PermissionRule)
    # Whose ✅ counts. Must name users or a power level: a gate anyone can
    # open is no gate.
    approvers: PermissionRule = Field(default_factory=PermissionRule)
    approvals_required: int = Field(default=1, ge=1, le=10)
    # How long a request stays open for reactions.
    expires_after_s: float = Field(default=1800.0, ge=1.0, le=7 * 24 * 3600.0)
    # The requester's own ✅ does not count.
    four_eyes: bool = True
    # A ✅ proves no device (Element sends reactions unencrypted): with this
    # set, !sync must come from a device cross-signed by its sender, and only
    # `!approve <id>` sent encrypted from such a device approves.
    require_cross_signed_device: bool = False
    # Written into the sync operation: delete resources no longer in Git.
    prune: bool = False
    # Added to the Application's own spec.syncPolicy.syncOptions (a key given
    # here replaces the app's value for that key).
    sync_options: list[str] = Field(default_factory=list)

    @field_validator("application")
    @classmethod
    def _application_shape(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 253 or not _SUBDOMAIN.match(value)):
            raise ValueError("must be a Kubernetes object name (lower case, digits, '-', '.')")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace_shape(cls, value: str) -> str:
        if len(value) > 63 or not _LABEL.match(value):
            raise ValueError("must be a Kubernetes namespace name (lower case, digits, '-')")
        return value

    @field_validator("sync_options")
    @classmethod
    def _sync_option_shape(cls, value: list[str]) -> list[str]:
        for option in value:
            if not _SYNC_OPTION.match(option):
                raise ValueError("each sync option must look like Name=value, e.g. ServerSideApply=true")
        return value

    # A model validator, not a field validator: pydantic does not validate
    # defaults, and the default (empty) rule is exactly what must be refused.
    @model_validator(mode="after")
    def _approvers_not_open(self) -> GatedApp:
        if self.approvers.is_open:
            raise ValueError(
                "approvers: set users or min_power_level; an empty rule would let anyone approve"
            )
        return self


class ApprovalsSettings(Section):
    """Gated apps by chat name, and how syncs are followed."""

    apps: dict[str, GatedApp] = Field(default_factory=dict)
    # How often open requests are checked for expiry.
    expiry_check_interval_s: float = Field(default=15.0, ge=0.1, le=600.0)
    # How often a running sync's Application is read while following it.
    poll_interval_s: float = Field(default=2.0, ge=0.05, le=60.0)
    # A sync still running after this long is reported and no longer followed.
    follow_timeout_s: float = Field(default=1800.0, ge=1.0, le=24 * 3600.0)
    # After the operation succeeded: how long to wait for Synced + Healthy.
    settle_timeout_s: float = Field(default=300.0, ge=0.0, le=3600.0)
    # Out-of-sync resources listed in a prompt before "… and N more".
    prompt_resources_max: int = Field(default=10, ge=0, le=100)

    @field_validator("apps")
    @classmethod
    def _chat_names(cls, value: dict[str, GatedApp]) -> dict[str, GatedApp]:
        for name in value:
            if not CHAT_NAME_PATTERN.match(name):
                raise ValueError(
                    f"app name {name[:64]!r} must be lower case letters, digits, '.', '_' or '-'"
                )
        return value

    @model_validator(mode="after")
    def _one_gate_per_application(self) -> ApprovalsSettings:
        # Two chat names for one Application would make two gates that do not
        # see each other's open requests.
        seen: dict[tuple[str, str], str] = {}
        for name, app in self.apps.items():
            if app.application is None and not _SUBDOMAIN.match(name):
                raise ValueError(f"apps.{name}: set application, the name is no Kubernetes object name")
            key = (app.namespace, application_name(name, app))
            if key in seen:
                raise ValueError(f"apps {seen[key]} and {name} gate the same Application {key[0]}/{key[1]}")
            seen[key] = name
        return self


def application_name(chat_name: str, app: GatedApp) -> str:
    """The Argo CD Application's name: ``application`` or else the chat name."""
    return app.application or chat_name
