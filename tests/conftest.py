"""Shared fixtures. The conformance suite runs once per target in TARGETS.

A target is a driver plus a way to make a fresh topic URL. mem:// is always a
target; the protocol drivers add theirs here (from the brokers the test
session starts), and every conformance test runs against them unchanged:
capabilities decide what is skipped, and the skip says why.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import omnibus
from omnibus.testing import wait_until  # noqa: F401  (re-exported for the tests)
from omnibus.testing.brokers._base import Broker, Cluster
from omnibus.testing.brokers.moto import queue_url
from omnibus.testing.brokers.pubsub import FAKE_REQUEST_BYTES, topic_url

_names = itertools.count()


@dataclass(frozen=True)
class Target:
    name: str
    make_url: Callable[[str], str]
    # Most messages one test may send through this target's server; None: any.
    max_messages: int | None = None

    def volume(self, n: int) -> int:
        """n, or fewer where the test server cannot take n in a test's time (moto: see _MAX_MESSAGES)."""
        return n if self.max_messages is None else min(n, self.max_messages)

    def url(self, **options: Any) -> str:
        """A URL of a topic no other test uses, with `options` in its query."""
        base = self.make_url(f"t{os.getpid()}-{next(_names)}")
        if not options:
            return base
        sep = "&" if "?" in base else "?"
        return base + sep + "&".join(f"{k}={_text(v)}" for k, v in options.items())

    def capabilities(self) -> dict[str, Any]:
        with omnibus.publisher(self.url()) as pub:
            return dict(pub.capabilities())


