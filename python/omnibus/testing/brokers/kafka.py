"""Apache Kafka 4 in KRaft mode (each node broker and controller) on loopback, single node or cluster.

Debian has no Kafka package, so the broker runs from the jars Maven resolves for
``omnibus/testing/kafka/pom.xml`` (Kafka plus a log4j2 binding), copied once into
a cache directory: ``~/.cache/omnibus/kafka-<version>``, or ``$OMNIBUS_KAFKA_HOME``.
``kafka_jars()`` does that on first use; ``make deps`` does it ahead of time.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ._base import LOOPBACK, Broker, BrokerError, Cluster, ProgramMissing, _die_with_parent, program_env

POM = Path(__file__).resolve().parent.parent / "kafka" / "pom.xml"
_MVN_TIMEOUT = 1800.0  # a cold ~/.m2 fetches some 45 MB
_FORMAT_TIMEOUT = 120.0


def pom_property(pom: Path, name: str) -> str:
    """A property of a Maven pom (``kafka.version``, ``pulsar.version``)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find(f"m:properties/m:{name}", ns)
    if node is None or not (node.text or "").strip():
        raise BrokerError(f"{pom} has no <{name}> property")
    return (node.text or "").strip()


def jars_home(product: str, version: str) -> Path:
    """Where a product's jars are cached: $OMNIBUS_<PRODUCT>_HOME, else ~/.cache/omnibus/<product>-<version>."""
    env = os.environ.get(f"OMNIBUS_{product.upper()}_HOME")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "omnibus" / f"{product}-{version}"


def kafka_version() -> str:
    """The Kafka release the pom names (its ``kafka.version`` property)."""
    return pom_property(POM, "kafka.version")


def kafka_home() -> Path:
    """Where the jars are cached: $OMNIBUS_KAFKA_HOME, else ~/.cache/omnibus/kafka-<version>."""
    return jars_home("kafka", kafka_version())


def kafka_jars(download: bool = True) -> Path:
    """The directory of the Kafka jars, fetched with Maven first when it is not there yet.

    Raises ProgramMissing, naming ``make deps``, when that cannot be done.
    """
    return maven_jars(POM, kafka_home(), "kafka_2.13-*.jar", "Kafka", download)


