"""The baseline: the barest matrix-nio bot that answers `!ping` in an encrypted room.

It replies inline from the sync callback, with no store, queue or checks,
which is the fastest a nio bot can answer. readybot's round trip is compared
against this one.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from nio import AsyncClient, AsyncClientConfig, InviteMemberEvent, LoginResponse, MatrixRoom, RoomMessageText


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--homeserver", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--store", type=Path, required=True)
    args = parser.parse_args()
    args.store.mkdir(parents=True, exist_ok=True)
    client = AsyncClient(
        args.homeserver,
        args.user,
        store_path=str(args.store),
        config=AsyncClientConfig(encryption_enabled=True),
    )
    login = await client.login(args.password, device_name="echo")
    if not isinstance(login, LoginResponse):
        print(f"login failed: {login}", file=sys.stderr)
        return 1
    await client.keys_upload()
    await client.sync(timeout=0, full_state=True)

    async def on_invite(room: MatrixRoom, event: InviteMemberEvent) -> None:
        if event.state_key == client.user_id and event.membership == "invite":
            await client.join(room.room_id)

    async def on_text(room: MatrixRoom, event: RoomMessageText) -> None:
        if event.sender == client.user_id or event.body != "!ping":
            return
        content = {
            "msgtype": "m.notice",
            "body": "pong",
            "m.relates_to": {"m.in_reply_to": {"event_id": event.event_id}},
        }
        await client.room_send(room.room_id, "m.room.message", content, ignore_unverified_devices=True)

    client.add_event_callback(on_invite, InviteMemberEvent)
    client.add_event_callback(on_text, RoomMessageText)
    for room_id in list(client.invited_rooms):
        await client.join(room_id)
    print("READY", flush=True)
    try:
        await client.sync_forever(timeout=30_000)
    finally:
        await client.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
