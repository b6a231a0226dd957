"""Ports for local servers (an instance's app, a test's closed port) that nothing else will take a moment later.

A port from the kernel's ephemeral range (what a bind to port 0 hands out) can be taken right after it was
released by an outgoing connection (HAProxy's checks, the load, the AWS clients); the app's bind then fails,
its health check fails, and the agent ABANDONs a launch that had nothing wrong with it (commit 6640ba4).
So every local port is picked BELOW that range.
"""

from __future__ import annotations

import os
import socket


class NoFreePort(RuntimeError):
    pass


def ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(v) for v in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_HANDED_OUT: set = set()  # every port this process handed out without a caller's own set


def free_port(taken: set | None = None, host: str = "127.0.0.1", attempts: int = 200) -> int:
    """A port free now, not in `taken` (ports handed out but maybe not bound yet; the port is added to it;
    default: every port this process handed out so far), and below the ephemeral range. Processes start their
    search at different places (by pid) so that two test runs or fleets on one machine rarely probe the same
    ports."""
    taken = _HANDED_OUT if taken is None else taken
    low = ephemeral_range()[0]
    first = max(1024, low - 12000)
    span = low - first
    start = (os.getpid() * 7919 + len(taken) * 13) % span
    for n in range(attempts):
        port = first + (start + n * 101) % span
        if port in taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise NoFreePort(f"no free port below the ephemeral range ({first}-{low - 1}) in {attempts} attempts")
