"""mqtt:// specifics beyond the conformance suite, against Mosquitto 2 on loopback."""

from __future__ import annotations

import contextlib
import queue
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

import omnibus
from omnibus.testing import wait_until

pytestmark = pytest.mark.skipif("mqtt" in omnibus.unavailable_drivers(), reason="mqtt:// is not in this build")

needs_clients = pytest.mark.skipif(
    shutil.which("mosquitto_sub") is None or shutil.which("mosquitto_pub") is None,
    reason="mosquitto_pub/mosquitto_sub (Debian package mosquitto-clients) are not installed",
)


def topic() -> str:
    return f"omnibus-test/{uuid.uuid4().hex[:10]}"


def url_of(mqtt_url: str, path: str, **options: object) -> str:
    query = "&".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items())
    return f"{mqtt_url}/{path}" + (f"?{query}" if query else "")


def host_port(mqtt_url: str) -> tuple[str, str]:
    host, port = mqtt_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return host, port


def drain(subs: list[omnibus.Subscriber], n: int, timeout: float = 30) -> list[list[omnibus.Message]]:
    """Receive from every subscriber until n messages arrived in all (or the timeout)."""
    got: list[list[omnibus.Message]] = [[] for _ in subs]

    def step() -> bool:
        for i, s in enumerate(subs):
            got[i].extend(s.receive_batch(1000, timeout=0.02))
        return sum(map(len, got)) >= n

    wait_until(step, timeout=timeout, interval=0)
    return got


class LineReader:
    """Reads a child's stdout lines on a thread, so that waits can have deadlines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout
        self._thread = threading.Thread(target=lambda: [self.lines.put(line) for line in stdout], daemon=True)
        self._thread.start()

    def join(self, timeout: float = 10) -> None:
        """Wait for the reader to see EOF (the child exited); its pipe may be closed after that, not before."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the child's stdout did not end"

    def until(self, predicate, timeout: float = 15) -> str:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail("expected output from the mosquitto client did not come")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if predicate(line):
                return line


