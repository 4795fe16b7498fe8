"""This machine's view of a port: is something accepting connections there, is something holding it."""

from __future__ import annotations

import socket


def port_open(host: str, port: int, *, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port (readiness: the server is listening)."""
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout_s):
            return True
    except OSError:
        return False


def port_held(host: str, port: int, *, timeout_s: float = 0.5) -> bool:
    """True unless host:port refuses connections (down: is the port free again).

    A connection that hangs means a holder too: a process that stopped accepting (a wedged
    engine, or one's orphaned child) keeps its socket listening, and once its backlog is full
    the kernel drops new connections instead of refusing them. Only a refusal says free.
    """
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout_s):
            return True
    except TimeoutError:
        return True
    except OSError:
        return False