def maven_jars(pom: Path, home: Path, marker: str, product: str, download: bool = True) -> Path:
    """``home/libs``: the jars the pom names, copied there with Maven first when it is not there yet.

    The jars are copied into a private temporary directory and renamed to
    ``libs`` only when Maven succeeded and a jar matching ``marker`` is among
    them, so an existing ``libs`` is always complete, and concurrent callers
    (pytest-xdist workers) cannot see half of it. Raises ProgramMissing,
    naming ``make deps``, when that cannot be done.
    """
    libs = home / "libs"
    if libs.is_dir():
        return libs
    if not download:
        raise ProgramMissing(f"the {product} jars are not in {libs}; run `make deps` to fetch them")
    for tool in ("mvn", "java"):
        if shutil.which(tool) is None:
            raise ProgramMissing(f"{tool} is not installed, so the {product} jars cannot be fetched; run `make deps`")
    home.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="libs.tmp-", dir=home))
    try:
        # A copy of the pom, so Maven writes nothing next to the installed package.
        shutil.copyfile(pom, work / "pom.xml")
        cmd = [
            "mvn", "-q", "-B", "-f", str(work / "pom.xml"),
            "dependency:copy-dependencies", f"-DoutputDirectory={work / 'libs'}",
        ]  # fmt: skip
        try:
            r = subprocess.run(
                cmd, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                timeout=_MVN_TIMEOUT, preexec_fn=_die_with_parent, env=program_env(),
            )  # fmt: skip
        except subprocess.TimeoutExpired as e:
            tail = _tail((e.output or b"").decode(errors="replace"))
            raise ProgramMissing(
                f"fetching the {product} jars took over {_MVN_TIMEOUT:.0f} s; run `make deps`\n{tail}"
            ) from None
        if r.returncode != 0 or not any((work / "libs").glob(marker)):
            tail = _tail(r.stdout.decode(errors="replace"))
            raise ProgramMissing(
                f"Maven could not fetch the {product} jars (exit {r.returncode}); run `make deps`\n"
                f"$ {' '.join(cmd)}\n{tail}"
            )
        try:
            os.rename(work / "libs", libs)
        except OSError:
            if not libs.is_dir():  # not just another process finishing first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return libs


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def new_cluster_id() -> str:
    """A KRaft cluster id as Kafka makes them: a random UUID, base64url without padding.

    Kafka never hands out one starting with '-' (it would read as a command-line flag).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


# ---- the Metadata probe -----------------------------------------------------------

# Metadata v1: the oldest version whose reply carries the controller id, and the
# first where a null topic list means "all topics" (v0 has no null, and its
# empty list would make the probe indistinguishable from a client asking for no
# topic). Kafka 4 still accepts Metadata v0-v13 (KIP-896 removed old versions of
# Produce, Fetch and others, not of Metadata), and v1 is not a flexible version,
# so it needs no varints or tagged fields.
_METADATA = 3
_METADATA_VERSION = 1


@dataclass(frozen=True)
class KafkaMetadata:
    """What one broker's Metadata v1 reply says about the cluster."""

    brokers: dict[int, tuple[str, int]]  # node id -> (host, port)
    controller_id: int  # -1 when the broker knows of none
    topics: dict[str, int] = field(default_factory=dict)  # name -> partitions, topics without error only


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError(f"Metadata reply cut short at byte {self.pos}")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return int(value)

    def string(self) -> str | None:
        n = self.take("!h")
        if n < 0:
            return None
        if self.pos + n > len(self.data):
            raise ValueError(f"Metadata reply cut short at byte {self.pos}")
        s = self.data[self.pos : self.pos + n].decode("utf-8", errors="replace")
        self.pos += n
        return s


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            # Kafka closes the connection on a request it does not accept.
            raise ValueError(f"the broker closed the connection after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def kafka_metadata(
    host: str, port: int, timeout: float = 2.0, topics: Sequence[str] | None = None
) -> KafkaMetadata:
    """One Metadata v1 exchange, for all topics by default.

    Asking for all topics (a null list) creates none. Naming ``topics`` asks for
    those only, and a broker with auto.create.topics.enable creates the missing
    ones (versions before 4 cannot opt out): their first reply lists them with
    an error, which leaves them out of ``KafkaMetadata.topics`` until they exist.
    """
    client_id = b"omnibus-probe"
    correlation = 0x0B05
    header = struct.pack("!hhih", _METADATA, _METADATA_VERSION, correlation, len(client_id)) + client_id
    if topics is None:
        body = struct.pack("!i", -1)  # null: all of them
    else:
        names = [t.encode() for t in topics]
        body = struct.pack("!i", len(names)) + b"".join(struct.pack("!h", len(n)) + n for n in names)
    request = header + body
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(struct.pack("!i", len(request)) + request)
        (size,) = struct.unpack("!i", _recv_exact(s, 4))
        if not 4 <= size <= 64 << 20:
            raise ValueError(f"implausible Metadata reply size {size} from {host}:{port}")
        r = _Reader(_recv_exact(s, size))
    if r.take("!i") != correlation:
        raise ValueError(f"Metadata reply from {host}:{port} answers another request")
    brokers: dict[int, tuple[str, int]] = {}
    for _ in range(r.take("!i")):
        node_id = r.take("!i")
        broker_host = r.string() or ""
        broker_port = r.take("!i")
        r.string()  # rack
        brokers[node_id] = (broker_host, broker_port)
    controller_id = r.take("!i")
    topics: dict[str, int] = {}
    for _ in range(max(r.take("!i"), 0)):
        error = r.take("!h")
        name = r.string()
        r.take("!b")  # is_internal
        partitions = max(r.take("!i"), 0)
        for _ in range(partitions):
            r.take("!h")  # error
            r.take("!i")  # index
            r.take("!i")  # leader
            for _ in range(2):  # replicas, isr
                count = r.take("!i")  # before moving pos: `r.pos += f(r.take())` would lose take's advance
                r.pos += 4 * max(count, 0)
        if error == 0 and name is not None:
            topics[name] = partitions
    return KafkaMetadata(brokers, controller_id, topics)


