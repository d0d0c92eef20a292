"""Redis 7 (Debian package ``redis-server``) on loopback, for the redis:// driver."""

from __future__ import annotations

import socket

from ._base import LOOPBACK, Broker


def redis_probe(host: str, port: int, timeout: float = 2.0) -> None:
    """PING, expect +PONG (a server still loading its append-only file answers -LOADING). Raises otherwise."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"PING\r\n")
        reply = s.recv(64)
        if not reply.startswith(b"+PONG"):
            raise ValueError(f"expected +PONG from {host}:{port}, got {reply[:64]!r}")


class Redis(Broker):
    """redis-server on one loopback port; with ``appendonly`` (the default) every write is in the
    append-only file, fsynced, before Redis answers it, so an acknowledged XADD survives a SIGKILL."""

    kind = "redis"
    program = "redis-server"
    install_hint = "install Debian's redis-server package (make deps)"
    default_start_timeout = 30.0

    def __init__(self, *, appendonly: bool = True, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.appendonly = appendonly

    def _prepare(self) -> None:
        lines = [
            f"bind {LOOPBACK}",
            f"port {self.ports['port']}",
            "protected-mode no",
            "daemonize no",
            f"dir {self.dir}",
            'logfile ""',  # stdout, which the harness keeps in the broker's log
            'save ""',  # no RDB snapshots: the append-only file is the persistence
            f"appendonly {'yes' if self.appendonly else 'no'}",
            "appendfsync always",
        ]
        (self.dir / "redis.conf").write_text("\n".join(lines) + "\n")

    def _command(self) -> list[str]:
        return [self.program, str(self.dir / "redis.conf")]

    def _probe(self) -> None:
        redis_probe(LOOPBACK, self.ports["port"])
