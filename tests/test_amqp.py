"""amqp:// specifics beyond the conformance suite, against a real RabbitMQ on loopback."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid

import pytest

import omnibus
from conftest import receive_n
from omnibus.testing import wait_until

pytestmark = pytest.mark.skipif("amqp" in omnibus.unavailable_drivers(), reason="amqp:// is not in this build")

pika = pytest.importorskip("pika", reason="pika is not installed (make deps puts it in .venv)")

AMQP_TOOLS = pytest.mark.skipif(
    shutil.which("amqp-publish") is None or shutil.which("amqp-consume") is None,
    reason="amqp-publish/amqp-consume (Debian package amqp-tools) are not installed",
)


def name(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def url_of(amqp_url: str, exchange: str, **options: object) -> str:
    query = "&".join(f"{k}={'true' if v is True else 'false' if v is False else v}" for k, v in options.items())
    return f"{amqp_url}/{exchange}" + (f"?{query}" if query else "")


def pika_connection(amqp_url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(amqp_url + "/%2F"))


# ---------------------------------------------------------------- other clients


@AMQP_TOOLS
def test_omnibus_to_amqp_consume(amqp_url: str) -> None:
    ex, q = name("ex"), name("q")
    # queue= makes the publisher declare and bind a durable queue, so nothing is lost before a consumer comes.
    with omnibus.publisher(url_of(amqp_url, ex, queue=q)) as pub:
        pub.publish(b"from omnibus", key=b"sensor.1").result(timeout=10)
    out = subprocess.run(["amqp-consume", "--url", amqp_url, "-q", q, "-c", "1", "cat"],
                         capture_output=True, timeout=30, check=True).stdout
    assert out == b"from omnibus"


@AMQP_TOOLS
def test_amqp_publish_to_omnibus(amqp_url: str) -> None:
    ex = name("ex")
    with omnibus.subscriber(url_of(amqp_url, ex)) as sub:
        subprocess.run(["amqp-publish", "--url", amqp_url, "-e", ex, "-r", "dev.7", "-p", "-H", "h1: v1",
                        "-b", "from amqp-publish"], timeout=30, check=True)
        msg = sub.receive(timeout=10)
    assert bytes(msg.payload) == b"from amqp-publish"
    assert msg.key == b"dev.7"  # the routing key is the key
    assert msg.headers == [("h1", b"v1")]
    assert msg.topic == ex


def test_pika_both_ways_with_headers_as_a_table(amqp_url: str) -> None:
    ex = name("ex")
    conn = pika_connection(amqp_url)
    try:
        ch = conn.channel()
        ch.exchange_declare(ex, exchange_type="topic", durable=True)
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, ex, routing_key="#")
        with omnibus.publisher(url_of(amqp_url, ex)) as pub:
            pub.publish(b"to pika", key=b"a.b", headers=[("trace", b"abc"), ("n", b"1")]).result(timeout=10)

        got: list[tuple] = []
        assert wait_until(lambda: bool(got.append(ch.basic_get(q, auto_ack=True)) or got[-1][0]), timeout=10)
        method, props, body = got[-1]
        assert body == b"to pika" and method.routing_key == "a.b"
        assert props.headers == {"trace": b"abc", "n": b"1"} or props.headers == {"trace": "abc", "n": "1"}
        assert props.delivery_mode == 2  # persistent by default
        assert props.timestamp and abs(props.timestamp - time.time()) < 60

        with omnibus.subscriber(url_of(amqp_url, ex)) as sub:
            ch.basic_publish(ex, "c.d", b"from pika",
                             pika.BasicProperties(headers={"s": "text", "i": 42, "list": ["x", "y"]}))
            msg = sub.receive(timeout=10)
        assert bytes(msg.payload) == b"from pika" and msg.key == b"c.d"
        # Strings as bytes, numbers as their text, an array as one header per element.
        assert msg.headers == [("s", b"text"), ("i", b"42"), ("list", b"x"), ("list", b"y")]
    finally:
        conn.close()


# ---------------------------------------------------------------- exchanges, keys, queues


def test_direct_exchange_routes_by_binding_key(amqp_url: str) -> None:
    ex = name("direct")
    with omnibus.subscriber(url_of(amqp_url, ex, exchange_type="direct", binding_key="red")) as red, \
            omnibus.subscriber(url_of(amqp_url, ex, exchange_type="direct", binding_key="blue")) as blue, \
            omnibus.publisher(url_of(amqp_url, ex, exchange_type="direct")) as pub:
        pub.publish_many([b"r1", b"b1", b"r2"], keys=[b"red", b"blue", b"red"]).result(timeout=10)
        assert [bytes(m.payload) for m in receive_n(red, 2)] == [b"r1", b"r2"]
        assert [bytes(m.payload) for m in receive_n(blue, 1)] == [b"b1"]
        assert red.receive_batch(10, timeout=0.3) == []


def test_fanout_and_fixed_routing_key_carries_the_key_in_a_header(amqp_url: str) -> None:
    ex = name("fanout")
    with omnibus.subscriber(url_of(amqp_url, ex, exchange_type="fanout")) as sub, \
            omnibus.publisher(url_of(amqp_url, ex, exchange_type="fanout", routing_key="fixed")) as pub:
        pub.publish(b"v", key=b"my-key").result(timeout=10)
        pub.publish(b"w").result(timeout=10)
        a, b = receive_n(sub, 2)
    assert a.key == b"my-key" and a.headers == []  # from the omnibus-key header, which is not shown
    assert b.key == b"fixed"  # no key given: the routing key shows


def test_headers_exchange_binds_on_header_values(amqp_url: str) -> None:
    ex = name("headers")
    opts = {"exchange_type": "headers"}
    with omnibus.subscriber(url_of(amqp_url, ex, **opts, **{"bind.x-match": "all", "bind.color": "red"})) as sub, \
            omnibus.publisher(url_of(amqp_url, ex, **opts)) as pub:
        pub.publish(b"yes", headers={"color": b"red"}).result(timeout=10)
        with pytest.raises(omnibus.NotFound, match="unroutable"):  # mandatory: no binding matches blue
            pub.publish(b"no", headers={"color": b"blue"}).result(timeout=10)
        got = receive_n(sub, 1)
        assert bytes(got[0].payload) == b"yes"
        assert sub.receive_batch(10, timeout=0.3) == []


def test_default_exchange_routes_to_the_queue_named_by_the_routing_key(amqp_url: str) -> None:
    q = name("q")
    with omnibus.subscriber(f"{amqp_url}?queue={q}") as sub, \
            omnibus.publisher(f"{amqp_url}?routing_key={q}") as pub:
        pub.publish(b"direct to queue").result(timeout=10)
        msg = sub.receive(timeout=10)
    assert bytes(msg.payload) == b"direct to queue" and msg.topic == q


def test_passive_checks_report_a_missing_exchange_or_queue(amqp_url: str) -> None:
    missing = name("missing")
    with pytest.raises(omnibus.NotFound, match=f"exchange '{missing}'.*declare=false"):
        omnibus.publisher(url_of(amqp_url, missing, declare=False))
    ex = name("ex")
    with omnibus.publisher(url_of(amqp_url, ex)):
        pass  # declares the exchange
    with omnibus.publisher(url_of(amqp_url, ex, declare=False)):
        pass  # it exists now: the passive check passes
    with pytest.raises(omnibus.NotFound, match=f"queue '{missing}'.*404"):
        omnibus.subscriber(url_of(amqp_url, ex, declare=False, queue=missing))


def test_inequivalent_redeclare_is_invalid_argument(amqp_url: str) -> None:
    ex = name("ex")
    with omnibus.publisher(url_of(amqp_url, ex, exchange_type="fanout")):
        pass
    with pytest.raises(omnibus.InvalidArgument, match="406"):
        omnibus.publisher(url_of(amqp_url, ex, exchange_type="direct"))


def test_subscriber_without_exchange_or_queue_is_refused(amqp_url: str) -> None:
    with pytest.raises(omnibus.InvalidArgument, match="neither an exchange"):
        omnibus.subscriber(amqp_url)


def tagged(msgs: list[omnibus.Message], tag: bytes) -> list[bytes]:
    """Payloads of this test's messages: the standard exchanges are shared by every test of the session."""
    return [bytes(m.payload) for m in msgs if bytes(m.payload).startswith(tag)]


