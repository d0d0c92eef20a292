"""NATS 2 with JetStream (Debian package ``nats-server``) on loopback, single node or cluster."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import urllib.request
from collections.abc import Sequence
from typing import Literal

from ._base import LOOPBACK, Broker, Cluster


def nats_probe(host: str, port: int, timeout: float = 2.0) -> None:
    """Read INFO, send CONNECT + PING, expect PONG. Raises otherwise."""
    with socket.create_connection((host, port), timeout=timeout) as s, s.makefile("rb") as f:
        info = f.readline()
        if not info.startswith(b"INFO "):
            raise ValueError(f"no INFO from {host}:{port}: {info[:80]!r}")
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"name":"omnibus-probe"}\r\nPING\r\n')
        line = f.readline()
        if line.strip() != b"PONG":
            raise ValueError(f"expected PONG from {host}:{port}, got {line[:80]!r}")


def jetstream_ready(host: str, monitor_port: int, timeout: float = 2.0) -> None:
    """The monitoring endpoint says the server, and JetStream, are healthy."""
    url = f"http://{host}:{monitor_port}/healthz?js-enabled-only=true"
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        body = json.loads(r.read() or b"{}")
    if body.get("status") != "ok":
        raise ValueError(f"healthz: {body}")


def _crc16(data: bytes) -> int:
    # CRC-16/XMODEM (polynomial 0x1021, initial 0), the checksum NKey strings end with.
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _nkey_text(raw: bytes) -> str:
    raw += _crc16(raw).to_bytes(2, "little")
    return base64.b32encode(raw).decode().rstrip("=")


def make_user_nkey() -> tuple[str, str]:
    """A fresh NATS user NKey: (public key "U...", seed "SU..."), as NATS' nkeys encode them
    (base32 of a prefix byte, the Ed25519 key and a CRC-16)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    user, seed_prefix = 20 << 3, 18 << 3  # the prefix bytes of "U" (user) and "S" (seed)
    seed_head = bytes([seed_prefix | (user >> 5), (user & 31) << 3])
    return _nkey_text(bytes([user]) + public), _nkey_text(seed_head + seed)


class NatsServer(Broker):
    """nats-server -js on loopback; with ``routes`` it joins a cluster.

    Secured: ``tls=True`` serves TLS only (certificates from
    :func:`omnibus.testing.certs.make_pki`, in ``self.pki``; client certificates
    are checked when given, not required); ``auth="users"`` admits user
    ``omnibus`` with ``self.password`` and the NKey ``self.nkey`` (seed file
    ``self.nkey_seed_file``), ``auth="token"`` admits ``self.token``.
    """

    kind = "nats"
    program = "nats-server"
    install_hint = "install Debian's nats-server package (make deps)"
    default_start_timeout = 30.0

    def __init__(self, *, jetstream: bool = True, cluster: str | None = None, tls: bool = False,
                 auth: Literal["users", "token"] | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.jetstream = jetstream
        self.cluster = cluster
        self.routes: list[int] = []  # cluster ports of the other members
        self.tls = tls
        self.auth = auth
        self.pki = self._certificates(tls)
        self.password = secrets.token_hex(12)
        self.token = secrets.token_hex(16)
        self.nkey_seed_file = self.dir / "user.nk"
        self.nkey = ""
        if auth == "users":  # only then: making one needs the cryptography package (the test extra)
            self.nkey, seed = make_user_nkey()
            self.nkey_seed_file.write_text(seed + "\n")
            self.nkey_seed_file.chmod(0o600)

    def _prepare(self) -> None:
        lines = []
        if self.pki:
            lines.append(f'tls {{ cert_file: "{self.pki.server_cert}", key_file: "{self.pki.server_key}", '
                         f'ca_file: "{self.pki.ca}", timeout: 5 }}')
        if self.auth == "users":
            # "limited" may use core NATS subjects under plain.> only: no JetStream API.
            lines.append(f'authorization {{ users: [ {{ user: "omnibus", password: "{self.password}" }}, '
                         f'{{ nkey: "{self.nkey}" }}, '
                         f'{{ user: "limited", password: "{self.password}", permissions: {{ '
                         f'publish: ["plain.>"], subscribe: ["plain.>", "_INBOX.>"] }} }} ] }}')
        elif self.auth == "token":
            lines.append(f'authorization {{ token: "{self.token}" }}')
        (self.dir / "nats.conf").write_text("\n".join(lines) + "\n")

    def _ports(self) -> Sequence[str]:
        return ("port", "monitor", "cluster") if self.cluster else ("port", "monitor")

    def _command(self) -> list[str]:
        cmd = [
            self.program, "-c", str(self.dir / "nats.conf"), "-a", LOOPBACK, "-p", str(self.ports["port"]),
            "-m", str(self.ports["monitor"]), "-n", self.name,
        ]  # fmt: skip
        if self.jetstream:
            cmd += ["-js", "-sd", str(self.dir / "jetstream")]
        if self.cluster:
            cmd += ["--cluster_name", self.cluster, "--cluster", f"nats://{LOOPBACK}:{self.ports['cluster']}"]
            if self.routes:
                cmd += ["--routes", ",".join(f"nats://{LOOPBACK}:{p}" for p in self.routes)]
        return cmd

    def _probe(self) -> None:
        if self.tls or self.auth:
            # A plaintext, anonymous CONNECT would be refused: the INFO line says it is serving.
            with socket.create_connection((LOOPBACK, self.ports["port"]), timeout=2) as s, s.makefile("rb") as f:
                if not f.readline().startswith(b"INFO "):
                    raise ValueError("no INFO yet")
        else:
            nats_probe(LOOPBACK, self.ports["port"])
        if self.jetstream:
            jetstream_ready(LOOPBACK, self.ports["monitor"])


class NatsCluster(Cluster):
    """Three (or n) nats-server nodes routed to each other, JetStream on each."""

    scheme = "nats"

    def __init__(self, size: int = 3, *, name: str = "omnibus") -> None:
        if size < 2:
            raise ValueError("a cluster has at least 2 nodes")
        self.nodes: list[NatsServer] = [NatsServer(name=f"nats-{i}", cluster=name) for i in range(size)]

    def _link(self) -> None:
        for n in self.nodes:
            n.routes = [m.ports["cluster"] for m in self.nodes if m is not n]

    def routes_connected(self) -> int:
        """Fewest routes any node has (n-1 when the mesh is complete)."""
        counts = []
        for n in self.nodes:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{n.ports['monitor']}/routez", timeout=2) as r:  # noqa: S310
                counts.append(int(json.loads(r.read()).get("num_routes", 0)))
        return min(counts)
