"""Is a port free again after a stop: only a refusal says so; a listener that stopped accepting holds it."""

from __future__ import annotations

import socket

from flashspark.cluster.ports import port_held, port_open


def test_a_listener_that_never_accepts_holds_its_port_after_its_backlog_fills() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        pending: list[socket.socket] = []
        try:
            while len(pending) < 16:  # fill the accept queue: the kernel then drops new connections
                try:
                    pending.append(socket.create_connection(("127.0.0.1", port), timeout=0.3))
                except TimeoutError:
                    break
            # The backlog is full: new connections hang instead of being refused.
            assert port_held("127.0.0.1", port, timeout_s=0.3)
            assert not port_open("127.0.0.1", port, timeout_s=0.3)
        finally:
            for connection in pending:
                connection.close()


def test_a_closed_port_is_free() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert not port_held("127.0.0.1", port)