def test_standard_fanout_exchange_is_used_with_its_own_type(amqp_url: str) -> None:
    """amq.fanout exists on every broker as a fanout exchange: it is checked, not (re)declared as a topic
    exchange (which RabbitMQ refuses with 406), and a group queue gets a name outside the reserved amq. prefix."""
    group, tag = name("g"), name("m").encode()
    url = url_of(amqp_url, "amq.fanout")
    try:
        with omnibus.subscriber(url) as private, omnibus.subscriber(url_of(amqp_url, "amq.fanout", group=group)) as grp, \
                omnibus.publisher(url) as pub:
            assert private.capabilities()["nack"]
            payloads = [tag + b"-%d" % i for i in range(5)]
            pub.publish_many(payloads, keys=[b"any-key"] * 5).result(timeout=10)  # fanout ignores the routing key
            assert tagged(receive_n(private, 5), tag) == payloads
            got = receive_n(grp, 5)
            assert tagged(got, tag) == payloads and got[0].topic == "amq.fanout"
        with pika_connection(amqp_url) as conn:
            ch = conn.channel()
            assert ch.queue_declare(f"amq_fanout.{group}", passive=True).method.message_count == 0
    finally:
        with pika_connection(amqp_url) as conn:
            conn.channel().queue_delete(f"amq_fanout.{group}")


