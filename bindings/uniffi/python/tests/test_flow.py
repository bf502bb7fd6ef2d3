"""The Python SDK end to end against the real zajel-server binary over loopback."""

import asyncio
import threading
from collections import Counter

import pytest

import zajel
from zajel import ConnectionState, ErrorCode, Relation, ZajelError, ZajelEvent

from conftest import WAIT, Recorder, unique

PASSWORD = "password-123"
# Fast reconnects so the restart test does not wait out the default backoff.
FAST = zajel.ConnectOptions(reconnect_initial_ms=100, reconnect_max_ms=500)


def is_message(body):
    return lambda e: isinstance(e, ZajelEvent.MESSAGE) and e.message.body == body


def is_state(kind):
    return lambda e: isinstance(e, ZajelEvent.STATE) and isinstance(e.state, kind)


async def friends(url):
    """Two registered, connected users who became friends through requests and events."""
    a_name, b_name = unique("ada"), unique("bo")
    a = await zajel.register(url, a_name, PASSWORD)
    b = await zajel.register(url, b_name, PASSWORD)
    assert a.user.username == a_name
    ra, rb = Recorder(), Recorder()
    ada = await zajel.connect(url, a.token, ra, FAST)
    bo = await zajel.connect(url, b.token, rb, FAST)
    assert isinstance(ada.state(), ConnectionState.ONLINE)
    assert ada.user().id == a.user.id

    status = await ada.request_friend(b_name)
    assert status.relation == Relation.REQUEST_SENT
    request = await rb.wait_for(
        lambda e: isinstance(e, ZajelEvent.FRIEND) and e.relation == Relation.REQUEST_RECEIVED,
        "friend request",
    )
    assert request.user.id == a.user.id
    assert request.reason == zajel.FriendReason.REQUESTED
    status = await bo.accept_friend(a.user.id)
    assert status.relation == Relation.FRIENDS
    await ra.wait_for(
        lambda e: isinstance(e, ZajelEvent.FRIEND) and e.relation == Relation.FRIENDS,
        "friend accepted",
    )
    listed = await ada.friends()
    assert [(f.user.id, f.relation) for f in listed] == [(b.user.id, Relation.FRIENDS)]
    return a, b, ada, bo, ra, rb


def test_friends_messages_history_and_restart(server):
    asyncio.run(_flow(server))


async def _flow(server):
    a, b, ada, bo, ra, rb = await friends(server.url)

    # Both ways, live, through the listener.
    m1 = await ada.send(b.user.id, "hello bo")
    conv = m1.conversation
    assert (m1.seq, m1.sender) == (1, a.user.id)
    assert ada.conversation_with(b.user.id) == conv
    got = await rb.wait_for(is_message("hello bo"), "message to bo")
    assert got.replayed is False and got.message.id == m1.id
    await ra.wait_for(lambda e: isinstance(e, ZajelEvent.SENT) and e.message.id == m1.id, "sent")
    m2 = await bo.send(conv, "hello ada")
    await ra.wait_for(is_message("hello ada"), "message to ada")

    # Typing and read marks reach the peer.
    bo.typing(conv, True)
    await ra.wait_for(lambda e: isinstance(e, ZajelEvent.TYPING) and e.active, "typing")
    assert await ada.mark_read(conv, m2.seq) == 2
    await rb.wait_for(lambda e: isinstance(e, ZajelEvent.READ) and e.seq == 2, "read mark")
    [summary] = await bo.conversations(None)
    assert (summary.conversation, summary.peer_read_seq, summary.last_seq) == (conv, 2, 2)

    page = await ada.history(conv, zajel.HistoryQuery())
    assert [(m.seq, m.body) for m in page.messages] == [(1, "hello bo"), (2, "hello ada")]
    older = await ada.history(conv, zajel.HistoryQuery(before=2, limit=1))
    assert [m.body for m in older.messages] == ["hello bo"]

    # The server restarts. A message sent while it is down waits in the outbox and is
    # stored once it is back; both clients reconnect by themselves.
    address = server.url.removeprefix("http://")
    server.stop()
    await ra.wait_for(is_state(ConnectionState.RECONNECTING), "reconnecting")
    pending = asyncio.ensure_future(ada.send(conv, "sent while the server was down"))
    await asyncio.sleep(0.5)
    assert not pending.done(), "a send completes only once the server stored it"
    server.start(address)
    m3 = await asyncio.wait_for(pending, WAIT)
    assert m3.seq == 3
    await rb.wait_for(is_message("sent while the server was down"), "message after restart")
    await bo.wait_online()
    m4 = await bo.send(conv, "welcome back")
    await ra.wait_for(is_message("welcome back"), "reply after restart")
    assert m4.seq == 4

    # Nothing lost, nothing twice: the history has no gaps, and each client saw each
    # message from the other exactly once.
    page = await bo.history(conv, zajel.HistoryQuery())
    assert [m.seq for m in page.messages] == [1, 2, 3, 4]
    assert [m.id for m in page.messages] == [m1.id, m2.id, m3.id, m4.id]
    assert Counter(m.id for m in rb.messages()) == {m1.id: 1, m3.id: 1}
    assert Counter(m.id for m in ra.messages()) == {m2.id: 1, m4.id: 1}
    assert ada.cursors().cursors[conv] == 4

    # Every event came on one thread of the SDK's, not on this asyncio loop's thread.
    assert len(ra.threads) == 1 and threading.get_ident() not in ra.threads

    ada.disconnect()
    await ra.wait_for(is_state(ConnectionState.CLOSED), "closed")
    with pytest.raises(ZajelError.Closed):
        await ada.ping()
    await bo.logout()
    with pytest.raises(ZajelError.SignedOut):
        await zajel.whoami(server.url, b.token)