def _text(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


# Per target: the broker it runs on (the pytest plugin's `<kind>_url` fixture:
# started on loopback, or OMNIBUS_<KIND>_URL) and how a fresh topic URL is made
# from that broker's URL, with the options the conformance suite needs. A
# target whose driver is not in this build is skipped, naming why.
_TOPIC_URL: dict[str, tuple[str, Callable[[str, str], str]]] = {
    # Several partitions, so that competing consumers both get work; 1 MiB payloads allowed.
    "kafka": ("kafka", lambda base, topic: f"{base}/{topic}?partitions=4&rdkafka.message.max.bytes=4194304"),
    # SASL PLAIN over TLS (SASL_SSL) to a Kafka with TLS listeners (see kafka_secure_url).
    "kafka-tls": ("kafka_secure",
                  lambda base, topic: _with_path(base, topic, "partitions=4&rdkafka.message.max.bytes=4194304")),
    # MQTT 5 (keys and headers as user properties), QoS 1: at-least-once like the others.
    "mqtt": ("mqtt", lambda base, topic: f"{base}/{topic}?qos=1"),
    # mqtts:// to a Mosquitto TLS listener that admits only its user: a password and a client
    # certificate (see mqtt_secure_url).
    "mqtt-tls": ("mqtt_secure", lambda base, topic: _with_path(base, topic, "qos=1")),
    # A topic exchange of its own per test (the path); subscribers bind private or group queues to it.
    "amqp": ("amqp", lambda base, topic: f"{base}/{topic}"),
    # Core NATS (at-most-once) and JetStream (a stream of its own per test).
    "nats": ("nats", lambda base, topic: f"{base}/{topic}"),
    "jetstream": ("nats", lambda base, topic: f"{base}/{topic}?stream={topic}"),
    # JetStream on a nats-server that serves TLS only and admits only its users: the whole suite
    # through TLS with a client certificate and a password (see nats_secure_url).
    "nats-tls": ("nats_secure", lambda base, topic: _with_path(base, topic, f"stream={topic}")),
    # amqps:// to a RabbitMQ TLS listener, with a client certificate (see amqp_secure_url).
    "amqp-tls": ("amqp_secure", lambda base, topic: _with_path(base, topic)),
    # A persistent topic of its own per test in public/default, created by its first client.
    "pulsar": ("pulsar", lambda base, topic: f"{base}/{topic}"),
    # pulsar+ssl:// with a token and a client certificate (see pulsar_secure_url).
    "pulsar-tls": ("pulsar_secure", lambda base, topic: _with_path(base, topic)),
    # Written in Python (omnibus.redis_streams): a stream per test.
    "redis": ("redis", lambda base, topic: f"{base}/{topic}"),
    # rediss:// with a password and a client certificate (see redis_secure_url).
    "redis-tls": ("redis_secure", lambda base, topic: _with_path(base, topic)),
    # An SQS queue of its own per test on moto (signatures checked), created by the first client.
    "awssqs": ("sqs", lambda base, topic: queue_url(base, topic, create="true")),
    # The same over HTTPS, the server's certificate checked against the harness CA (see sqs_secure_url).
    "awssqs-tls": ("sqs_secure", lambda base, topic: queue_url(base, topic, create="true")),
    # An SNS topic of its own per test on the same server; each subscriber an SQS queue subscribed to it.
    "awssns": ("sqs", lambda base, topic: queue_url("awssns" + base[len("awssqs"):], topic, create="true")),
    # A Pub/Sub topic of its own per test on Google's fake (pstest), created by its first client; each
    # subscriber a subscription of its own, or its group's. Publish requests below the fake's 4 MiB.
    # StreamingPull, 4 streams per subscriber (see _MAX_MESSAGES); tests/test_gcppubsub.py covers pull=unary.
    "gcppubsub": ("gcp", lambda base, topic: topic_url(base, topic, request_bytes=str(FAKE_REQUEST_BYTES),
                                                       streams="4")),
}
# The driver's URL scheme where it is not the broker kind: per target.
_SCHEMES = {"awssqs": "awssqs", "awssns": "awssns", "nats-tls": "nats", "amqp-tls": "amqps", "mqtt-tls": "mqtts",
            "kafka-tls": "kafka", "gcppubsub": "gcppubsub", "pulsar-tls": "pulsar+ssl", "redis-tls": "rediss",
            "awssqs-tls": "awssqs"}
# moto is a test server, and every SQS send scans the whole queue (its
# attributes are computed per message), so its cost grows with the queue's
# depth, and a receive copies every message it returns: a thousand messages
# take it ~10 s on an idle machine, sixteen thousand hours. Tests of volume
# send at most this many through it (AWS itself has no such limit). Google's
# Pub/Sub fake hands each StreamingPull stream one message per 10 ms tick
# (~100 messages/s a stream, where Pub/Sub streams megabytes a second):
# gcppubsub sends at most 1,600 (pull=unary has no such limit on the fake;
# 1,600: test_concurrent_publishers sends whole steps of 50 per publisher).
_MAX_MESSAGES = {"awssqs": 100, "awssqs-tls": 100, "awssns": 100, "gcppubsub": 1600}

# A driver of one's own (a Python driver registered by its package's entry point, say) runs the
# whole suite with OMNIBUS_CONFORMANCE_URL=foo://host:port[?options] and `-k custom`: each test
# gets a fresh topic as the URL's path.
_CUSTOM_URL = os.environ.get("OMNIBUS_CONFORMANCE_URL", "")

TARGETS = ["mem", *_TOPIC_URL, *(["custom"] if _CUSTOM_URL else [])]


def _with_path(base: str, topic: str, extra: str = "") -> str:
    """base's scheme and servers, then /topic, then base's query and `extra`."""
    head, _, query = base.partition("?")
    query = "&".join(q for q in (query, extra) if q)
    return f"{head.rstrip('/')}/{topic}" + (f"?{query}" if query else "")


def started_broker(broker_class: Any, **kwargs: Any) -> Iterator[Any]:
    """For a fixture: a broker configured its own way (secured, say), started and at the end
    stopped; the test is skipped, naming why, when the broker's program is missing."""
    if broker_class.missing():
        pytest.skip(broker_class.missing())
    with broker_class(**kwargs) as broker:
        yield broker


def skip_unless_built(scheme: str) -> None:
    """Skip the test, naming why, when `scheme`'s driver is not in this build."""
    missing = omnibus.unavailable_drivers().get(scheme)
    if missing:
        pytest.skip(f"{scheme}:// is not in this build: {missing}")


def client_tls(pki: Any) -> str:
    """The query that checks the server against the harness CA and presents its client certificate."""
    return f"tls_ca={pki.ca}&tls_cert={pki.client_cert}&tls_key={pki.client_key}"


@pytest.fixture(scope="session")
def nats_secure_broker() -> Iterator[Broker]:
    """nats-server with JetStream, TLS only (a CA made for this session) and users (password, NKey)."""
    from omnibus.testing.brokers.nats import NatsServer

    yield from started_broker(NatsServer, name="nats-secure", tls=True, auth="users")


@pytest.fixture(scope="session")
def nats_secure_url(nats_secure_broker: Any) -> str:
    """The secured server's URL with a password and a client certificate (no topic)."""
    b, pki = nats_secure_broker, nats_secure_broker.pki
    host = b.url.split("://", 1)[1]
    return (f"nats://omnibus:{b.password}@{host}?tls_ca={pki.ca}&tls_cert={pki.client_cert}"
            f"&tls_key={pki.client_key}")


@pytest.fixture(scope="session")
def kafka_secure_broker() -> Iterator[Broker]:
    """Kafka with an SSL listener that requires client certificates and a SASL_SSL one (PLAIN)."""
    from omnibus.testing.brokers.kafka import Kafka

    yield from started_broker(Kafka, name="kafka-secure", tls=True)


@pytest.fixture(scope="session")
def kafka_secure_url(kafka_secure_broker: Any) -> str:
    """SASL PLAIN over TLS to the SASL_SSL listener, the broker's certificate checked (no topic)."""
    b = kafka_secure_broker
    return f"kafka://omnibus:{b.sasl_users['omnibus']}@127.0.0.1:{b.ports['sasl_ssl']}?tls_ca={b.pki.ca}"


@pytest.fixture(scope="session")
def mqtt_secure_broker() -> Iterator[Broker]:
    """Mosquitto with a TLS listener (a CA made for this session) and no anonymous access."""
    from omnibus.testing.brokers.mosquitto import Mosquitto

    yield from started_broker(Mosquitto, name="mqtt-secure", tls=True, auth=True)


@pytest.fixture(scope="session")
def mqtt_secure_url(mqtt_secure_broker: Any) -> str:
    """mqtts:// to the TLS listener with the password and a client certificate (no topic)."""
    b, pki = mqtt_secure_broker, mqtt_secure_broker.pki
    return f"mqtts://omnibus:{b.password}@localhost:{b.ports['tls']}?{client_tls(pki)}"


@pytest.fixture(scope="session")
def amqp_secure_broker() -> Iterator[Broker]:
    """RabbitMQ with a TLS listener beside its plaintext one (a CA made for this session)."""
    from omnibus.testing.brokers.rabbitmq import RabbitMQ

    yield from started_broker(RabbitMQ, name="amqp-secure", tls=True)


@pytest.fixture(scope="session")
def amqp_secure_url(amqp_secure_broker: Any) -> str:
    """amqps:// to the TLS listener with a client certificate (no exchange)."""
    pki = amqp_secure_broker.pki
    return f"{amqp_secure_broker.tls_url}&tls_cert={pki.client_cert}&tls_key={pki.client_key}"


@pytest.fixture(scope="session")
def redis_secure_broker() -> Iterator[Broker]:
    """redis-server with a password, a plaintext port and a TLS port (the harness CA)."""
    from omnibus.testing.brokers.redis import Redis

    yield from started_broker(Redis, name="redis-secure", tls=True, auth=True, appendonly=False)


@pytest.fixture(scope="session")
def redis_secure_url(redis_secure_broker: Any) -> str:
    """rediss:// to the TLS port with the password and a client certificate (no stream)."""
    b, pki = redis_secure_broker, redis_secure_broker.pki
    return f"rediss://:{b.password}@localhost:{b.ports['tls']}?{client_tls(pki)}"


@pytest.fixture(scope="session")
def pulsar_secure_broker() -> Iterator[Broker]:
    """Pulsar standalone with token authentication (JWTs signed with a key made for it), on a
    plaintext port and a TLS port."""
    skip_unless_built("pulsar")
    from omnibus.testing.brokers.pulsar import Pulsar

    yield from started_broker(Pulsar, name="pulsar-secure", auth=True, tls=True)


@pytest.fixture(scope="session")
def pulsar_secure_url(pulsar_secure_broker: Any) -> str:
    """pulsar+ssl:// to the TLS port with the token and a client certificate (no topic)."""
    b, pki = pulsar_secure_broker, pulsar_secure_broker.pki
    return f"pulsar+ssl://{b.token}@localhost:{b.ports['tls']}?{client_tls(pki)}"


@pytest.fixture(scope="session")
def sqs_secure_broker() -> Iterator[Broker]:
    """moto's server over HTTPS with a certificate of a CA made for it."""
    skip_unless_built("awssqs")
    from omnibus.testing.brokers.moto import Moto

    yield from started_broker(Moto, name="sqs-secure", tls=True)


@pytest.fixture(scope="session")
def sqs_secure_url(sqs_secure_broker: Any) -> str:
    """awssqs:// with the endpoint https://localhost:PORT and tls_ca (no queue)."""
    return str(sqs_secure_broker.url)


def _custom(topic: str) -> str:
    base, _, query = _CUSTOM_URL.partition("?")
    return f"{base.rstrip('/')}/{topic}" + (f"?{query}" if query else "")


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> Target:
    name: str = request.param
    if name == "mem":
        return Target("mem", lambda topic: f"mem://{topic}")
    if name == "custom":
        return Target(_CUSTOM_URL.split("://", 1)[0], _custom)
    kind, make = _TOPIC_URL[name]
    skip_unless_built(_SCHEMES.get(name, kind))
    base = request.getfixturevalue(f"{kind}_url").rstrip("/")
    return Target(name, lambda topic: make(base, topic), _MAX_MESSAGES.get(name))


def require(target: Target, capability: str) -> None:
    """Skip, naming the reason, when the target's protocol cannot do `capability`."""
    caps = target.capabilities()
    if not caps.get(capability):
        pytest.skip(f"{target.name}:// cannot do {capability} (capabilities()[{capability!r}] is {caps.get(capability)!r})")


def receive_n(sub: omnibus.Subscriber, n: int, timeout: float = 10.0) -> list[omnibus.Message]:
    """Exactly n messages (fails the test when fewer arrive within `timeout`)."""
    got: list[omnibus.Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"received {len(got)} of {n} messages within {timeout} s")
        got.extend(sub.receive_batch(n - len(got), timeout=left))
    return got


def receive_from(subs: list[omnibus.Subscriber], n: int, timeout: float = 60.0) -> list[list[omnibus.Message]]:
    """What each subscriber got, receiving from all in turn until n messages arrived in total (or the timeout)."""
    got: list[list[omnibus.Message]] = [[] for _ in subs]

    def step() -> bool:
        for i, sub in enumerate(subs):
            got[i].extend(sub.receive_batch(1000, timeout=0.05))
        return sum(map(len, got)) >= n

    wait_until(step, timeout=timeout, interval=0)
    return got


# ---------------------------------------------------------------- leak check
#
# Every test leaves no thread, child process or socket behind. What exists
# once the test's fixtures are set up (session brokers started on first use
# included) is the baseline, taken by the pytest_runtest_call hookwrapper;
# after the function fixtures are torn down, check_no_leaks (autouse, so set
# up first and torn down last) polls until nothing new is left, and fails
# listing what is. The processes of session-scoped brokers are never a leak:
# a test may start one late (request.getfixturevalue) or restart one (new
# pid). Engine threads of omnibus are native, not in threading.enumerate():
# they show through the sockets they hold.

_LEAK_DEADLINE = 5.0  # s for asynchronous teardown (threads ending, sockets closing)


@dataclass(frozen=True)
class Resources:
    threads: frozenset[threading.Thread]
    children: frozenset[int]
    sockets: frozenset[str]  # "socket:[inode]": an fd number may be reused, the inode not

    @staticmethod
    def now() -> Resources:
        return Resources(frozenset(t for t in threading.enumerate() if t.is_alive()),
                         frozenset(_children()), frozenset(_sockets()))

    def leaked_since(self, before: Resources) -> list[str]:
        session = _session_broker_pids()
        out = [f"thread {t.name!r} (daemon={t.daemon}, target={_target(t)})"
               for t in sorted(self.threads - before.threads, key=lambda t: t.name)]
        out += [f"child process {pid}: {_cmdline(pid)}" for pid in sorted(self.children - before.children - session)]
        out += [f"socket {s} (fd {', '.join(map(str, fds))})" for s, fds in sorted(_fds_of(self.sockets - before.sockets).items())]
        return out


def _children() -> set[int]:
    """Child processes of every thread of this process (a child belongs to the thread that forked it)."""
    out: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                out.update(int(p) for p in f.read().split())
        except OSError:
            continue  # the thread ended meanwhile
    return out


def _sockets() -> set[str]:
    out: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (or the directory's own fd)
        if link.startswith("socket:"):
            out.add(link)
    return out


def _fds_of(sockets: frozenset[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {s: [] for s in sockets}
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link in out:
            out[link].append(int(fd))
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "(gone)"
    return (cmd[:200] or "(no command line)") + (" (zombie: never waited for)" if state == "Z" else "")


def _target(t: threading.Thread) -> str:
    fn = getattr(t, "_target", None)
    return getattr(fn, "__qualname__", repr(fn))


_session_values: list[Any] = []  # what session-scoped fixtures returned, brokers among them


class _SessionFixtures:
    """Records session fixtures' values. A plugin of its own, not a hook of this conftest: pytest calls a
    session fixture's setup hook on the session, which sees only the conftest files at the rootdir."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef[Any]) -> Iterator[None]:
        outcome = yield
        if fixturedef.scope == "session" and outcome.excinfo is None:
            _session_values.append(outcome.get_result())


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_SessionFixtures(), "omnibus-tests-session-fixtures")


def _session_broker_pids() -> set[int]:
    pids: set[int] = set()
    for v in _session_values:
        for b in v.nodes if isinstance(v, Cluster) else [v] if isinstance(v, Broker) else []:
            if b.pid is not None:
                pids.add(b.pid)
    return pids


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    item.stash[_BASELINE] = Resources.now()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    if outcome.get_result().failed:
        item.stash[_FAILED] = True


_BASELINE = pytest.StashKey[Resources]()
_FAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def check_no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails a test that leaves a thread, child process or socket behind (see Resources)."""
    yield
    node = request.node
    before = node.stash.get(_BASELINE, None)
    # A failed test may hold its resources in its traceback; its failure is the report.
    if before is None or node.stash.get(_FAILED, False):
        return
    leaked: list[str] = []

    def settled() -> bool:
        leaked[:] = Resources.now().leaked_since(before)
        return not leaked

    if not wait_until(settled, timeout=_LEAK_DEADLINE, interval=0.02):
        pytest.fail(f"left behind after {_LEAK_DEADLINE:.0f} s:\n  " + "\n  ".join(leaked), pytrace=False)


def fault_loops() -> int:
    """How many times each fault test runs: OMNIBUS_FAULT_LOOPS (default 1).

    A guarantee that holds 9 times in 10 does not hold: run the crash tests
    with OMNIBUS_FAULT_LOOPS=20 (under `make sanitize` too) before calling one
    fixed.
    """
    raw = os.environ.get("OMNIBUS_FAULT_LOOPS", "1")
    try:
        n = int(raw)
    except ValueError:
        raise pytest.UsageError(f"OMNIBUS_FAULT_LOOPS={raw!r}: give a whole number of runs, e.g. 20") from None
    if n < 1:
        raise pytest.UsageError(f"OMNIBUS_FAULT_LOOPS={n}: give at least 1 run")
    return n


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Each run is a test item of its own (…[loop3]), with fresh fixtures and
    # its own pass/fail line, so the tally is pytest's summary.
    n = fault_loops()
    if n > 1 and metafunc.definition.get_closest_marker("fault"):
        metafunc.fixturenames.append("fault_loop")
        metafunc.parametrize("fault_loop", range(1, n + 1), ids=lambda i: f"loop{i}")
