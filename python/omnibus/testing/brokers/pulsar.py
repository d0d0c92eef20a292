"""Apache Pulsar standalone (broker plus one in-process bookie) on loopback.

Debian has no Pulsar package, so the broker runs from the jars Maven resolves for
``omnibus/testing/pulsar/pom.xml``, copied once into a cache directory:
``~/.cache/omnibus/pulsar-<version>``, or ``$OMNIBUS_PULSAR_HOME``. ``pulsar_jars()``
does that on first use; ``make deps`` does it ahead of time.

The JVM runs ``org.apache.pulsar.PulsarStandaloneStarter`` without the functions
worker and stream storage (``-nfw -nss``), with RocksDB metadata and one bookie
in the same process, all on 127.0.0.1: the binary protocol and the HTTP admin port
(also the WebSocket endpoint) are chosen free and pinned in the generated config;
the in-process bookie picks its own port (Pulsar's BKCluster ignores
``--bookkeeper-port``) and keeps it in its data across restarts, bound to the
loopback interface (``listeningInterface=lo``; tests/test_pulsar.py checks every
socket the JVM listens on). Readiness is ``/admin/v2/brokers/health``, which makes the
broker publish to and read from a topic of its own.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import shutil
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ._base import LOOPBACK, Broker
from .kafka import jars_home, maven_jars, pom_property

POM = Path(__file__).resolve().parent.parent / "pulsar" / "pom.xml"


def pulsar_version() -> str:
    """The Pulsar release the pom names (its ``pulsar.version`` property)."""
    return pom_property(POM, "pulsar.version")


def pulsar_home() -> Path:
    """Where the jars are cached: $OMNIBUS_PULSAR_HOME, else ~/.cache/omnibus/pulsar-<version>."""
    return jars_home("pulsar", pulsar_version())


def pulsar_jars(download: bool = True) -> Path:
    """The directory of the Pulsar jars, fetched with Maven first when it is not there yet."""
    return maven_jars(POM, pulsar_home(), "pulsar-broker-[0-9]*.jar", "Pulsar", download)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(secret_key: bytes, subject: str) -> str:
    """A JWT (HS256) for Pulsar's token authentication: the role ``subject``, signed with
    ``secret_key`` (the broker's ``tokenSecretKey``), without expiry. What ``pulsar tokens create
    --secret-key`` makes."""
    head = _b64url(json.dumps({"alg": "HS256"}, separators=(",", ":")).encode())
    body = _b64url(json.dumps({"sub": subject}, separators=(",", ":")).encode())
    signature = hmac.new(secret_key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64url(signature)}"


def pulsar_probe(host: str, web_port: int, timeout: float = 5.0, token: str = "") -> None:
    """The broker's health check (a round trip through a topic of its own) answers ``ok``. Raises otherwise."""
    url = f"http://{host}:{web_port}/admin/v2/brokers/health"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=timeout) as r:  # noqa: S310 - loopback only
        body = r.read(256)
    if body.strip() != b"ok":
        raise ValueError(f"{url} answered {body[:80]!r}")


_LOG4J2 = """\
# Written by omnibus: everything from {level} up to stdout, which is the broker log.
status = error
name = omnibus-pulsar
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.stdout.ref = STDOUT
"""