def test_standard_direct_exchange_routes_by_binding_key(amqp_url: str) -> None:
    key, group, tag = name("k"), name("g"), name("m").encode()
    try:
        with omnibus.subscriber(url_of(amqp_url, "amq.direct", binding_key=key)) as private, \
                omnibus.subscriber(url_of(amqp_url, "amq.direct", binding_key=key, group=group)) as grp, \
                omnibus.publisher(url_of(amqp_url, "amq.direct")) as pub:
            pub.publish(tag + b"-1", key=key.encode()).result(timeout=10)
            with pytest.raises(omnibus.NotFound, match="unroutable"):  # mandatory: nothing is bound to this key
                pub.publish(tag + b"-2", key=b"unbound-" + key.encode()).result(timeout=10)
            pub.publish(tag + b"-3", key=key.encode()).result(timeout=10)
            for sub in (private, grp):
                got = receive_n(sub, 2)
                assert tagged(got, tag) == [tag + b"-1", tag + b"-3"] and got[0].key == key.encode()
                assert sub.receive_batch(10, timeout=0.3) == []
    finally:
        with pika_connection(amqp_url) as conn:
            conn.channel().queue_delete(f"amq_direct.{group}")


@pytest.mark.parametrize("exchange", ["amq.topic", "amq.headers", "amq.match"])
def test_other_standard_exchanges_open_with_their_own_type(amqp_url: str, exchange: str) -> None:
    with omnibus.publisher(url_of(amqp_url, exchange, mandatory=False)) as pub:
        pub.publish(b"nobody listens").result(timeout=10)


def test_a_type_other_than_the_standard_exchanges_own_is_invalid(amqp_url: str) -> None:
    with pytest.raises(omnibus.InvalidArgument, match="amq.fanout is the broker's standard fanout exchange"):
        omnibus.publisher(url_of(amqp_url, "amq.fanout", exchange_type="topic"))
    with omnibus.publisher(url_of(amqp_url, "amq.fanout", exchange_type="fanout", declare=False)):
        pass  # its own type, given or not, and a passive check as with declare=false


def test_a_reserved_name_that_does_not_exist_is_not_found(amqp_url: str) -> None:
    """Every amq.* name is the broker's: it is checked, never created (RabbitMQ would refuse with 403)."""
    with pytest.raises(omnibus.NotFound, match="amq.missing-"):
        omnibus.publisher(url_of(amqp_url, name("amq.missing")))


# ---------------------------------------------------------------- confirms, returns, limits


def test_unroutable_message_fails_alone_with_not_found(amqp_url: str) -> None:
    ex = name("direct")
    with omnibus.subscriber(url_of(amqp_url, ex, exchange_type="direct", binding_key="bound")) as sub, \
            omnibus.publisher(url_of(amqp_url, ex, exchange_type="direct")) as pub:
        d = pub.publish_many([b"a", b"b", b"c", b"d"], keys=[b"bound", b"nowhere", b"bound", b"nowhere"])
        with pytest.raises(omnibus.NotFound, match="unroutable.*'nowhere'") as info:
            d.result(timeout=10)
        assert [i for i, _ in info.value.failures] == [1, 3]
        assert sorted(bytes(m.payload) for m in receive_n(sub, 2)) == [b"a", b"c"]


def test_mandatory_false_accepts_unroutable_messages(amqp_url: str) -> None:
    with omnibus.publisher(url_of(amqp_url, name("direct"), exchange_type="direct", mandatory=False)) as pub:
        pub.publish(b"dropped by the broker", key=b"nowhere").result(timeout=10)


def test_broker_nack_fails_the_message_with_resource_exhausted(amqp_url: str) -> None:
    ex, q = name("ex"), name("q")
    opts = {"queue": q, "arg.x-max-length": 2, "arg.x-overflow": "reject-publish"}
    with omnibus.publisher(url_of(amqp_url, ex, **opts)) as pub:
        d = pub.publish_many([b"1", b"2", b"3"])
        with pytest.raises(omnibus.ResourceExhausted, match="basic.nack") as info:
            d.result(timeout=10)
        assert [i for i, _ in info.value.failures] == [2]


