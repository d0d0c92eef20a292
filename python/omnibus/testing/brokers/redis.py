"""Redis 7 (Debian package ``redis-server``) on loopback, for the redis:// driver."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Sequence

from ._base import LOOPBACK, Broker


def redis_probe(host: str, port: int, timeout: float = 2.0, password: str | None = None) -> None:
    """PING (after AUTH when a password is given), expect +PONG (a server still loading its
    append-only file answers -LOADING). Raises otherwise."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        if password:
            s.sendall(f"AUTH {password}\r\n".encode())
            if not s.recv(64).startswith(b"+OK"):
                raise ValueError(f"AUTH refused by {host}:{port}")
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

    def __init__(self, *, appendonly: bool = True, tls: bool = False, auth: bool = False, **kwargs: object) -> None:
        """``auth``: the default user needs ``self.password``. ``tls``: a second port ("tls")
        serves TLS with the harness CA (``self.pki``), client certificates checked when given."""
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.appendonly = appendonly
        self.auth = auth
        self.password = secrets.token_hex(12)
        self.pki = self._certificates(tls)

    def _ports(self) -> Sequence[str]:
        return ("port", "tls") if self.pki else ("port",)

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
        if self.auth:
            lines.append(f"requirepass {self.password}")
        if self.pki:
            lines += [f"tls-port {self.ports['tls']}", f"tls-cert-file {self.pki.server_cert}",
                      f"tls-key-file {self.pki.server_key}", f"tls-ca-cert-file {self.pki.ca}",
                      "tls-auth-clients optional"]
        (self.dir / "redis.conf").write_text("\n".join(lines) + "\n")

    def _command(self) -> list[str]:
        return [self.program, str(self.dir / "redis.conf")]

    def _probe(self) -> None:
        redis_probe(LOOPBACK, self.ports["port"], password=self.password if self.auth else None)
