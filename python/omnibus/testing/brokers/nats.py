"""NATS 2 with JetStream (Debian package ``nats-server``) on loopback, single node or cluster."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Sequence

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


class NatsServer(Broker):
    """nats-server -js on loopback; with ``routes`` it joins a cluster."""

    kind = "nats"
    program = "nats-server"
    install_hint = "install Debian's nats-server package (make deps)"
    default_start_timeout = 30.0

    def __init__(self, *, jetstream: bool = True, cluster: str | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.jetstream = jetstream
        self.cluster = cluster
        self.routes: list[int] = []  # cluster ports of the other members

    def _ports(self) -> Sequence[str]:
        return ("port", "monitor", "cluster") if self.cluster else ("port", "monitor")

    def _command(self) -> list[str]:
        cmd = [
            self.program, "-a", LOOPBACK, "-p", str(self.ports["port"]),
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