def test_message_over_max_message_bytes_fails_alone(amqp_url: str) -> None:
    ex = name("ex")
    with omnibus.subscriber(url_of(amqp_url, ex)) as sub, \
            omnibus.publisher(url_of(amqp_url, ex, max_message_bytes=1000)) as pub:
        assert pub.capabilities()["max_message_bytes"] == 1000
        d = pub.publish_many([b"small", b"x" * 1001, b"small too"])
        with pytest.raises(omnibus.ResourceExhausted, match="max_message_bytes=1000") as info:
            d.result(timeout=10)
        assert [i for i, _ in info.value.failures] == [1]
        assert sorted(bytes(m.payload) for m in receive_n(sub, 2)) == [b"small", b"small too"]


def test_confirm_false_is_at_most_once_and_delivers(amqp_url: str) -> None:
    ex = name("ex")
    with omnibus.subscriber(url_of(amqp_url, ex)) as sub, \
            omnibus.publisher(url_of(amqp_url, ex, confirm=False, persistent=False)) as pub:
        assert pub.capabilities()["delivery_guarantee"] == "at-most-once"
        pub.publish_many([str(i).encode() for i in range(500)]).result(timeout=10)
        assert len(receive_n(sub, 500)) == 500


def test_wrong_password_is_a_clear_non_retryable_error(amqp_url: str) -> None:
    bad = amqp_url.replace("guest:guest@", "guest:wrong@")
    with pytest.raises(omnibus.Unavailable, match=r"vhost '/'.*user 'guest'.*403 ACCESS_REFUSED.*wrong user name or password") as info:
        omnibus.publisher(url_of(bad, name("ex")))
    assert not info.value.retryable
    assert isinstance(info.value, ConnectionError)


def test_unknown_vhost_is_refused_naming_it(amqp_url: str) -> None:
    with pytest.raises(omnibus.Unavailable, match=r"vhost 'nope'.*530"):
        omnibus.subscriber(url_of(amqp_url, name("ex"), vhost="nope"))


def test_nothing_listening_is_unavailable_not_a_hang() -> None:
    # Port 1 on loopback: nothing listens there, and nothing leaves the machine.
    with pytest.raises(omnibus.Unavailable, match="127.0.0.1:1"):
        omnibus.publisher("amqp://guest:guest@127.0.0.1:1/ex?connect_timeout_ms=1500")


# ---------------------------------------------------------------- consuming


def test_prefetch_bounds_unacked_deliveries(amqp_url: str) -> None:
    ex = name("ex")
    with omnibus.subscriber(url_of(amqp_url, ex), auto_ack=False, prefetch=5) as sub, \
            omnibus.publisher(url_of(amqp_url, ex)) as pub:
        pub.publish_many([str(i).encode() for i in range(20)]).result(timeout=10)
        first = receive_n(sub, 5)
        # basic.qos prefetch_count=5: nothing more comes until something is acked.
        assert sub.receive_batch(100, timeout=0.5) == []
        sub.ack(first)
        more = receive_n(sub, 5)
        assert [int(bytes(m.payload)) for m in first + more] == list(range(10))
        sub.ack(more)


def test_nack_without_requeue_dead_letters_through_a_dlx(amqp_url: str) -> None:
    ex, dlx = name("work"), name("dlx")
    work_url = url_of(amqp_url, ex, group="workers", nack_requeue=False, **{"arg.x-dead-letter-exchange": dlx})
    with omnibus.subscriber(url_of(amqp_url, dlx, exchange_type="fanout")) as dead, \
            omnibus.subscriber(work_url, auto_ack=False) as work, \
            omnibus.publisher(url_of(amqp_url, ex)) as pub:
        pub.publish_many([b"good", b"poison"], keys=[b"job.1", b"job.2"]).result(timeout=10)
        for m in receive_n(work, 2):
            (m.ack if bytes(m.payload) == b"good" else m.nack)()
        msg = dead.receive(timeout=10)
        assert bytes(msg.payload) == b"poison" and msg.key == b"job.2"
        assert msg.topic == dlx
        assert work.receive_batch(10, timeout=0.3) == []  # not requeued