@pytest.fixture
def mosquitto_sub(mqtt_url: str) -> Iterator:  # type: ignore[type-arg]
    """Starts mosquitto_sub (MQTT 5, debug output) on a topic; yields (reader) once it has its SUBACK."""
    procs: list[tuple[subprocess.Popen[str], LineReader]] = []

    def start(t: str, *extra: str) -> LineReader:
        host, port = host_port(mqtt_url)
        proc = subprocess.Popen(
            # Line-buffered: mosquitto_sub buffers its stdout when it is a pipe.
            [*(["stdbuf", "-oL"] if shutil.which("stdbuf") else []), "mosquitto_sub", "-h", host, "-p", port, "-V", "5", "-q", "1", "-d", "-t", t,
             "-F", "MSG|%t|%q|%p|%P", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        reader = LineReader(proc)
        procs.append((proc, reader))
        reader.until(lambda line: "received SUBACK" in line)
        return reader

    yield start
    for p, reader in procs:
        p.terminate()
        p.wait(timeout=10)
        reader.join()
        if p.stdout is not None:
            p.stdout.close()


# ---------------------------------------------------------------- interoperability


@needs_clients
def test_omnibus_to_mosquitto_sub_with_key_and_headers_as_user_properties(mqtt_url: str, mosquitto_sub) -> None:  # type: ignore[no-untyped-def]
    t = topic()
    reader = mosquitto_sub(t)
    with omnibus.publisher(url_of(mqtt_url, t)) as pub:
        pub.publish(b"from omnibus", key=b"k1", headers=[("h1", b"v1"), ("h1", b"v2"), ("h2", b"x")]).result(timeout=10)
    line = reader.until(lambda line: line.startswith("MSG|"))
    # Key first, then the headers in order, repeats kept.
    assert line.rstrip("\n") == f"MSG|{t}|1|from omnibus|omnibus-key:k1 h1:v1 h1:v2 h2:x"


@needs_clients
def test_mosquitto_pub_to_omnibus(mqtt_url: str) -> None:
    t = topic()
    host, port = host_port(mqtt_url)
    with omnibus.subscriber(url_of(mqtt_url, t)) as sub:
        subprocess.run(["mosquitto_pub", "-h", host, "-p", port, "-V", "5", "-q", "1", "-t", t, "-m", "from mosquitto",
                        "-D", "publish", "user-property", "h1", "v1",
                        "-D", "publish", "user-property", "omnibus-key", "k2"], check=True, timeout=30)
        msg = sub.receive(timeout=10)
        assert bytes(msg.payload) == b"from mosquitto"
        assert msg.key == b"k2"
        assert msg.headers == [("h1", b"v1")]
        assert msg.topic == t and msg.delivery_attempt == 1
        # MQTT 3.1.1 publisher, QoS 2: no properties at all.
        subprocess.run(["mosquitto_pub", "-h", host, "-p", port, "-V", "311", "-q", "2", "-t", t, "-m", "v311"],
                       check=True, timeout=30)
        msg = sub.receive(timeout=10)
        assert bytes(msg.payload) == b"v311" and msg.key is None and msg.headers == []


def test_binary_keys_and_unusual_header_names_round_trip(mqtt_url: str) -> None:
    url = url_of(mqtt_url, topic())
    headers = [("omnibus-key", b"not the key"), ("ctl\x01", b"v"), ("", b"empty name"), ("ok", "ü".encode())]
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        pub.publish(b"p", key=b"\x00\xff", headers=headers).result(timeout=10)
        msg = sub.receive(timeout=10)
    assert msg.key == b"\x00\xff"
    assert msg.headers == headers


def test_send_timestamp_carries_the_publish_time(mqtt_url: str) -> None:
    url = url_of(mqtt_url, topic())
    with omnibus.subscriber(url) as sub, omnibus.publisher(url, send_timestamp=True) as pub:
        pub.publish(b"p", headers=[("h", b"1")]).result(timeout=10)
        msg = sub.receive(timeout=10)
    assert msg.headers == [("h", b"1")]  # the timestamp property is not a header
    assert abs(msg.timestamp_ms - time.time() * 1000) < 60_000


# ---------------------------------------------------------------- subscriptions


def test_wildcard_filters(mqtt_url: str) -> None:
    base = topic()
    with omnibus.subscriber(url_of(mqtt_url, f"{base}/+/temp")) as plus, \
            omnibus.subscriber(url_of(mqtt_url, f"{base}/#")) as hash_:
        for leaf in ("a/temp", "b/temp", "a/humidity", "a/temp/raw"):
            with omnibus.publisher(url_of(mqtt_url, f"{base}/{leaf}")) as pub:
                pub.publish(leaf.encode()).result(timeout=10)
        got_plus = drain([plus], 2)[0]
        got_hash = drain([hash_], 4)[0]
        assert plus.receive_batch(10, timeout=0.3) == []  # nothing else matched '+'
    assert sorted(m.topic for m in got_plus) == [f"{base}/a/temp", f"{base}/b/temp"]
    assert sorted(bytes(m.payload) for m in got_hash) == [b"a/humidity", b"a/temp", b"a/temp/raw", b"b/temp"]


@pytest.mark.parametrize("form", ["group-option", "share-path"])
def test_shared_subscription_competing_consumers(mqtt_url: str, form: str) -> None:
    t = topic()
    sub_url = url_of(mqtt_url, t, group="workers") if form == "group-option" else url_of(mqtt_url, f"$share/workers/{t}")
    n = 400
    with omnibus.subscriber(sub_url) as a, omnibus.subscriber(sub_url) as b, \
            omnibus.subscriber(url_of(mqtt_url, t)) as everything, omnibus.publisher(url_of(mqtt_url, t)) as pub:
        assert a.capabilities()["competing_consumers"]
        pub.publish_many([str(i).encode() for i in range(n)]).result(timeout=30)
        got_a, got_b = drain([a, b], n)
        assert len(drain([everything], n)[0]) == n  # a plain subscription still sees all
    payloads = [bytes(m.payload) for m in got_a + got_b]
    assert sorted(payloads) == sorted(str(i).encode() for i in range(n))  # no loss, no duplicate
    assert got_a and got_b, "one consumer got everything"


def test_retained_message_reaches_a_later_subscriber(mqtt_url: str) -> None:
    url = url_of(mqtt_url, topic())
    with omnibus.publisher(url, retain=True) as pub:
        pub.publish(b"last known value").result(timeout=10)
    with omnibus.subscriber(url) as sub:
        assert bytes(sub.receive(timeout=10).payload) == b"last known value"
    with omnibus.publisher(url, retain=True) as pub:
        pub.publish(b"").result(timeout=10)  # an empty retained message clears it


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_each_qos_round_trips_and_reports_capabilities(mqtt_url: str, qos: int) -> None:
    url = url_of(mqtt_url, topic(), qos=qos)
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        delivery = pub.publish_many([str(i).encode() for i in range(200)])
        delivery.result(timeout=30)
        got = drain([sub], 200)[0]
        caps = pub.capabilities()
        sub_caps = sub.capabilities()
    assert [bytes(m.payload) for m in got] == [str(i).encode() for i in range(200)]  # one connection: in order
    assert caps["delivery_guarantee"] == ("at-most-once" if qos == 0 else "at-least-once")
    assert not caps["durable"]  # clean session
    # Paho acknowledges on arrival: the subscriber side is at-most-once whatever the QoS.
    assert sub_caps["delivery_guarantee"] == "at-most-once"
    assert not sub_caps["nack"] and not sub_caps["requeue_on_close"]


# ---------------------------------------------------------------- MQTT 3.1.1


def test_v311_refuses_keys_and_headers_unless_drop_headers(mqtt_url: str) -> None:
    t = topic()
    with omnibus.subscriber(url_of(mqtt_url, t, version="3.1.1")) as sub, \
            omnibus.publisher(url_of(mqtt_url, t, version="3.1.1")) as pub:
        caps = pub.capabilities()
        assert not caps["keys"] and not caps["headers"] and not caps["competing_consumers"]
        with pytest.raises(omnibus.InvalidArgument, match="drop_headers=true"):
            pub.publish(b"h", headers={"a": b"1"}).result(timeout=10)
        with pytest.raises(omnibus.InvalidArgument, match="drop_headers=true"):
            pub.publish(b"k", key=b"k").result(timeout=10)
        delivery = pub.publish_many([b"plain-1", b"with-header", b"plain-2"], headers=[None, {"a": b"1"}, None])
        with pytest.raises(omnibus.InvalidArgument) as info:
            delivery.result(timeout=10)
        assert [i for i, _ in info.value.failures] == [1]  # fails that message alone
        with omnibus.publisher(url_of(mqtt_url, t, version="3.1.1", drop_headers=True)) as dropping:
            dropping.publish(b"dropped", key=b"k", headers={"a": b"1"}).result(timeout=10)
        got = drain([sub], 3)[0]
    assert [bytes(m.payload) for m in got] == [b"plain-1", b"plain-2", b"dropped"]
    assert all(m.key is None and m.headers == [] for m in got)


def test_v311_has_no_shared_subscriptions(mqtt_url: str) -> None:
    with pytest.raises(omnibus.Unsupported, match="MQTT 5"):
        omnibus.subscriber(url_of(mqtt_url, topic(), version="3.1.1", group="g"))


# ---------------------------------------------------------------- bad input


def test_qos_3_is_invalid(mqtt_url: str) -> None:
    with pytest.raises(omnibus.InvalidArgument, match=r"qos.*0\.\.2"):
        omnibus.publisher(url_of(mqtt_url, topic(), qos=3))
    with pytest.raises(omnibus.InvalidArgument, match=r"qos.*0\.\.2"):
        omnibus.subscriber(url_of(mqtt_url, topic(), qos=3))


@pytest.mark.parametrize(
    ("path", "rule"),
    [("a/+/b", "wildcards"), ("a/#", "wildcards"), ("a%00b", r"'a\\x00b'.*U\+0000"), ("", "names no topic"),
     ("$share/g/a", "shared subscription")],
    ids=["plus", "hash", "nul", "empty", "share"],
)
def test_invalid_publish_topics(mqtt_url: str, path: str, rule: str) -> None:
    with pytest.raises(omnibus.InvalidArgument, match=rule):
        omnibus.publisher(url_of(mqtt_url, path))


@pytest.mark.parametrize(
    ("path", "rule"),
    [("a/b#", "'#' must be a whole level"), ("a/#/b", "'#' must be a whole level"), ("a+/b", "'\\+' must be"),
     ("$share/g", r"\$share/GROUP/FILTER"), ("$share//a", r"\$share/GROUP/FILTER")],
)
def test_invalid_subscription_filters(mqtt_url: str, path: str, rule: str) -> None:
    with pytest.raises(omnibus.InvalidArgument, match=rule):
        omnibus.subscriber(url_of(mqtt_url, path))


def test_oversized_message_against_the_mqtt_limit(mqtt_url: str) -> None:
    url = url_of(mqtt_url, topic())
    with omnibus.publisher(url) as pub:
        limit = pub.capabilities()["max_message_bytes"]
        assert 0 < limit < 268435455
        delivery = pub.publish_many([b"ok", b"x" * (limit + 1)])
        with pytest.raises(omnibus.ResourceExhausted, match="packet size limit"):
            delivery.result(timeout=60)
        assert [i for i, _ in delivery.failures()] == [1]


def test_unknown_host_is_unavailable_and_names_it() -> None:
    with pytest.raises(omnibus.Unavailable, match="no-such-host.invalid") as info:
        omnibus.publisher("mqtt://no-such-host.invalid:1883/t?connect_timeout_ms=2000")
    assert isinstance(info.value, ConnectionError)
    with pytest.raises(omnibus.Unavailable, match="no-such-host.invalid"):
        omnibus.subscriber("mqtt://no-such-host.invalid:1883/t?connect_timeout_ms=2000")


def test_refused_connection_is_unavailable_and_names_the_host() -> None:
    from omnibus.testing.brokers import free_port

    port = free_port()
    with pytest.raises(omnibus.Unavailable, match=f"127.0.0.1:{port}"):
        omnibus.publisher(f"mqtt://127.0.0.1:{port}/t?connect_timeout_ms=3000")


def test_nack_is_unsupported(mqtt_url: str) -> None:
    url = url_of(mqtt_url, topic())
    with omnibus.subscriber(url, auto_ack=False) as sub, omnibus.publisher(url) as pub:
        pub.publish(b"x").result(timeout=10)
        msg = sub.receive(timeout=10)
        with pytest.raises(omnibus.Unsupported, match="nack"):
            msg.nack()
        msg.ack()  # accepted; Paho acknowledged it to the broker on arrival


# ---------------------------------------------------------------- sessions and acks


def test_persistent_session_keeps_messages_published_while_away(mqtt_url: str) -> None:
    t = topic()
    client_id = f"omnibus-test-{uuid.uuid4().hex[:8]}"
    sub_url = url_of(mqtt_url, t, client_id=client_id, clean_session=False)
    with omnibus.subscriber(sub_url) as sub:
        assert sub.capabilities()["durable"]
    with omnibus.publisher(url_of(mqtt_url, t)) as pub:
        pub.publish_many([f"away-{i}".encode() for i in range(20)]).result(timeout=10)
    with omnibus.subscriber(sub_url) as sub:
        got = drain([sub], 20)[0]
    assert [bytes(m.payload) for m in got] == [f"away-{i}".encode() for i in range(20)]
    with omnibus.subscriber(url_of(mqtt_url, t, client_id=client_id, clean_session=True)):
        pass  # ends the persistent session


def test_manual_ack_cannot_hold_back_the_puback(mqtt_url: str) -> None:
    """Paho C acknowledges on arrival: an unacked message does not come back after a reconnect.

    This documents the limit the capabilities report (delivery_guarantee at-most-once on
    the subscriber, requeue_on_close false), so that a Paho upgrade that changes it shows here.
    """
    t = topic()
    client_id = f"omnibus-test-{uuid.uuid4().hex[:8]}"
    sub_url = url_of(mqtt_url, t, client_id=client_id, clean_session=False)
    with omnibus.publisher(url_of(mqtt_url, t)) as pub:
        with omnibus.subscriber(sub_url, auto_ack=False) as sub:
            pub.publish(b"unacked").result(timeout=10)
            first = sub.receive(timeout=10)
            assert bytes(first.payload) == b"unacked" and not first.settled
        with omnibus.subscriber(sub_url, auto_ack=False) as again:
            pub.publish(b"sentinel").result(timeout=10)
            assert bytes(again.receive(timeout=10).payload) == b"sentinel"  # not "unacked" again
    with omnibus.subscriber(url_of(mqtt_url, t, client_id=client_id, clean_session=True)):
        pass


def test_closed_group_member_does_not_requeue(mqtt_url: str) -> None:
    t = topic()
    sub_url = url_of(mqtt_url, t, group="g")
    with omnibus.publisher(url_of(mqtt_url, t)) as pub:
        first = omnibus.subscriber(sub_url, auto_ack=False)
        assert not first.capabilities()["requeue_on_close"]
        with omnibus.subscriber(sub_url, auto_ack=False) as second:
            # Round robin: publish until `first` holds a message, unacked.
            held = None
            for i in range(20):
                pub.publish(f"m{i}".encode()).result(timeout=10)
                got = first.receive_batch(1, timeout=0.5)
                if got:
                    held = got[0]
                    break
            assert held is not None
            first.close()
            pub.publish(b"sentinel").result(timeout=10)
            seen = [bytes(m.payload) for m in drain([second], 1)[0]]
            seen += [bytes(m.payload) for m in second.receive_batch(100, timeout=0.5)]
            assert b"sentinel" in seen
            assert bytes(held.payload) not in seen


# ---------------------------------------------------------------- broker restarts


def test_resubscribes_after_a_broker_restart_on_a_clean_session(mqtt_broker) -> None:  # type: ignore[no-untyped-def]
    url = url_of(mqtt_broker.url, topic())
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        pub.publish(b"before").result(timeout=10)
        assert bytes(sub.receive(timeout=10).payload) == b"before"
        mqtt_broker.restart()
        got: list[bytes] = []

        def arrived() -> bool:
            # The subscription is restored asynchronously after the reconnect:
            # publish until one gets through.
            try:
                pub.publish(b"after").result(timeout=5)
            except omnibus.Error:
                return False
            got.extend(bytes(m.payload) for m in sub.receive_batch(10, timeout=0.5))
            return b"after" in got

        assert wait_until(arrived, timeout=60, interval=0.2)


@pytest.mark.parametrize(("qos", "pub_clean"), [(1, False), (1, True), (2, False)],
                         ids=["qos1-persistent", "qos1-clean-publisher", "qos2-persistent"])
@pytest.mark.fault
def test_acknowledged_messages_survive_a_broker_crash(mqtt_broker, qos: int, pub_clean: bool) -> None:  # type: ignore[no-untyped-def]
    """Persistent subscriber session, SIGKILL mid-stream: no publish fails (the publisher replaces its
    client after the loss and sends what was unacknowledged again, whatever its own session), and every
    acknowledged message arrives, except what Mosquitto acknowledged after its last save before the crash.

    This also covers a Paho C defect: a QoS 1/2 PUBLISH whose write the crash cut off is kept by Paho
    with freed contents and sent as garbage after a reconnect (Mosquitto: "disconnected due to
    malformed packet", at every reconnect). The publisher abandons such a client; before it did, about
    half of these runs never got a PUBACK again.

    Mosquitto sends PUBACK when a message is in memory and writes its state to disk every
    autosave_interval (1 s here); a SIGKILL loses what came after the last save. No client can
    prevent that, so the test allows losses only among messages acknowledged in the last two
    seconds before the kill, counts them, and requires everything acknowledged earlier."""
    t = topic()
    tag = uuid.uuid4().hex[:8]
    sub_url = url_of(mqtt_broker.url, t, client_id=f"omnibus-crash-sub-{tag}", clean_session=False)
    pub_url = url_of(mqtt_broker.url, t, client_id=f"omnibus-crash-pub-{tag}", clean_session=pub_clean,
                     qos=qos, connect_timeout_ms=30000)
    n, batch = 6000, 100
    received: set[bytes] = set()
    attempts: list[int] = []
    stop = threading.Event()
    errors: list[BaseException] = []
    with omnibus.subscriber(sub_url, prefetch=10000) as sub:

        def consume() -> None:
            try:
                while not stop.is_set():
                    for m in sub.receive_batch(1000, timeout=0.1):
                        received.add(bytes(m.payload))
                        attempts.append(m.delivery_attempt)
            except BaseException as e:  # reported below
                errors.append(e)

        consumer = threading.Thread(target=consume)
        consumer.start()
        try:
            # Mosquitto saves its state every second (autosave_interval 1): let it
            # record both sessions before the crash, so that they survive it.
            db = mqtt_broker.dir / "mosquitto.db"
            with omnibus.publisher(pub_url) as pub:
                opened = time.time()
                assert wait_until(lambda: db.exists() and db.stat().st_mtime > opened + 1, timeout=30)
                deliveries = []
                done_at: dict[int, float] = {}
                killed_at = float("inf")
                for start in range(0, n, batch):
                    deliveries.append(pub.publish_many(
                        [f"{i}".encode() for i in range(start, start + batch)],
                        on_delivery=lambda d, start=start: done_at.setdefault(start, time.monotonic())))
                    if start == n // 3:
                        killed_at = time.monotonic()
                        mqtt_broker.restart(kill=True)
                assert pub.flush(timeout=120)
            acked = {str(start + i).encode() for start, d in zip(range(0, n, batch), deliveries)
                     for i in range(batch) if i not in {j for j, _ in d.failures()}}
            # Acknowledged well before the crash: Mosquitto had saved them.
            saved = {m for m in acked if done_at.get(int(m) - int(m) % batch, float("inf")) < killed_at - 2.0}
            failed = n - len(acked)
            wait_until(lambda: acked <= received, timeout=30)
            assert wait_until(lambda: saved <= received, timeout=60), \
                f"{len(saved - received)} messages acknowledged before the broker's last save never arrived"
            lost_unsaved = len(acked - received)
            assert failed == 0, [d.failures()[:1] for d in deliveries if d.failures()][:3]
        finally:
            stop.set()
            consumer.join()
    assert not errors
    print(f"\n{len(acked)} of {n} acknowledged, {failed} failed during the crash, "
          f"{attempts.count(2)} redelivered with DUP, {len(received)} distinct received, "
          f"{lost_unsaved} acknowledged in the last 2 s before the SIGKILL lost by the broker")
    with omnibus.subscriber(url_of(mqtt_broker.url, t, client_id=f"omnibus-crash-sub-{tag}", clean_session=True)):
        pass  # ends the persistent session


def test_connection_state_follows_the_broker(mqtt_broker) -> None:  # type: ignore[no-untyped-def]
    url = url_of(mqtt_broker.url, topic())
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        assert pub.connected is True and sub.connected is True
        mqtt_broker.stop()
        try:
            assert wait_until(lambda: pub.connected is False and sub.connected is False, timeout=30)
        finally:
            mqtt_broker.start()
        assert wait_until(lambda: pub.connected is True and sub.connected is True, timeout=60)
        pub.publish(b"back").result(timeout=10)
        assert bytes(sub.receive(timeout=10).payload) == b"back"


class SilentBroker:
    """A minimal MQTT 5 server on loopback whose first connection accepts CONNECT and every PUBLISH
    but never answers one (a broker or client state that lost the acknowledgements); later
    connections PUBACK each QoS 1 PUBLISH. It records the payloads each connection received."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[list[bytes]] = []
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # close() shut the listening socket down
                return
            with self.lock:
                if self.closed:
                    conn.close()
                    return
                got: list[bytes] = []
                self.received.append(got)
                self.conns.append(conn)
                t = threading.Thread(target=self._serve, args=(conn, got, len(self.received) > 1), daemon=True)
                self.threads.append(t)
            t.start()

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    @staticmethod
    def _varint(read: Callable[[int], bytes]) -> int:
        value, shift = 0, 0
        while True:
            b = read(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def _serve(self, conn: socket.socket, got: list[bytes], ack: bool) -> None:
        def read(n: int) -> bytes:
            return self._read(conn, n)

        try:
            with conn:
                while True:
                    kind = read(1)[0]
                    body = read(self._varint(read))
                    if kind >> 4 == 1:  # CONNECT -> CONNACK, MQTT 5, success, no properties
                        conn.sendall(b"\x20\x03\x00\x00\x00")
                    elif kind >> 4 == 3:  # PUBLISH (QoS 1): topic, packet id, properties, payload
                        tlen = int.from_bytes(body[:2], "big")
                        pid = body[2 + tlen:4 + tlen]
                        pos = [4 + tlen]

                        def rd(n: int) -> bytes:
                            out = body[pos[0]:pos[0] + n]
                            pos[0] += n
                            return out

                        plen = self._varint(rd)
                        got.append(body[pos[0] + plen:])
                        if ack:
                            conn.sendall(b"\x40\x02" + pid)
                    elif kind >> 4 == 12:  # PINGREQ
                        conn.sendall(b"\xd0\x00")
                    elif kind >> 4 == 14:  # DISCONNECT
                        return
        except (EOFError, OSError):
            return

    def close(self) -> None:
        """Stops accepting and serving, and joins every thread. Closing a socket does not wake a thread
        blocked in accept() or recv() on it (Linux); shutting it down does."""
        with self.lock:
            self.closed = True
            conns, threads = list(self.conns), list(self.threads)
        for s in (self.sock, *conns):
            with contextlib.suppress(OSError):  # already shut down by its peer
                s.shutdown(socket.SHUT_RDWR)
        for t in (self.acceptor, *threads):
            t.join(timeout=5)
            assert not t.is_alive(), f"{t.name} of the silent broker did not end"
        self.sock.close()


def test_publisher_replaces_a_client_that_gets_no_acknowledgement() -> None:
    """Connected, but no PUBACK for connect_timeout_ms: the publisher retires that client, connects a
    new one and sends the unacknowledged messages again, so every publish succeeds."""
    broker = SilentBroker()
    try:
        # 3 s, not less: Paho may take about a second to open a connection (see mqtt_driver.cpp).
        url = f"mqtt://127.0.0.1:{broker.port}/{topic()}?qos=1&connect_timeout_ms=3000"
        payloads = [f"m{i}".encode() for i in range(20)]
        with omnibus.publisher(url) as pub:
            d = pub.publish_many(payloads)
            assert d.wait(timeout=30), "the messages were never acknowledged"
            assert not d.failures()
        assert len(broker.received) >= 2, "no second connection"
        assert broker.received[0] == payloads  # sent once, never acknowledged
        assert broker.received[-1] == payloads  # the same messages again, in order
    finally:
        broker.close()
