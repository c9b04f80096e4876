"""The Argo CD side of approval tests: a stand-in application controller, gated-app config, event matchers.

Shared by tests/integration/test_approvals.py and the fault and security
suites, which drive the same gate as a subprocess.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nio import Event, RoomMessageNotice

from bot.demo.argocd import GROUP, PLURAL, ApplicationController
from tests.integration.people import Person
from tests.kube.handle import KubeTarget

__all__ = ["GROUP", "PLURAL", "WAIT_S", "Controller", "edit_of", "gated", "in_thread_of", "room_of"]

WAIT_S = 20.0


class Controller(ApplicationController):
    """The Argo CD controller stand-in (``bot.demo.argocd``) on a test's namespace, stepped by the test."""

    def __init__(self, kube: KubeTarget) -> None:
        super().__init__(kube.store, kube.namespace)

    async def operation(self, name: str = "cilium") -> dict[str, Any]:
        """The operation the bot writes, once it is there."""
        async with asyncio.timeout(WAIT_S):
            while not (operation := self.app(name).get("operation")):
                await asyncio.sleep(0.05)
        assert isinstance(operation, dict)
        return operation


def gated(kube: KubeTarget, requesters: list[str], approvers: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "namespace": kube.namespace,
        "requesters": {"users": requesters},
        "approvers": {"users": approvers},
        "sync_options": ["ServerSideApply=true"],
    } | extra


def edit_of(prompt_id: str, text: str) -> Callable[[Event], bool]:
    """An edit (m.replace) of the prompt whose new text contains ``text``."""

    def matches(event: Event) -> bool:
        if not isinstance(event, RoomMessageNotice):
            return False
        content = event.source.get("content", {})
        relates = content.get("m.relates_to", {})
        new = content.get("m.new_content", {})
        return (
            relates.get("rel_type") == "m.replace"
            and relates.get("event_id") == prompt_id
            and text in str(new.get("body", ""))
        )

    return matches


def in_thread_of(prompt_id: str, text: str) -> Callable[[Event], bool]:
    def matches(event: Event) -> bool:
        if not isinstance(event, RoomMessageNotice):
            return False
        relates = event.source.get("content", {}).get("m.relates_to", {})
        return (
            relates.get("rel_type") == "m.thread"
            and relates.get("event_id") == prompt_id
            and text in event.body
        )

    return matches


async def room_of(alice: Person, bob: Person, bot_user: str, *others: Person) -> str:
    room = await alice.create_room(
        "platform", encrypted=True, invite=[bot_user, bob.user_id, *(p.user_id for p in others)]
    )
    for person in (bob, *others):
        await person.join(room)
    return room
