"""Settings models: one section per area, unknown keys rejected.

Values come from a YAML file, then ``READYBOT_SECTION__KEY`` environment
variables, then secret files (a mounted Kubernetes Secret), each layer
overriding the one before; see ``config.loading``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from config.alertmanager import AlertmanagerSettings
from config.approvals import ApprovalsSettings

# PermissionRule lives in config.base so section modules (approvals) can use it
# without importing this module, which imports them.
from config.base import PermissionRule as PermissionRule  # noqa: PLC0414 - an explicit re-export (mypy)
from config.base import Section
from config.deadman import DeadmanSettings
from config.falco import FalcoSettings
from config.ha import HaSettings
from config.kubernetes import KubernetesSettings
from config.readiness import ReadinessSettings
from config.velero import VeleroSettings

USER_ID_PATTERN = re.compile(r"^@[^:\s]+:[^\s]+$")
ROOM_PATTERN = re.compile(r"^[!#][^\s]+$")


def _not_empty_secret(value: SecretStr) -> SecretStr:
    # An empty hook token would let "Authorization: Bearer " through.
    if not value.get_secret_value():
        raise ValueError("must not be empty")
    return value


class CrossSigningSettings(Section):
    """The bot's cross-signing identity (Element only talks to cross-signed devices since 2026)."""

    # Make, recover or keep the identity and sign the bot's device on start.
    enabled: bool = True
    # Replace an identity the bot does not hold (made in Element, or lost
    # with the bot's state). People's clients show that the identity changed.
    reset: bool = False


class MatrixSettings(Section):
    """How the bot reaches its homeserver and which rooms it serves."""

    homeserver: AnyHttpUrl
    user_id: str
    # Exactly one of password / access_token. With a password the bot logs in
    # once and persists the device id and token in the store, so a restart
    # reuses the same device (and its encryption keys).
    password: SecretStr | None = None
    access_token: SecretStr | None = None
    device_name: str = "readybot"
    encryption: bool = True
    cross_signing: CrossSigningSettings = Field(default_factory=CrossSigningSettings)
    # The account's recovery key (Element: Settings → Encryption → Recovery),
    # used when the account already has a cross-signing identity the bot does
    # not hold: its private keys are decrypted from secret storage.
    recovery_key: SecretStr | None = None
    # The nio crypto store; must persist across restarts or the bot loses the
    # keys it needs to read its encrypted rooms.
    store_dir: Path = Path("state/crypto")
    # Room ids (!abc) or aliases (#ops:example.org) the bot serves. Commands
    # in any other room are ignored; invites to these rooms are accepted.
    rooms: list[str] = Field(default_factory=list)
    # Users whose invites the bot accepts for any room (exact ids or globs
    # such as "@*:example.org").
    invite_from: list[str] = Field(default_factory=list)
    command_prefix: str = "!"
    sync_timeout_ms: int = Field(default=30_000, ge=1_000, le=120_000)
    request_timeout_s: float = Field(default=30.0, gt=0, le=300)
    # Ceiling of the doubling wait between login or sync attempts while the
    # homeserver is unreachable: it bounds how long after the homeserver is
    # back the bot notices (and starts delivering what it queued).
    max_retry_backoff_s: float = Field(default=10.0, ge=1, le=600)

    @field_validator("user_id")
    @classmethod
    def _user_id_shape(cls, value: str) -> str:
        if not USER_ID_PATTERN.match(value):
            raise ValueError("must look like @name:server")
        return value

    @field_validator("rooms")
    @classmethod
    def _room_shape(cls, value: list[str]) -> list[str]:
        for room in value:
            if not ROOM_PATTERN.match(room):
                raise ValueError("each room must be a room id (!…) or an alias (#…:server)")
        return value

    @field_validator("password", "access_token", "recovery_key")
    @classmethod
    def _secret_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty variable (a Helm value left blank) is a mistake, not a
        # credential; it would also count as "set" for the check below.
        return None if value is None else _not_empty_secret(value)

    @field_validator("command_prefix")
    @classmethod
    def _prefix_shape(cls, value: str) -> str:
        if not value or any(ch.isspace() for ch in value) or len(value) > 3:
            raise ValueError("must be 1 to 3 non-space characters")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> MatrixSettings:
        if (self.password is None) == (self.access_token is None):
            raise ValueError("set exactly one of matrix.password and matrix.access_token")
        return self


