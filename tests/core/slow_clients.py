"""Slow-header clients (slowloris) on loopback, and a probe that times ordinary requests meanwhile.

Used by ``tests/core/test_slow_clients.py`` (correctness) and ``benchmarks/bench_slow_clients.py``
(latency figures). Every loop is bounded in count and in time; only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

LOOPBACK = "127.0.0.1"


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft open-files limit towards ``wanted`` (never past the hard limit); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


@dataclass
class SlowClients:
    """``count`` connections to ``port`` that send a request one byte every ``interval`` seconds.

    The request never completes: after the request line, each connection sends an endless header one
    byte at a time, as a slowloris client does (or, given an ``opening`` with a whole head declaring a
    body, the body one byte at a time, as an R-U-D-Y client does). A connection the server closes is reopened (up to
    ``max_reopen`` times in all), so the pressure stays at ``count`` for as long as the clients run.
    """

    port: int
    count: int
    interval: float = 1.0
    max_reopen: int = 5000
    path: str = "/healthz"
    opening: bytes = b""
    """What each connection sends first (default: a request line and the start of an endless header)."""
    opened: int = 0
    reopened: int = 0
    closed_by_server: int = 0
    _socks: list[socket.socket] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((LOOPBACK, self.port), timeout=5)
        sock.sendall(self.opening or f"GET {self.path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nX-Slow: ".encode())
        sock.setblocking(False)
        self.opened += 1
        return sock

    def start(self, open_within: float = 20.0) -> SlowClients:
        """Open the connections (bounded by ``open_within`` seconds) and start trickling."""
        deadline = time.monotonic() + open_within
        while len(self._socks) < self.count and time.monotonic() < deadline:
            try:
                self._socks.append(self._connect())
            except OSError:
                time.sleep(0.05)
        self._thread = threading.Thread(target=self._trickle, name="slow-clients", daemon=True)
        self._thread.start()
        return self

    def _trickle(self) -> None:
        while not self._stop.wait(self.interval):
            for index, sock in enumerate(self._socks):
                if self._stop.is_set():
                    return
                try:
                    sock.send(b"a")
                except BlockingIOError:
                    continue
                except OSError:
                    self.closed_by_server += 1
                    sock.close()
                    if self.reopened < self.max_reopen:
                        with contextlib.suppress(OSError):
                            self._socks[index] = self._connect()
                            self.reopened += 1

    def open_count(self) -> int:
        return sum(1 for sock in self._socks if sock.fileno() != -1)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for sock in self._socks:
            sock.close()
        self._socks.clear()

    def __enter__(self) -> SlowClients:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_sockets(master_pid: int) -> int:
    """Sockets held by the worker processes of the gunicorn master ``master_pid`` (from /proc)."""
    total = 0
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
        for child in children:
            with contextlib.suppress(OSError):
                for fd in Path(f"/proc/{child}/fd").iterdir():
                    with contextlib.suppress(OSError):
                        total += os.readlink(fd).startswith("socket:")
    return total


def wait_until_held(master_pid: int, count: int, within: float = 15.0) -> int:
    """Wait (at most ``within`` seconds) until the workers hold ``count`` sockets; returns how many they hold."""
    deadline = time.monotonic() + within
    held = server_sockets(master_pid)
    while held < count and time.monotonic() < deadline:
        time.sleep(0.2)
        held = server_sockets(master_pid)
    return held


def timed_get(url: str, timeout: float, **kwargs: object) -> tuple[float, requests.Response | None]:
    """``(seconds, response)`` of one GET on a fresh connection; response is None on timeout/error."""
    started = time.perf_counter()
    try:
        response = requests.get(url, timeout=timeout, **kwargs)  # type: ignore[arg-type]
    except requests.RequestException:
        return time.perf_counter() - started, None
    return time.perf_counter() - started, response
