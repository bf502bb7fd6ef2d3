#!/usr/bin/env python3
"""The echo bot, in Python, on the Zajel Python SDK (asyncio).

    ZAJEL_BOT_PASSWORD=… python bot.py --server http://127.0.0.1:8080 --username echo

(``--password`` works too, but a password on the command line is visible to other users in
``ps``: prefer the variable). It signs in (registering the account on first
run), accepts every friend request, and answers each message from someone else with
``echo: <body>``, marking it read. The read mark is its memory: after every (re)connection
it reads each conversation's history above its mark and answers what it has not answered,
so messages that arrived while it was offline, or while it was down, are answered once.
Stop it with Ctrl-C.
"""

import argparse
import asyncio
import os
import signal
import sys

import zajel
from zajel import ErrorCode, Relation, ZajelError, ZajelEvent


class Inbox(zajel.EventListener):
    """Hands events from the SDK's event thread to the asyncio loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()

    def on_event(self, event):
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)


async def sign_in(server: str, username: str, password: str) -> zajel.Session:
    try:
        return await zajel.login(server, username, password)
    except ZajelError.Rejected as e:
        if e.code != ErrorCode.INVALID_CREDENTIALS:
            raise
        return await zajel.register(server, username, password)


async def accept(client: zajel.ZajelClient, user_id: str) -> None:
    try:
        status = await client.accept_friend(user_id)
        log(f"now friends with {status.user.username}")
    except ZajelError as e:
        log(f"accepting {user_id} failed: {e}")


class Bot:
    def __init__(self, client: zajel.ZajelClient, me: str):
        self.client = client
        self.me = me
        self.answered = set()  # (conversation, seq): guards against a live + history overlap

    async def echo(self, message: zajel.Message) -> None:
        key = (message.conversation, message.seq)
        if message.sender == self.me or key in self.answered:
            return  # mine (from another device), or answered already
        self.answered.add(key)
        try:
            await self.client.send(message.conversation, f"echo: {message.body}")
            await self.client.mark_read(message.conversation, message.seq)
        except ZajelError as e:
            log(f"answering #{message.seq} failed: {e}")

    async def catch_up(self, conversations) -> None:
        """Answers what is above the read mark (a fresh client replays nothing old)."""
        for c in conversations:
            after = c.read_seq
            while after < c.last_seq:
                page = await self.client.history(
                    c.conversation, zajel.HistoryQuery(after=after, limit=100)
                )
                for m in page.messages:
                    await self.echo(m)
                if not page.messages:
                    break
                after = page.messages[-1].seq

    async def handle(self, event) -> bool:
        """Handles one event; False once the client stopped."""
        if isinstance(event, ZajelEvent.FRIEND) and event.relation == Relation.REQUEST_RECEIVED:
            await accept(self.client, event.user.id)
        elif isinstance(event, ZajelEvent.MESSAGE) and not event.replayed:
            await self.echo(event.message)
        elif isinstance(event, ZajelEvent.SYNCED):
            # Replayed messages are covered here: they are above the read mark too.
            for f in event.friends:
                if f.relation == Relation.REQUEST_RECEIVED:
                    await accept(self.client, f.user.id)
            await self.catch_up(event.conversations)
        elif isinstance(event, ZajelEvent.STATE):
            log(f"connection {event.state}")
            stopped = (zajel.ConnectionState.SIGNED_OUT, zajel.ConnectionState.CLOSED)
            return not isinstance(event.state, stopped)
        return True


async def run(server: str, username: str, password: str) -> None:
    session = await sign_in(server, username, password)
    log(f"signed in as {session.user.username} ({session.user.id})")
    loop = asyncio.get_running_loop()
    inbox = Inbox(loop)
    client = await zajel.connect(server, session.token, inbox)
    bot = Bot(client, session.user.id)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("echo-bot ready", flush=True)

    stopping = asyncio.ensure_future(stop.wait())
    while True:
        getter = asyncio.ensure_future(inbox.queue.get())
        done, _ = await asyncio.wait({getter, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            break
        if not await bot.handle(getter.result()):
            break
    client.disconnect()
    log("bye")


def log(text: str) -> None:
    print(f"echo-bot: {text}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Zajel echo bot (Python SDK)")
    parser.add_argument("--server", default="http://127.0.0.1:8080")
    parser.add_argument("--username", default="echo")
    parser.add_argument("--password", default=os.environ.get("ZAJEL_BOT_PASSWORD"))
    args = parser.parse_args()
    if not args.password:
        parser.error("--password (or ZAJEL_BOT_PASSWORD) is required")
    asyncio.run(run(args.server, args.username, args.password))


if __name__ == "__main__":
    main()