def test_resume_from_saved_cursors(server):
    asyncio.run(_resume(server))


async def _resume(server):
    """An app restart: the cursors saved by one client make the next replay exactly what
    it missed."""
    a, b, ada, bo, ra, rb = await friends(server.url)
    m1 = await bo.send(a.user.id, "seen before the restart")
    await ra.wait_for(is_message(m1.body), "first message")
    saved = ada.cursors()
    assert saved.cursors == {m1.conversation: 1}
    ada.disconnect()

    missed = [await bo.send(m1.conversation, f"missed {i}") for i in range(3)]
    again = Recorder()
    ada2 = await zajel.connect(
        server.url, a.token, again, zajel.ConnectOptions(resume_from=saved)
    )
    await again.wait_for(is_message("missed 2"), "replayed messages")
    delivered = [(m.id, e.replayed) for e in again.snapshot()
                 if isinstance(e, ZajelEvent.MESSAGE) for m in [e.message]]
    assert delivered == [(m.id, True) for m in missed]
    synced = await again.wait_for(lambda e: isinstance(e, ZajelEvent.SYNCED), "synced")
    assert synced.first is True
    ada2.disconnect()
    bo.disconnect()


def test_typed_errors(server):
    asyncio.run(_errors(server))


async def _errors(server):
    url = server.url
    name = unique("eve")
    session = await zajel.register(url, name, PASSWORD)

    with pytest.raises(ZajelError.Rejected) as taken:
        await zajel.register(url, name, PASSWORD)
    assert taken.value.code == ErrorCode.USERNAME_TAKEN
    assert zajel.error_code_wire_name(taken.value.code) == "username_taken"
    with pytest.raises(ZajelError.Rejected) as wrong:
        await zajel.login(url, name, "not-the-password")
    assert wrong.value.code == ErrorCode.INVALID_CREDENTIALS
    with pytest.raises(ZajelError.InvalidUrl):
        await zajel.login("ftp://127.0.0.1:1", name, PASSWORD)
    with pytest.raises(ZajelError.Transport):
        # Nothing listens on port 1.
        await zajel.login("http://127.0.0.1:1", name, PASSWORD)
    with pytest.raises(ZajelError.SignedOut):
        await zajel.connect(url, "not-a-token", Recorder())

    rec = Recorder()
    eve = await zajel.connect(url, session.token, rec)
    stranger = await zajel.register(url, unique("sam"), PASSWORD)
    with pytest.raises(ZajelError.Rejected) as refused:
        await eve.send(stranger.user.id, "hi")
    assert refused.value.code == ErrorCode.NOT_FRIENDS
    with pytest.raises(ZajelError.Rejected) as missing:
        await eve.request_friend(unique("nobody"))
    assert missing.value.code == ErrorCode.USER_NOT_FOUND
    for bad in ["", "bob", "dm.1.2", "00000000-0000-4000-8000"]:
        with pytest.raises(ZajelError.InvalidArgument):
            await eve.send(bad, "x")
        with pytest.raises(ZajelError.InvalidArgument):
            await eve.block(bad)
        with pytest.raises(ZajelError.InvalidArgument):
            eve.typing(bad, True)
        with pytest.raises(ZajelError.InvalidArgument):
            await eve.history(bad, zajel.HistoryQuery())
    with pytest.raises(ZajelError.InvalidArgument):
        await zajel.connect(
            url, session.token, Recorder(),
            zajel.ConnectOptions(resume_from=zajel.ResumeCursors(cursors={"nope": 1})),
        )
    # None of that broke the connection.
    await eve.ping()
    assert isinstance(eve.state(), ConnectionState.ONLINE)
    eve.disconnect()