def test_heartbeats_keep_an_idle_connection(amqp_url: str) -> None:
    ex = name("ex")
    with omnibus.subscriber(url_of(amqp_url, ex, heartbeat=1)) as sub, \
            omnibus.publisher(url_of(amqp_url, ex, heartbeat=1)) as pub:
        # Idle for several heartbeat intervals: a client that did not send
        # heartbeats would be disconnected by the broker after two missed ones.
        assert sub.receive_batch(1, timeout=3.5) == []
        pub.publish(b"still here").result(timeout=10)
        assert bytes(sub.receive(timeout=10).payload) == b"still here"


def test_quorum_queue_counts_deliveries(amqp_url: str) -> None:
    ex = name("ex")
    url = url_of(amqp_url, ex, group="q", **{"arg.x-queue-type": "quorum"})
    with omnibus.subscriber(url, auto_ack=False) as sub, omnibus.publisher(url_of(amqp_url, ex)) as pub:
        pub.publish(b"again").result(timeout=10)
        attempts = []
        for _ in range(3):
            m = sub.receive(timeout=10)
            attempts.append(m.delivery_attempt)
            m.nack()
        assert attempts == [1, 2, 3]


# ---------------------------------------------------------------- broker restarts (last: they restart the session's broker)


def test_subscriber_and_publisher_reconnect_after_a_broker_restart(amqp_broker) -> None:  # type: ignore[no-untyped-def]
    ex = name("ex")
    url = url_of(amqp_broker.url, ex, group="survivors")
    with omnibus.subscriber(url) as sub, omnibus.publisher(url_of(amqp_broker.url, ex)) as pub:
        pub.publish(b"before").result(timeout=10)
        assert bytes(sub.receive(timeout=10).payload) == b"before"
        amqp_broker.restart()
        got: list[bytes] = []

        def arrived() -> bool:
            try:
                pub.publish(b"after").result(timeout=5)
            except omnibus.Error:
                return False
            got.extend(bytes(m.payload) for m in sub.receive_batch(10, timeout=0.5))
            return b"after" in got

        assert wait_until(arrived, timeout=120, interval=0.2)


@pytest.mark.fault
def test_confirmed_messages_survive_a_broker_crash(amqp_broker) -> None:  # type: ignore[no-untyped-def]
    """Confirms + durable queue + persistent messages, SIGKILL mid-stream: no publish fails (the
    restart is shorter than connect_timeout_ms: what was unconfirmed is sent again) and every
    confirmed message arrives."""
    ex, q = name("ex"), name("crash")
    pub_url = url_of(amqp_broker.url, ex, queue=q, connect_timeout_ms=60000)
    confirmed: list[int] = []
    failed: list[int] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            with omnibus.publisher(pub_url) as pub:
                i = 0
                while not stop.is_set():
                    batch = list(range(i, i + 100))
                    d = pub.publish_many([str(x).encode() for x in batch])
                    d.wait(timeout=120)
                    bad = {idx for idx, _ in d.failures()}
                    confirmed.extend(x for k, x in enumerate(batch) if k not in bad)
                    failed.extend(x for k, x in enumerate(batch) if k in bad)
                    i += 100
        except BaseException as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=produce)
    t.start()
    try:
        assert wait_until(lambda: len(confirmed) >= 3000, timeout=60)
        amqp_broker.restart(kill=True)
        mark = len(confirmed)
        assert wait_until(lambda: len(confirmed) >= mark + 3000, timeout=180), "publishing did not resume"
    finally:
        stop.set()
        t.join(300)
    assert not errors
    print(f"\nconfirmed {len(confirmed)}, failed {len(failed)} across a SIGKILL restart")
    assert not failed, f"{len(failed)} publishes failed across a restart shorter than connect_timeout_ms"
    want = set(confirmed)
    seen: set[int] = set()
    with omnibus.subscriber(url_of(amqp_broker.url, ex, queue=q), prefetch=5000) as sub:
        def all_there() -> bool:
            seen.update(int(bytes(m.payload)) for m in sub.receive_batch(5000, timeout=0.2))
            return want <= seen

        assert wait_until(all_there, timeout=120, interval=0), f"{len(want - seen)} confirmed messages are missing"


def test_connection_state_follows_the_broker(amqp_broker) -> None:  # type: ignore[no-untyped-def]
    url = f"{amqp_broker.url}/state-{uuid.uuid4().hex[:8]}"
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        assert pub.connected is True and sub.connected is True
        amqp_broker.stop()
        try:
            assert wait_until(lambda: pub.connected is False and sub.connected is False, timeout=60)
        finally:
            amqp_broker.start()
        assert wait_until(lambda: pub.connected is True and sub.connected is True, timeout=60)
