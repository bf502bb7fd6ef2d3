#!/usr/bin/env python3
"""Splits a perf profile of the server's connect window into the parts of a connection's setup
(docs/benchmarks.md, "Issue 13: connection setup (session 9)").

    PERF=/tmp/connect.data benches/profile/connect_switches.sh BIN redis 10000
    benches/profile/connect_split.py /tmp/connect.data

Each sample goes to the first part (in the order below) whose pattern is in its call stack; the
second table counts samples whose stack holds a pattern anywhere (the parts overlap there).
"""
import collections
import subprocess
import sys

PARTS = [
    ("session read (store)", ["session_with_friends", "session_read"]),
    ("auth_ok (encode + write)", ["Conn::answer"]),
    ("authenticate (receive, parse auth)", ["Conn::authenticate"]),
    ("socket task, rest", ["socket::run"]),
    ("on_upgrade, rest (WebSocket setup, spawn)", ["on_upgrade"]),
    ("hyper/axum HTTP (parse, route, handler, 101)", ["handle_connection"]),
    ("accept", ["TcpListener::accept", "Listener>::accept"]),
    ("Redis client driver", ["redis::aio", "multiplexed_connection"]),
    ("tokio park / epoll", ["park", "epoll_wait"]),
    ("blocking pool", ["blocking::pool"]),
    ("tokio, rest", ["tokio::runtime"]),
]
ANYWHERE = ["malloc", "free", "realloc", "tcp_sendmsg", "tcp_recvmsg", "serde_json", "epoll_ctl",
            "spawn", "futex", "sha1", "Sha1", "sha2", "Sha256"]


def samples(path):
    out = subprocess.run(["perf", "script", "-i", path, "-F", "comm,tid,ip,sym"],
                         capture_output=True, text=True, check=True).stdout
    cur = []
    for line in out.splitlines():
        if not line.strip():
            if cur:
                yield cur
            cur = []
        elif not line.startswith((" ", "\t")):
            cur = []
        else:
            parts = line.strip().split(None, 1)
            cur.append(parts[-1])
    if cur:
        yield cur


def main(path):
    parts, anywhere, n = collections.Counter(), collections.Counter(), 0
    for frames in samples(path):
        n += 1
        stack = " | ".join(frames)
        name = next((name for name, pats in PARTS if any(p in stack for p in pats)), "other")
        parts[name] += 1
        for p in ANYWHERE:
            if p in stack:
                anywhere[p] += 1
    print(f"{n} samples")
    for name, c in parts.most_common():
        print(f"{100 * c / n:6.1f}%  {name}")
    print("anywhere in the stack:")
    for name, c in anywhere.most_common():
        print(f"{100 * c / n:6.1f}%  {name}")


if __name__ == "__main__":
    main(sys.argv[1])