class Flaky(Recorder):
    """Raises on every other event."""

    def on_event(self, event):
        super().on_event(event)
        if len(self.events) % 2 == 1:
            raise RuntimeError("listener bug")


def test_a_raising_listener_does_not_stop_delivery(server):
    asyncio.run(_flaky(server))


async def _flaky(server):
    a, b, ada, bo, ra, rb = await friends(server.url)
    ada.disconnect()
    flaky = Flaky()
    ada2 = await zajel.connect(server.url, a.token, flaky)
    for i in range(4):
        await bo.send(a.user.id, f"n{i}")
    await flaky.wait_for(is_message("n3"), "the last message")
    assert [m.body for m in flaky.messages()] == ["n0", "n1", "n2", "n3"]
    ada2.disconnect()
    bo.disconnect()


def test_outbox_queue_and_storage(server, tmp_path):
    asyncio.run(_outbox(server, tmp_path))


async def _outbox(server, tmp_path):
    a, b, ada, bo, ra, rb = await friends(server.url)
    ada.disconnect()

    # A client keeping its cursors and outbox in a file.
    path = str(tmp_path / "ada-state.json")
    first = Recorder()
    ada1 = await zajel.connect(server.url, a.token, first, zajel.ConnectOptions(storage_path=path))

    # queue(): the entry at once, then its way through the outbox as events, by key.
    item = ada1.queue(b.user.id, "queued")
    assert isinstance(item.state, zajel.SendState.QUEUED) and item.body == "queued"
    sent = await first.wait_for(
        lambda e: isinstance(e, ZajelEvent.OUTBOX) and e.item.key == item.key
        and isinstance(e.item.state, zajel.SendState.SENT),
        "outbox entry sent",
    )
    assert sent.item.state.message.body == "queued"
    await rb.wait_for(is_message("queued"), "queued message delivered")
    assert ada1.outbox() == []
    with pytest.raises(ZajelError.Rejected) as empty:
        ada1.queue(b.user.id, "")
    assert empty.value.code == ErrorCode.EMPTY_BODY
    with pytest.raises(ZajelError.InvalidArgument):
        await ada1.retry_send("no-such-key")

    m1 = await bo.send(a.user.id, "before the restart")
    await first.wait_for(is_message(m1.body), "message before the restart")
    ada1.disconnect()
    await first.wait_for(is_state(ConnectionState.CLOSED), "closed")

    # The "app restart": a new client on the same file resumes from the stored cursors and
    # gets exactly what it missed, with no resume_from given.
    missed = await bo.send(m1.conversation, "while the app was closed")
    again = Recorder()
    ada2 = await zajel.connect(server.url, a.token, again, zajel.ConnectOptions(storage_path=path))
    await again.wait_for(is_message(missed.body), "the missed message")
    assert [(m.id) for m in again.messages()] == [missed.id]
    ada2.disconnect()
    bo.disconnect()
