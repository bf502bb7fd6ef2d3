"""examples/python-bot against the real server: it befriends, answers, and after a restart
answers exactly what arrived while it was down."""

import asyncio
import signal
import subprocess
import sys
import threading

import zajel
from zajel import Relation, ZajelEvent

from conftest import REPO, Recorder, unique

BOT = REPO / "examples" / "python-bot" / "bot.py"


class Bot:
    def __init__(self, url: str, username: str):
        self.proc = subprocess.Popen(
            [sys.executable, str(BOT), "--server", url, "--username", username,
             "--password", "bot-password-1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.output = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.output.append(line)
            if line.startswith("echo-bot ready"):
                self.ready.set()

    async def wait_ready(self):
        for _ in range(300):
            if self.ready.is_set():
                return
            assert self.proc.poll() is None, "".join(self.output)
            await asyncio.sleep(0.05)
        raise AssertionError("bot not ready:\n" + "".join(self.output))

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(timeout=20) == 0, "".join(self.output)


def test_python_echo_bot(server):
    asyncio.run(_bot(server))


async def _bot(server):
    bot_name = unique("echo")
    bot = Bot(server.url, bot_name)
    await bot.wait_ready()

    me = await zajel.register(server.url, unique("zoe"), "password-123")
    rec = Recorder()
    zoe = await zajel.connect(server.url, me.token, rec)
    await zoe.request_friend(bot_name)
    await rec.wait_for(
        lambda e: isinstance(e, ZajelEvent.FRIEND) and e.relation == Relation.FRIENDS,
        "the bot accepting",
    )
    [friend] = await zoe.friends()
    first = await zoe.send(friend.user.id, "ping")

    def echoed(body):
        return lambda e: isinstance(e, ZajelEvent.MESSAGE) and e.message.body == f"echo: {body}"

    await rec.wait_for(echoed("ping"), "the echo")
    bot.stop()

    await zoe.send(first.conversation, "while you were out")
    bot = Bot(server.url, bot_name)
    await bot.wait_ready()
    await rec.wait_for(echoed("while you were out"), "the echo after the bot's restart")
    await asyncio.sleep(0.5)  # room for a wrong second answer to arrive
    bodies = [m.body for m in rec.messages()]
    assert bodies == ["echo: ping", "echo: while you were out"], bodies
    bot.stop()
    zoe.disconnect()
