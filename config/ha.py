"""Settings of running two replicas with one leader (issue 16).

Off by default: one replica behaves as it always did. With ``enabled`` each
replica competes for a ``coordination.k8s.io/v1`` Lease; only its holder
acts. The durations are client-go's leader-election defaults.
"""

from __future__ import annotations

import os
import re
import socket

from pydantic import Field, field_validator, model_validator

from config.base import Section

# A Lease name and a namespace are DNS labels/subdomains; the identity is
# written into the Lease's holderIdentity and the store's leadership row.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def default_identity() -> str:
    """``POD_NAME`` (the downward API), else the host name (in a pod: the pod's name)."""
    return os.environ.get("POD_NAME") or socket.gethostname()


def default_namespace() -> str:
    """``POD_NAMESPACE`` from the downward API, else ``default``."""
    return os.environ.get("POD_NAMESPACE") or "default"


class HaSettings(Section):
    """Leader election between replicas through a Kubernetes Lease."""

    enabled: bool = False
    # The one Lease the replicas compete for (the Role names it in resourceNames).
    lease_name: str = "readybot-leader"
    namespace: str = Field(default_factory=default_namespace)
    # This replica's name in the Lease; must differ between replicas.
    identity: str = Field(default_factory=default_identity, min_length=1, max_length=253)
    # How long a Lease holds without renewal before another replica may take it.
    lease_duration_s: float = Field(default=15.0, gt=0, le=600)
    # A leader that could not renew for this long stops acting (exits), before
    # its Lease can expire for the others.
    renew_deadline_s: float = Field(default=10.0, gt=0, le=600)
    # Between attempts to acquire or renew.
    retry_period_s: float = Field(default=2.0, gt=0, le=60)

    @field_validator("lease_name")
    @classmethod
    def _lease_name_shape(cls, value: str) -> str:
        if not _DNS_SUBDOMAIN.match(value):
            raise ValueError("must be a DNS subdomain (lower-case letters, digits, '-', '.')")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace_shape(cls, value: str) -> str:
        if not _DNS_LABEL.match(value):
            raise ValueError("must be a DNS label (lower-case letters, digits, '-')")
        return value

    @field_validator("identity")
    @classmethod
    def _identity_shape(cls, value: str) -> str:
        if any(ch.isspace() for ch in value):
            raise ValueError("must not contain white space")
        return value

    @model_validator(mode="after")
    def _durations_ordered(self) -> HaSettings:
        # client-go's rules: a leader must give up before its lease expires
        # for the others, and retry several times within that deadline.
        if not self.renew_deadline_s < self.lease_duration_s:
            raise ValueError("ha.renew_deadline_s must be shorter than ha.lease_duration_s")
        if not self.retry_period_s < self.renew_deadline_s:
            raise ValueError("ha.retry_period_s must be shorter than ha.renew_deadline_s")
        return self