def kafka_probe(host: str, port: int, timeout: float = 2.0, expect_brokers: int = 1) -> KafkaMetadata:
    """Metadata v1; raises ValueError until `expect_brokers` brokers and a controller are listed.

    A KRaft broker lists only brokers that registered with the controller quorum
    and were unfenced, so this also says the quorum has a leader.
    """
    md = kafka_metadata(host, port, timeout)
    if len(md.brokers) < expect_brokers:
        raise ValueError(f"{host}:{port} lists {len(md.brokers)} of {expect_brokers} brokers: {sorted(md.brokers)}")
    if md.controller_id < 0:
        raise ValueError(f"{host}:{port} knows no controller yet")
    return md


# ---- the broker ---------------------------------------------------------------------

_LOG4J2 = """\
# Written by omnibus: everything from WARN up to stdout, which is the broker log.
status = error
name = omnibus-kafka
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.stdout.ref = STDOUT
"""


class Kafka(Broker):
    """One Kafka node, broker and controller in one JVM, PLAINTEXT on loopback (and
    SASL_PLAINTEXT on a second port, see ``sasl_users``).

    Alone it is its own one-voter quorum; KafkaCluster sets ``voters`` to make
    several nodes one cluster.
    """

    kind = "kafka"
    program = "java"
    install_hint = "install a Java 17 runtime and Maven, which fetches the Kafka jars (make deps)"
    default_start_timeout = 120.0  # a JVM on 2 busy cores: generous, only ever waited by polling

    def __init__(
        self,
        *,
        node_id: int = 1,
        cluster_id: str | None = None,
        replication: int = 1,
        heap: str = "384m",
        log_level: str = "WARN",
        sasl_users: dict[str, str] | None = None,
        tls: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.node_id = node_id
        self.cluster_id = cluster_id or new_cluster_id()
        self.replication = replication
        self.heap = heap
        self.log_level = log_level
        self.voters: dict[int, int] = {}  # node id -> controller port of every voter; empty: just this node
        # user -> password: a second listener (port "sasl") takes SASL_PLAINTEXT
        # logins with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for these users.
        # By default one user "omnibus" with a random password (sasl_url()), so
        # that every test broker can show authentication; {}: no SASL listener.
        self.sasl_users = {"omnibus": secrets.token_hex(12)} if sasl_users is None else dict(sasl_users)
        # With tls, two more listeners with certificates from omnibus.testing.certs (self.pki):
        # SSL (port "ssl"), which requires a client certificate, and SASL_SSL (port "sasl_ssl",
        # the SASL users over TLS, no client certificate asked).
        self.pki = self._certificates(tls)

    @classmethod
    def missing(cls) -> str | None:
        reason = super().missing()
        if reason:
            return reason
        with contextlib.suppress(Exception):
            kafka_jars(download=False)
            return None
        if shutil.which("mvn") is None:
            return f"the Kafka jars are not in {kafka_home() / 'libs'} and mvn is not installed; {cls.install_hint}"
        return None  # the first start fetches them

    def _ports(self) -> Sequence[str]:
        ports = ("port", "controller", "sasl") if self.sasl_users else ("port", "controller")
        return ports + (("ssl", "sasl_ssl") if self.pki else ())

    def sasl_url(self, user: str = "omnibus") -> str:
        """kafka://USER:PASSWORD@host:port of the SASL listener (the password percent-encoded);
        add the topic and ``?sasl_mechanism=`` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)."""
        from urllib.parse import quote

        if user not in self.sasl_users:
            raise ValueError(f"no SASL user {user!r} on {self.name}; give it in sasl_users=")
        return f"kafka://{quote(user, safe='')}:{quote(self.sasl_users[user], safe='')}@{LOOPBACK}:{self.ports['sasl']}"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def config_path(self) -> Path:
        return self.dir / "server.properties"

    def _quorum(self) -> dict[int, int]:
        return self.voters or {self.node_id: self.ports["controller"]}

    def _prepare(self) -> None:
        libs = self._write_config()
        # Once per data dir: a restart must find its topics, and a formatted dir
        # refuses another format anyway.
        if not self.formatted:
            self._format(libs)

    @property
    def formatted(self) -> bool:
        return (self.data_dir / "meta.properties").exists()

    def _write_config(self) -> Path:
        """Write log4j2.properties and server.properties; returns the jars directory."""
        libs = kafka_jars()
        (self.dir / "log4j2.properties").write_text(_LOG4J2.format(level=self.log_level))
        port, controller = self.ports["port"], self.ports["controller"]
        rf = self.replication
        nodes = len(self._quorum())
        listeners = [f"PLAINTEXT://{LOOPBACK}:{port}", f"CONTROLLER://{LOOPBACK}:{controller}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        sasl: dict[str, object] = {}
        if self.sasl_users:
            listeners.append(f"SASL_PLAINTEXT://{LOOPBACK}:{self.ports['sasl']}")
            protocols.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
            plain_users = " ".join(f'user_{u}="{pw}"' for u, pw in self.sasl_users.items())
            prefix = "listener.name.sasl_plaintext"
            sasl = {
                "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",  # SCRAM: see _format
                f"{prefix}.plain.sasl.jaas.config":
                    f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
                # SCRAM credentials live in the cluster metadata, added at format time.
                f"{prefix}.scram-sha-256.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                f"{prefix}.scram-sha-512.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            }
        if self.pki:
            if not self.sasl_users:
                raise ValueError("tls=True needs SASL users for its SASL_SSL listener (sasl_users={} turned them off)")
            # PEM keystore: the server's key and certificate in one file (Kafka reads unencrypted PKCS#8).
            keystore = self.dir / "pki" / "server-keystore.pem"
            keystore.write_text(self.pki.server_key.read_text() + self.pki.server_cert.read_text())
            keystore.chmod(0o600)
            listeners += [f"SSL://{LOOPBACK}:{self.ports['ssl']}", f"SASL_SSL://{LOOPBACK}:{self.ports['sasl_ssl']}"]
            protocols += ["SSL:SSL", "SASL_SSL:SASL_SSL"]
            sasl.update({
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": keystore,
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": self.pki.ca,
                "listener.name.ssl.ssl.client.auth": "required",
                # The same logins as the SASL_PLAINTEXT listener (every enabled mechanism needs its entry).
                **{k.replace("listener.name.sasl_plaintext.", "listener.name.sasl_ssl."): v
                   for k, v in sasl.items() if k.startswith("listener.name.sasl_plaintext.")},
            })
        props = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            # A static quorum: every voter named up front, so no node waits to be
            # added to a dynamic one (and the format below needs no --standalone).
            "controller.quorum.voters": ",".join(f"{i}@{LOOPBACK}:{p}" for i, p in sorted(self._quorum().items())),
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(x for x in listeners if not x.startswith("CONTROLLER")),
            "listener.security.protocol.map": ",".join(protocols),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": self.data_dir,
            "num.partitions": 1,
            "default.replication.factor": rf,
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min(rf, 2),
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min(rf, 2),
            # The internal topics default to 50 partitions each, whose creation slows
            # the first consumer group (or transaction) down; one per node is plenty here.
            "offsets.topic.num.partitions": nodes,
            "transaction.state.log.num.partitions": nodes,
            "share.coordinator.state.topic.num.partitions": nodes,
            "group.initial.rebalance.delay.ms": 0,
            # A node restarted after a kill is refused (DUPLICATE_BROKER_REGISTRATION)
            # until the session of its previous incarnation expired: 9 s by default,
            # which every restart(kill=True) would wait. Heartbeats stay 4 per session.
            "broker.session.timeout.ms": 4000,
            "broker.heartbeat.interval.ms": 1000,
            "log.segment.bytes": 16 << 20,
            # The log cleaner allocates its 128 MB dedupe buffer on the heap at start.
            "log.cleaner.dedupe.buffer.size": 16 << 20,
            # Fewer threads than the defaults (3 and 8): several JVMs share 2 cores.
            "num.network.threads": 2,
            "num.io.threads": 4,
            **sasl,
        }
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return libs

    def _format(self, libs: Path) -> None:
        cmd = self._java(libs, "kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(self.config_path))
        # The SCRAM credentials go into the bootstrap metadata. (librdkafka before
        # 2.6.1, Debian's 2.0.2 among them, cannot log in with them to Kafka 4:
        # see test_kafka's SCRAM test.)
        for user, password in self.sasl_users.items():
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                cmd += ["--add-scram", f'{mechanism}=[name="{user}",password="{password}"]']
        with open(self.log_path, "ab") as log:
            try:
                r = subprocess.run(
                    cmd, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    timeout=_FORMAT_TIMEOUT, preexec_fn=_die_with_parent, env=program_env(),
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                raise BrokerError(f"{self.name}: storage format took over {_FORMAT_TIMEOUT:.0f} s\n{self.log_tail()}") from None
        if r.returncode != 0:
            raise BrokerError(f"{self.name}: storage format failed with code {r.returncode}\n{self.log_tail()}")

    def _java(self, libs: Path, main: str, *args: str) -> list[str]:
        return [
            self.program,
            f"-Xmx{self.heap}",
            "-Xms64m",
            # Serial GC: fewer GC threads and less native memory than G1, which
            # matters more than pause times when several JVMs share 2 cores.
            "-XX:+UseSerialGC",
            # No /tmp/hsperfdata_* file, which a killed JVM would leave behind.
            "-XX:-UsePerfData",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def _command(self) -> list[str]:
        return self._java(kafka_jars(download=False), "kafka.Kafka", str(self.config_path))

    def _probe(self) -> None:
        kafka_probe(LOOPBACK, self.ports["port"], expect_brokers=len(self._quorum()))

    def metadata(self, timeout: float = 2.0) -> KafkaMetadata:
        """Brokers, controller and topics, as this node sees them now."""
        return kafka_metadata(LOOPBACK, self.ports["port"], timeout)

    @property
    def bootstrap(self) -> str:
        """host:port, as Kafka clients (kcat -b, bootstrap.servers) want it."""
        return f"{LOOPBACK}:{self.ports['port']}"


class KafkaCluster(Cluster):
    """Three (or n) Kafka nodes, each broker and controller, all of them quorum voters."""

    scheme = "kafka"
    default_start_timeout = 180.0  # a quorum of JVMs on 2 busy cores; only ever waited by polling

    def __init__(self, size: int = 3, *, name: str = "kafka", replication: int | None = None) -> None:
        if size < 2:
            raise ValueError("a cluster has at least 2 nodes")
        cluster_id = new_cluster_id()
        rf = min(size, 3) if replication is None else replication
        self.nodes: list[Kafka] = [
            Kafka(name=f"{name}-{i}", node_id=i + 1, cluster_id=cluster_id, replication=rf, sasl_users={})
            for i in range(size)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    def _link(self) -> None:
        # Every node votes in the static controller quorum. Each spawn() formats
        # its node first, while the nodes spawned before boot: formatting all
        # side by side first was no faster on 2 cores.
        voters = {n.node_id: n.ports["controller"] for n in self.nodes}
        for n in self.nodes:
            n.voters = dict(voters)

    def metadata(self, timeout: float = 2.0) -> KafkaMetadata:
        return self.nodes[0].metadata(timeout)

    def close(self) -> None:
        # Killed, not stopped: the data is deleted anyway, and the graceful stop
        # of the last node hangs, its controlled shutdown waiting for a quorum
        # that the nodes stopped before it took away.
        for n in self.nodes:
            with contextlib.suppress(Exception):
                n.kill()
        super().close()