class Pulsar(Broker):
    """Pulsar standalone in one JVM: broker, one bookie, RocksDB metadata, all on loopback.

    ``auth=True``: token authentication (JWT, HS256, with a secret key made for this broker);
    ``self.token`` is a client's token (role ``omnibus``), ``self.admin_token`` the broker's own.
    ``tls=True``: a second broker port ("tls", ``pulsar+ssl://``) with certificates from
    :func:`omnibus.testing.certs.make_pki` (``self.pki``); a client certificate is checked when
    given, not required.
    """

    kind = "pulsar"
    program = "java"
    install_hint = "install a Java 17 runtime and Maven, which fetches the Pulsar jars (make deps)"
    default_start_timeout = 180.0  # ~25 s idle; a JVM on 2 busy cores, only ever waited by polling

    def __init__(self, *, heap: str = "512m", log_level: str = "WARN", auth: bool = False, tls: bool = False,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.pki = self._certificates(tls)
        self.heap = heap
        self.log_level = log_level
        self.auth = auth
        self._secret_key = secrets.token_bytes(32)
        self.token = make_token(self._secret_key, "omnibus") if auth else ""
        self.admin_token = make_token(self._secret_key, "admin") if auth else ""

    @classmethod
    def missing(cls) -> str | None:
        reason = super().missing()
        if reason:
            return reason
        with contextlib.suppress(Exception):
            pulsar_jars(download=False)
            return None
        if shutil.which("mvn") is None:
            return f"the Pulsar jars are not in {pulsar_home() / 'libs'} and mvn is not installed; {cls.install_hint}"
        return None  # the first start fetches them

    def _ports(self) -> Sequence[str]:
        return ("port", "web", "tls") if self.pki else ("port", "web")

    @property
    def tls_url(self) -> str:
        """``pulsar+ssl://`` to the TLS port (``tls=True``); add ``tls_ca`` (``self.pki.ca``)."""
        return f"pulsar+ssl://localhost:{self.ports['tls']}"

    @property
    def config_path(self) -> Path:
        return self.dir / "standalone.conf"

    @property
    def web_url(self) -> str:
        """The HTTP admin endpoint (also WebSocket: ws://.../ws/v2/...)."""
        return f"http://{LOOPBACK}:{self.ports['web']}"

    def _prepare(self) -> None:
        pulsar_jars()
        (self.dir / "log4j2.properties").write_text(_LOG4J2.format(level=self.log_level))
        props: dict[str, object] = {
            "clusterName": "standalone",
            "brokerServicePort": self.ports["port"],
            "webServicePort": self.ports["web"],
            "bindAddress": LOOPBACK,
            # Read by the broker and by the bookie (the same file configures both).
            "advertisedAddress": LOOPBACK,
            "listeningInterface": "lo",
            "allowLoopback": "true",
            "httpServerEnabled": "false",  # the bookie's own HTTP server
            # One broker: no load balancing, no bundle splits.
            "loadManagerClassName": "org.apache.pulsar.broker.loadbalance.NoopLoadManager",
            "loadBalancerEnabled": "false",
            "managedLedgerDefaultEnsembleSize": 1,
            "managedLedgerDefaultWriteQuorum": 1,
            "managedLedgerDefaultAckQuorum": 1,
            # Small caches: the heap is ~512 MB and several brokers share the machine.
            "managedLedgerCacheSizeMB": 32,
            "dbStorage_writeCacheMaxSizeMb": 16,
            "dbStorage_readAheadCacheMaxSizeMb": 16,
            "dbStorage_rocksDB_blockCacheSize": 16 << 20,
            "journalMaxGroupWaitMSec": 1,
            "webSocketServiceEnabled": "true",
            "functionsWorkerEnabled": "false",
            "transactionCoordinatorEnabled": "false",
            "allowAutoTopicCreation": "true",
            "allowAutoTopicCreationType": "non-partitioned",
            # Topics of finished tests stay (a restarted test finds its topic); the temp dir goes at close.
            "brokerDeleteInactiveTopicsEnabled": "false",
            "brokerShutdownTimeoutMs": 3000,
            "authenticationEnabled": "false",
            "authorizationEnabled": "false",
        }
        if self.pki:
            props.update({
                "brokerServicePortTls": self.ports["tls"],
                "tlsCertificateFilePath": self.pki.server_cert,
                "tlsKeyFilePath": self.pki.server_key,
                "tlsTrustCertsFilePath": self.pki.ca,
                "tlsAllowInsecureConnection": "false",
                "tlsRequireTrustedClientCertOnConnect": "false",
            })
        if self.auth:
            key = base64.b64encode(self._secret_key).decode()
            props.update({
                "authenticationEnabled": "true",
                "authenticationProviders": "org.apache.pulsar.broker.authentication.AuthenticationProviderToken",
                "tokenSecretKey": f"data:;base64,{key}",
                "superUserRoles": "admin",
                # The broker's own client (its health check's producer and consumer) logs in too.
                "brokerClientAuthenticationPlugin": "org.apache.pulsar.client.impl.auth.AuthenticationToken",
                "brokerClientAuthenticationParameters": f"token:{self.admin_token}",
            })
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def _command(self) -> list[str]:
        libs = pulsar_jars(download=False)
        data = self.dir / "data"
        return [
            self.program,
            f"-Xmx{self.heap}",
            "-Xms64m",
            "-XX:MaxDirectMemorySize=256m",
            "-XX:+UseSerialGC",  # fewer GC threads than G1 on 2 shared cores
            "-XX:-UsePerfData",  # no /tmp/hsperfdata_* left by a killed JVM
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-Dpulsar.allocator.exit_on_oom=true",
            "-cp",
            f"{libs}/*",
            "org.apache.pulsar.PulsarStandaloneStarter",
            "--config", str(self.config_path),
            "-nfw", "-nss",
            "--metadata-dir", str(data / "metadata"),
            "--bookkeeper-dir", str(data / "bookkeeper"),
            "--advertised-address", LOOPBACK,
        ]  # fmt: skip

    def _probe(self) -> None:
        pulsar_probe(LOOPBACK, self.ports["web"], token=self.admin_token)
