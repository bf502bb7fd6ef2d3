"""Fixtures: a real zajel-server binary on a free loopback port, and event recorders."""

import asyncio
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

import zajel

REPO = Path(__file__).resolve().parents[4]
WAIT = 15.0  # seconds an expected event may take


def server_binary() -> Path:
    if os.environ.get("ZAJEL_SERVER_BIN"):
        return Path(os.environ["ZAJEL_SERVER_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    return target / "debug" / "zajel-server"


class Server:
    """The standalone server on the embedded store in `data_dir`; restartable on its port."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.proc = None
        self.url = None
        self.log = []

    def start(self, listen: str = "127.0.0.1:0") -> None:
        binary = server_binary()
        if not binary.exists():
            raise RuntimeError(f"{binary} not found: run cargo build -p zajel-server")
        self.proc = subprocess.Popen(
            [
                str(binary),
                "--listen", listen,
                "--data-dir", str(self.data_dir),
                # Cheap password hashing: these tests are about the SDK, not argon2's cost.
                "--argon2-memory-kib", "1024",
                "--argon2-iterations", "1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        deadline = time.monotonic() + 30
        for line in self.proc.stdout:
            self.log.append(line)
            m = re.search(r"listening on (http://[0-9.:]+)", line)
            if m:
                self.url = m.group(1)
                break
            if time.monotonic() > deadline:
                break
        if self.url is None:
            self.proc.kill()
            raise RuntimeError("zajel-server did not start:\n" + "".join(self.log))
        # Keep draining its output so the pipe never fills up.
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()

    def _drain(self, proc) -> None:
        for line in proc.stdout:
            self.log.append(line)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        """Stops the server and starts it again on the same address and data."""
        address = self.url.removeprefix("http://")
        self.stop()
        self.url = None
        self.start(address)


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "data")
    s.start()
    yield s
    s.stop()


class Recorder(zajel.EventListener):
    """An EventListener that keeps every event; tests wait on it from asyncio."""

    def __init__(self):
        self.events = []
        self.lock = threading.Lock()
        self.threads = set()

    def on_event(self, event):
        with self.lock:
            self.events.append(event)
            self.threads.add(threading.get_ident())

    def snapshot(self):
        with self.lock:
            return list(self.events)

    async def wait_for(self, predicate, what: str, timeout: float = WAIT):
        """The first recorded event matching `predicate`; fails the test after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.snapshot():
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                kinds = [type(e).__name__ for e in self.snapshot()]
                raise AssertionError(f"no {what} event within {timeout} s; got {kinds}")
            await asyncio.sleep(0.02)

    def messages(self):
        """Messages delivered by `Message` events, in order."""
        return [e.message for e in self.snapshot() if isinstance(e, zajel.ZajelEvent.MESSAGE)]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"
