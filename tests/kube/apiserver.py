"""The tests' import path of ``bot.demo.kube.apiserver`` (one copy: the demo runs the same server)."""

from bot.demo.kube.apiserver import (
    HOST,
    TEST_USER,
    VERSION_INFO,
    Answer,
    Exchange,
    FakeApiServer,
    Fault,
    RecordedRequest,
    Target,
)

__all__ = [
    "HOST",
    "TEST_USER",
    "VERSION_INFO",
    "Answer",
    "Exchange",
    "FakeApiServer",
    "Fault",
    "RecordedRequest",
    "Target",
]