class HttpSettings(Section):
    """The webhook / health / metrics server."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65_535)
    # Larger bodies are refused with 413 before they are read.
    max_body_bytes: int = Field(default=1_048_576, ge=1_024, le=64 * 1_048_576)
    # Bearer token per hook: a request to /hooks/<name> must carry
    # "Authorization: Bearer <hook_tokens[name]>". A hook without a token is
    # closed (401), never open.
    hook_tokens: dict[str, Annotated[SecretStr, AfterValidator(_not_empty_secret)]] = Field(
        default_factory=dict
    )


class StoreSettings(Section):
    """Where the outbox, audit log and bot state live: a SQLite file, or PostgreSQL with ``url``."""

    path: Path = Path("state/readybot.sqlite3")
    # postgresql://user:password@host:5432/dbname: the state in PostgreSQL
    # (needed to run two replicas). A secret: the password is in it.
    url: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        # The messages never quote the value: it holds a password.
        try:
            parts = urlsplit(value.get_secret_value().strip())
            _ = parts.port  # raises on a port that is not a number
        except ValueError:
            raise ValueError("is not a URL (postgresql://user:password@host:5432/dbname)") from None
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL (postgresql://user:password@host:5432/dbname)")
        if not (parts.hostname or "host=" in parts.query):
            raise ValueError("names no host (postgresql://user:password@host:5432/dbname)")
        return SecretStr(value.get_secret_value().strip())

    def url_password(self) -> str | None:
        """The password inside ``url``, masked in logs on its own too."""
        if self.url is None:
            return None
        return urlsplit(self.url.get_secret_value()).password


class PermissionsSettings(Section):
    """The default rule plus per-command overrides (keyed by command name)."""

    default: PermissionRule = Field(default_factory=PermissionRule)
    commands: dict[str, PermissionRule] = Field(default_factory=dict)

    def rule_for(self, command: str) -> PermissionRule:
        return self.commands.get(command, self.default)


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class OutboxSettings(Section):
    """Retry policy of the durable outbound queue."""

    # Back-off ceiling between attempts while the homeserver is unreachable.
    max_backoff_s: float = Field(default=10.0, gt=0, le=600)
    # A send refused for good (e.g. 403: the bot is not in the room) is
    # tried this many times before the message is marked failed.
    max_attempts_permanent: int = Field(default=5, ge=1, le=100)
    # Rows of one room sent at the same time. Only rows that relate to no
    # other event overlap; replies, edits, reactions and thread lines are
    # sent one after another, each after the event it relates to. 1: every
    # row of a room strictly in order.
    max_in_flight_per_room: int = Field(default=4, ge=1, le=64)


class Settings(BaseModel):
    """The whole configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    matrix: MatrixSettings
    http: HttpSettings = Field(default_factory=HttpSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    permissions: PermissionsSettings = Field(default_factory=PermissionsSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)
    deadman: DeadmanSettings = Field(default_factory=DeadmanSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    approvals: ApprovalsSettings = Field(default_factory=ApprovalsSettings)
    readiness: ReadinessSettings = Field(default_factory=ReadinessSettings)
    velero: VeleroSettings = Field(default_factory=VeleroSettings)
    falco: FalcoSettings = Field(default_factory=FalcoSettings)
    ha: HaSettings = Field(default_factory=HaSettings)

    @model_validator(mode="after")
    def _ha_needs_a_cluster_and_a_shared_store(self) -> Settings:
        # The Lease is read and written through the kubernetes section's connection.
        if self.ha.enabled and not self.kubernetes.enabled:
            raise ValueError("ha.enabled needs kubernetes.enabled (the leader Lease is kept in the cluster)")
        # Two replicas on two SQLite files would fence nothing and share no state.
        if self.ha.enabled and self.store.url is None:
            raise ValueError("ha.enabled needs store.url (PostgreSQL: one store both replicas share)")
        return self

    def secret_values(self) -> list[str]:
        """Every secret's plain value, for the log redaction filter.

        Walks the whole model, so a secret added to any section later is
        masked without anyone remembering to list it here.
        """
        values: list[str] = []
        _collect_secrets(self, values)
        password = self.store.url_password()
        if password:
            values.append(password)
        return values


def _collect_secrets(value: object, into: list[str]) -> None:
    if isinstance(value, SecretStr):
        if value.get_secret_value():
            into.append(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _collect_secrets(getattr(value, name), into)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_secrets(item, into)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect_secrets(item, into)
