"""nats:// specifics beyond the conformance suite, against nats-server 2 (JetStream on) on loopback.

The independent client is nats-py (asyncio), spoken to both ways, core NATS and JetStream.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

import omnibus
from omnibus.testing import wait_until

pytestmark = pytest.mark.skipif("nats" in omnibus.unavailable_drivers(), reason="nats:// is not in this build")

T = TypeVar("T")


def name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def url_of(nats_url: str, subject: str, **options: object) -> str:
    query = "&".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items())
    return f"{nats_url.rstrip('/')}/{subject}" + (f"?{query}" if query else "")


def drain(subs: list[omnibus.Subscriber], n: int, timeout: float = 30) -> list[list[omnibus.Message]]:
    """Receive from every subscriber until n messages arrived in all (or the timeout)."""
    got: list[list[omnibus.Message]] = [[] for _ in subs]

    def step() -> bool:
        for i, s in enumerate(subs):
            got[i].extend(s.receive_batch(1000, timeout=0.02))
        return sum(map(len, got)) >= n

    wait_until(step, timeout=timeout, interval=0)
    return got


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(fn())  # type: ignore[arg-type]


def nats_py() -> Any:
    return pytest.importorskip("nats", reason="nats-py (the independent client) is not installed")


# ---------------------------------------------------------------- interoperability: core NATS


def test_omnibus_to_nats_py_with_key_and_headers(nats_url: str) -> None:
    nats = nats_py()
    subject = f"interop.{name()}"

    async def main() -> Any:
        nc = await nats.connect(nats_url)
        try:
            sub = await nc.subscribe(subject)
            await nc.flush()  # the SUB is at the server before omnibus publishes
            with omnibus.publisher(url_of(nats_url, subject)) as pub:
                pub.publish(b"from omnibus", key=b"k1", headers=[("h1", b"v1"), ("trace", b"abc")]).result(timeout=10)
            return await sub.next_msg(timeout=10)
        finally:
            await nc.close()

    msg = run(main)
    assert msg.subject == subject and msg.data == b"from omnibus"
    # Plain NATS headers: the key as Omnibus-Key, the application's own as themselves.
    assert msg.headers == {"Omnibus-Key": "k1", "h1": "v1", "trace": "abc", "Omnibus-Order": "h1,trace"}


def test_nats_py_to_omnibus(nats_url: str) -> None:
    nats = nats_py()
    subject = f"interop.{name()}"
    with omnibus.subscriber(url_of(nats_url, subject)) as sub:

        async def main() -> None:
            nc = await nats.connect(nats_url)
            try:
                await nc.publish(subject, b"from nats-py", headers={"Omnibus-Key": "k2", "h1": "v1"})
                await nc.publish(subject, b"plain")
                await nc.flush()
            finally:
                await nc.close()

        run(main)
        first, second = drain([sub], 2)[0]
    assert bytes(first.payload) == b"from nats-py" and first.key == b"k2" and first.headers == [("h1", b"v1")]
    assert first.topic == subject and first.delivery_attempt == 1
    assert bytes(second.payload) == b"plain" and second.key is None and second.headers == []


# ---------------------------------------------------------------- request-reply


def test_nats_py_request_answered_by_omnibus_subscriber(nats_url: str) -> None:
    nats = nats_py()
    subject = f"rpc.{name()}"
    with omnibus.subscriber(url_of(nats_url, subject), codec="json") as sub:
        answered = threading.Event()

        def serve() -> None:
            msg = sub.receive(timeout=10)
            assert msg.reply_to and msg.reply_to.startswith("_INBOX.")  # nats-py's inbox
            msg.reply({"got": msg.value, "h": msg.header("h1").decode()}, headers={"served-by": "omnibus"})
            answered.set()

        server = threading.Thread(target=serve)
        server.start()

        async def main() -> Any:
            nc = await nats.connect(nats_url)
            try:
                return await nc.request(subject, b'{"q": 1}', timeout=10, headers={"h1": "v1"})
            finally:
                await nc.close()

        reply = run(main)
        server.join(timeout=10)
    assert answered.is_set()
    assert json.loads(reply.data) == {"got": {"q": 1}, "h": "v1"}
    assert reply.headers == {"served-by": "omnibus"}


def test_omnibus_request_answered_by_nats_py(nats_url: str) -> None:
    nats = nats_py()
    subject = f"rpc.{name()}"
    ready = threading.Event()
    done = threading.Event()
    seen: list[Any] = []

    async def responder() -> None:
        nc = await nats.connect(nats_url)
        try:
            async def handle(msg: Any) -> None:
                seen.append(msg)
                await msg.respond(b"re:" + msg.data)

            await nc.subscribe(subject, cb=handle)
            await nc.flush()
            ready.set()
            while not done.is_set():
                await asyncio.sleep(0.01)
        finally:
            await nc.close()

    thread = threading.Thread(target=run, args=(responder,))
    thread.start()
    try:
        assert ready.wait(10)
        with omnibus.publisher(url_of(nats_url, subject)) as pub:
            reply = pub.request(b"ping", key=b"k1", headers={"trace": "t1"}, timeout=10)
            again = pub.request(b"pong", timeout=10)
    finally:
        done.set()
        thread.join(timeout=10)
    assert bytes(reply.payload) == b"re:ping" and bytes(again.payload) == b"re:pong"
    assert reply.topic.startswith("_INBOX.") and reply.reply_to is None
    # The request carried the key and headers as plain NATS headers, and a reply subject of its own per request.
    assert seen[0].headers == {"Omnibus-Key": "k1", "trace": "t1"}
    assert seen[0].reply and seen[1].reply and seen[0].reply != seen[1].reply


def test_request_on_jetstream_is_unsupported(nats_url: str) -> None:
    subject = name()
    url = url_of(nats_url, subject, stream=subject)
    with omnibus.publisher(url) as pub:
        assert pub.capabilities()["request_reply"] is False
        with pytest.raises(omnibus.Unsupported, match=r"request-reply .*nats:// core"):
            pub.request(b"x", timeout=1)
    with omnibus.publisher(url_of(nats_url, subject)) as core:
        assert core.capabilities()["request_reply"] is True


def test_request_is_interrupted_by_ctrl_c(nats_url: str) -> None:
    # Ctrl-C (SIGINT, as test_interrupt.py sends it) ends the wait long before the request's timeout.
    import os
    import signal

    url = url_of(nats_url, name())
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    try:
        with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:  # sub never replies
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                pub.request(b"stuck", timeout=60)  # a Timeout instead would fail the test
            assert sub.receive(timeout=10).reply_to  # the request was sent once
            assert sub.receive_batch(10, timeout=0.2) == []
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------- interoperability: JetStream


def test_nats_py_jetstream_publish_to_omnibus_consumer(nats_url: str) -> None:
    nats = nats_py()
    stream = name()
    subject = f"js.{stream}"
    with omnibus.subscriber(url_of(nats_url, subject, stream=stream), auto_ack=False) as sub:

        async def main() -> list[int]:
            nc = await nats.connect(nats_url)
            try:
                js = nc.jetstream()
                acks = [await js.publish(subject, f"py-{i}".encode(), headers={"Omnibus-Key": f"k{i}"}) for i in range(3)]
                return [a.seq for a in acks]
            finally:
                await nc.close()

        seqs = run(main)
        got = drain([sub], 3)[0]
        sub.ack(got)
    assert seqs == [1, 2, 3]  # stored in the stream omnibus created
    assert [bytes(m.payload) for m in got] == [b"py-0", b"py-1", b"py-2"]
    assert [m.key for m in got] == [b"k0", b"k1", b"k2"]
    assert all(m.delivery_attempt == 1 for m in got)


def test_omnibus_jetstream_publish_to_nats_py_pull_consumer(nats_url: str) -> None:
    nats = nats_py()
    stream = name()
    subject = f"js.{stream}"
    with omnibus.publisher(url_of(nats_url, subject, stream=stream)) as pub:
        pub.publish_many([b"a", b"b", b"c"], keys=[b"k", None, b"\x00bin"]).result(timeout=10)

    async def main() -> list[Any]:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            psub = await js.pull_subscribe(subject, durable="py", stream=stream)
            msgs = await psub.fetch(3, timeout=10)
            for m in msgs:
                await m.ack()
            return msgs
        finally:
            await nc.close()

    msgs = run(main)
    assert [m.data for m in msgs] == [b"a", b"b", b"c"]
    assert msgs[0].headers == {"Omnibus-Key": "k"}
    assert msgs[1].headers in (None, {})
    assert msgs[2].headers == {"Omnibus-Key-B64": "AGJpbg=="}  # not text: base64
    assert [m.metadata.sequence.stream for m in msgs] == [1, 2, 3]


# ---------------------------------------------------------------- core NATS


def test_wildcards(nats_url: str) -> None:
    base = name()
    with omnibus.subscriber(url_of(nats_url, f"{base}.*.temp")) as star, \
            omnibus.subscriber(url_of(nats_url, f"{base}.>")) as rest:
        for leaf in ("a.temp", "b.temp", "a.humidity", "a.temp.raw"):
            with omnibus.publisher(url_of(nats_url, f"{base}.{leaf}")) as pub:
                pub.publish(leaf.encode()).result(timeout=10)
        got_star = drain([star], 2)[0]
        got_rest = drain([rest], 4)[0]
        assert star.receive_batch(10, timeout=0.3) == []  # nothing else matched '*'
    assert sorted(m.topic for m in got_star) == [f"{base}.a.temp", f"{base}.b.temp"]
    assert sorted(bytes(m.payload) for m in got_rest) == [b"a.humidity", b"a.temp", b"a.temp.raw", b"b.temp"]


@pytest.mark.parametrize("option", ["group", "queue"])
def test_queue_group_competing_consumers(nats_url: str, option: str) -> None:
    subject = name()
    sub_url = url_of(nats_url, subject, **{option: "workers"})
    n = 400
    with omnibus.subscriber(sub_url) as a, omnibus.subscriber(sub_url) as b, \
            omnibus.subscriber(url_of(nats_url, subject)) as everything, \
            omnibus.publisher(url_of(nats_url, subject)) as pub:
        pub.publish_many([str(i).encode() for i in range(n)]).result(timeout=30)
        got_a, got_b = drain([a, b], n)
        assert len(drain([everything], n)[0]) == n  # a plain subscription still sees all
    payloads = sorted(bytes(m.payload) for m in got_a + got_b)
    assert payloads == sorted(str(i).encode() for i in range(n))  # no loss, no duplicate
    assert got_a and got_b, "one member got everything"


def test_group_and_queue_must_agree(nats_url: str) -> None:
    with pytest.raises(omnibus.InvalidArgument, match="queue= is the NATS name of group="):
        omnibus.subscriber(url_of(nats_url, name(), group="a", queue="b"))


def test_binary_keys_and_unusual_headers_round_trip_in_order(nats_url: str) -> None:
    url = url_of(nats_url, name())
    headers = [("z", b"1"), ("Omnibus-Key", b"not the key"), ("a", b" padded "), ("", b"empty name"),
               ("with space", b"x"), ("z", b"2"), ("a", b""), ("ctl", b"\r\n"), ("ok", "ü".encode())]
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        pub.publish(b"p", key=b"\x00\xff", headers=headers).result(timeout=10)
        pub.publish(b"q", key=b"").result(timeout=10)
        first, second = drain([sub], 2)[0]
    assert first.key == b"\x00\xff"
    assert first.headers == headers
    assert second.key == b"" and second.headers == []


def test_send_timestamp_carries_the_publish_time(nats_url: str) -> None:
    url = url_of(nats_url, name())
    with omnibus.subscriber(url) as sub, omnibus.publisher(url, send_timestamp=True) as pub:
        pub.publish(b"p", headers=[("h", b"1")], timestamp_ms=1_700_000_000_000).result(timeout=10)
        msg = sub.receive(timeout=10)
    assert msg.headers == [("h", b"1")]  # the timestamp header is not an application header
    assert msg.timestamp_ms == 1_700_000_000_000


def test_capabilities_tell_core_from_jetstream(nats_url: str) -> None:
    subject = name()
    with omnibus.publisher(url_of(nats_url, subject)) as core, \
            omnibus.publisher(url_of(nats_url, subject, stream=subject)) as js:
        c, j = core.capabilities(), js.capabilities()
    assert c["delivery_guarantee"] == "at-most-once"
    assert not c["nack"] and not c["ack_deadline"] and not c["durable"] and not c["delivery_count"]
    assert j["delivery_guarantee"] == "at-least-once"
    assert j["nack"] and j["ack_deadline"] and j["durable"] and j["delivery_count"] and j["requeue_on_close"]
    assert c["keys"] and c["headers"] and c["competing_consumers"] and not c["key_affinity"]
    assert c["max_message_bytes"] == j["max_message_bytes"] == 1024 * 1024  # the server's max_payload


# ---------------------------------------------------------------- bad input


def test_nack_on_core_nats_is_unsupported(nats_url: str) -> None:
    url = url_of(nats_url, name())
    with omnibus.subscriber(url, auto_ack=False) as sub, omnibus.publisher(url) as pub:
        pub.publish(b"x").result(timeout=10)
        msg = sub.receive(timeout=10)
        with pytest.raises(omnibus.Unsupported, match="nack"):
            msg.nack()
        msg.ack()  # accepted: core NATS has nothing to acknowledge


@pytest.mark.parametrize(
    ("subject", "rule"),
    [("with%20space", "whitespace"), ("a..b", "may not be empty"), ("a.*", "wildcards"), ("a.>", "wildcards"),
     ("tab%09x", "whitespace")],
    ids=["space", "empty-token", "star", "gt", "tab"],
)
def test_invalid_publish_subjects(nats_url: str, subject: str, rule: str) -> None:
    with pytest.raises(omnibus.InvalidArgument, match=rule):
        omnibus.publisher(url_of(nats_url, subject))


@pytest.mark.parametrize(("subject", "rule"), [("with%20space", "whitespace"), ("a.>.b", "last token"), (".a", "empty")])
def test_invalid_subscribe_subjects(nats_url: str, subject: str, rule: str) -> None:
    with pytest.raises(omnibus.InvalidArgument, match=rule):
        omnibus.subscriber(url_of(nats_url, subject))


@pytest.mark.parametrize("mode", ["core", "jetstream"])
def test_message_above_max_payload_fails_alone(nats_url: str, mode: str) -> None:
    subject = name()
    options = {"stream": subject} if mode == "jetstream" else {}
    with omnibus.subscriber(url_of(nats_url, subject, **options)) as sub, \
            omnibus.publisher(url_of(nats_url, subject, **options)) as pub:
        limit = pub.capabilities()["max_message_bytes"]
        delivery = pub.publish_many([b"before", b"x" * (limit + 1), b"after", b"k" * (limit - 10)],
                                    keys=[None, None, None, b"a key that makes it too big"])
        with pytest.raises(omnibus.ResourceExhausted, match="max_payload of 1048576") as info:
            delivery.result(timeout=30)
        assert [i for i, _ in info.value.failures] == [1, 3]  # the key and its header count
        got = drain([sub], 2)[0]
    assert [bytes(m.payload) for m in got] == [b"before", b"after"]


def test_jetstream_only_options_on_core_nats_are_refused(nats_url: str) -> None:
    with pytest.raises(omnibus.InvalidArgument, match="stream=NAME"):
        omnibus.subscriber(url_of(nats_url, name(), durable="d"))
    with pytest.raises(omnibus.InvalidArgument, match="JetStream setting"):
        omnibus.subscriber(url_of(nats_url, name(), ack_wait="5s"))
    with pytest.raises(omnibus.InvalidArgument, match="duplicate"):
        omnibus.publisher(url_of(nats_url, name(), msg_id=True))


def test_bad_names_and_durations(nats_url: str) -> None:
    with pytest.raises(omnibus.InvalidArgument, match="stream name 'a.b'"):
        omnibus.publisher(url_of(nats_url, name(), stream="a.b"))
    with pytest.raises(omnibus.InvalidArgument, match="not a duration"):
        omnibus.subscriber(url_of(nats_url, name(), stream=name(), ack_wait="soon"))
    with pytest.raises(omnibus.InvalidArgument, match="durable consumer"):
        omnibus.subscriber(url_of(nats_url, name(), stream=name(), group="g.1"))


def test_unknown_host_and_refused_port_are_unavailable() -> None:
    from omnibus.testing.brokers import free_port

    with pytest.raises(omnibus.Unavailable, match="no-such-host.invalid") as info:
        omnibus.publisher("nats://no-such-host.invalid:4222/t?connect_timeout_ms=2000")
    assert isinstance(info.value, ConnectionError)
    port = free_port()
    with pytest.raises(omnibus.Unavailable, match=f"127.0.0.1:{port}"):
        omnibus.subscriber(f"nats://127.0.0.1:{port}/t?connect_timeout_ms=2000")


# ---------------------------------------------------------------- JetStream


def test_existing_stream_that_does_not_capture_the_subject(nats_url: str) -> None:
    stream = name()
    with omnibus.publisher(url_of(nats_url, f"{stream}.a", stream=stream)):
        pass  # creates the stream with subject <stream>.a
    with pytest.raises(omnibus.InvalidArgument, match=r"does not capture subject .*its subjects: .*\.a"):
        omnibus.publisher(url_of(nats_url, f"{stream}.b", stream=stream))
    with pytest.raises(omnibus.NotFound, match="create_stream=false"):
        omnibus.publisher(url_of(nats_url, name(), stream=name(), create_stream=False))


def test_durable_group_resumes_where_it_left_off(nats_url: str) -> None:
    stream = name()
    url = url_of(nats_url, stream, stream=stream)
    sub_url = url_of(nats_url, stream, stream=stream, group="workers")
    with omnibus.publisher(url) as pub:
        pub.publish_many([f"early-{i}".encode() for i in range(5)]).result(timeout=10)
        with omnibus.subscriber(sub_url) as sub:  # a new durable starts with the first message
            got = drain([sub], 5)[0]
        assert [bytes(m.payload) for m in got] == [f"early-{i}".encode() for i in range(5)]
        pub.publish_many([f"late-{i}".encode() for i in range(5)]).result(timeout=10)  # while nobody listens
        with omnibus.subscriber(sub_url) as sub:
            got = drain([sub], 5)[0]
            assert sub.receive_batch(10, timeout=0.3) == []  # the acked ones do not come again
    assert [bytes(m.payload) for m in got] == [f"late-{i}".encode() for i in range(5)]


def test_private_subscriber_starts_with_new_messages_unless_deliver_all(nats_url: str) -> None:
    stream = name()
    url = url_of(nats_url, stream, stream=stream)
    with omnibus.publisher(url) as pub:
        pub.publish(b"old").result(timeout=10)
        with omnibus.subscriber(url) as new, omnibus.subscriber(url_of(nats_url, stream, stream=stream, deliver="all")) as all_:
            pub.publish(b"new").result(timeout=10)
            assert [bytes(m.payload) for m in drain([new], 1)[0]] == [b"new"]
            assert [bytes(m.payload) for m in drain([all_], 2)[0]] == [b"old", b"new"]


def test_redelivery_after_ack_wait_counts_attempts_and_max_deliver_stops_it(nats_url: str) -> None:
    stream = name()
    url = url_of(nats_url, stream, stream=stream, ack_wait="300ms", max_deliver=3)
    with omnibus.subscriber(url, auto_ack=False) as sub, omnibus.publisher(url) as pub:
        pub.publish(b"slow").result(timeout=10)
        attempts = [sub.receive(timeout=10).delivery_attempt for _ in range(3)]  # never acked
        assert attempts == [1, 2, 3]
        assert sub.receive_batch(10, timeout=1.0) == []  # max_deliver=3 reached: no fourth
        pub.publish(b"nacked").result(timeout=10)
        msgs = []
        for _ in range(3):
            m = sub.receive(timeout=10)
            msgs.append(m.delivery_attempt)
            m.nack()  # the third nack is a TERM: nothing comes back
        assert msgs == [1, 2, 3]
        assert sub.receive_batch(10, timeout=1.0) == []


def test_msg_id_lets_the_stream_drop_duplicates(nats_url: str) -> None:
    stream = name()
    url = url_of(nats_url, stream, stream=stream)
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        # The application's own Nats-Msg-Id: the stream stores the message once.
        for _ in range(2):
            pub.publish(b"once", headers=[("Nats-Msg-Id", b"order-42")]).result(timeout=10)
        with omnibus.publisher(url, msg_id=True) as ided:
            ided.publish_many([b"a", b"b"]).result(timeout=10)
        got = drain([sub], 3)[0]
        assert sub.receive_batch(10, timeout=0.3) == []
    assert [bytes(m.payload) for m in got] == [b"once", b"a", b"b"]
    assert got[0].headers == [("Nats-Msg-Id", b"order-42")]


# ---------------------------------------------------------------- broker restarts


@pytest.mark.parametrize("mode", ["core", "jetstream"])
def test_reconnects_after_a_broker_restart(nats_broker: Any, mode: str) -> None:  # type: ignore[no-untyped-def]
    subject = name()
    options = {"stream": subject, "group": "g"} if mode == "jetstream" else {}
    url = url_of(nats_broker.url, subject, **options)
    with omnibus.subscriber(url) as sub, omnibus.publisher(url, ack_timeout_ms=2000) as pub:
        pub.publish(b"before").result(timeout=10)
        assert bytes(sub.receive(timeout=10).payload) == b"before"
        nats_broker.restart()
        got: list[bytes] = []

        def arrived() -> bool:
            try:
                pub.publish(b"after").result(timeout=5)
            except omnibus.Error:
                return False  # still reconnecting
            got.extend(bytes(m.payload) for m in sub.receive_batch(10, timeout=0.5))
            return b"after" in got

        assert wait_until(arrived, timeout=60, interval=0.2)


def test_connection_state_shows_in_errors_while_the_broker_is_down(nats_broker: Any) -> None:  # type: ignore[no-untyped-def]
    url = url_of(nats_broker.url, name(), ack_timeout_ms=300)
    with omnibus.publisher(url) as pub, omnibus.subscriber(url) as sub:
        pub.publish(b"up").result(timeout=10)
        assert pub.connected is True and sub.connected is True
        nats_broker.stop()
        try:
            with pytest.raises(omnibus.Timeout, match=r"reconnecting, 1 disconnect\(s\), 0 reconnect\(s\)"):
                pub.publish(b"down").result(timeout=10)
            assert wait_until(lambda: pub.connected is False and sub.connected is False, timeout=30)
        finally:
            nats_broker.start()
        assert wait_until(lambda: _publishes(pub), timeout=60, interval=0.2)
        assert wait_until(lambda: pub.connected is True and sub.connected is True, timeout=60)


def _publishes(pub: omnibus.Publisher) -> bool:
    try:
        pub.publish(b"again").result(timeout=5)
        return True
    except omnibus.Error:
        return False


def test_jetstream_messages_queued_in_the_inbox_before_a_receive(nats_url: str) -> None:
    """Regression (cnats 3.4.1 _fetch wrote past its array when over half a batch was already queued,
    nats-io/nats.c PR #749): nats-py sends a pull request of 1,000 in the subscriber's name, to a reply
    subject under its inbox, so the messages land in the inbox while the subscriber asks for 10 at a time.
    Every message arrives once, with its delivery count 1 (none waited out ack_wait)."""
    nats = nats_py()
    stream = name()
    n = 3000
    with omnibus.publisher(url_of(nats_url, stream, stream=stream)) as pub:
        assert pub.publish_many([str(i).encode() for i in range(n)]).result(timeout=60) is None
    got: list[omnibus.Message] = []
    sub_url = url_of(nats_url, stream, stream=stream, durable="d", ack_deadline_ms=120000)

    async def flood(sub: omnibus.Subscriber) -> str:
        nc = await nats.connect(nats_url)
        try:
            api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.d"
            seen = await nc.subscribe(api)
            await nc.flush()
            # The subscriber's next pull request shows its inbox (_INBOX.<nuid>.<n>).
            while len(got) < 5:
                got.extend(sub.receive_batch(5, timeout=0.05))
            req = await seen.next_msg(timeout=10)
            inbox = req.reply.rsplit(".", 1)[0]
            await nc.publish(api, json.dumps({"batch": 1000, "no_wait": True}).encode(), reply=f"{inbox}.flood")
            await nc.flush()
            return inbox
        finally:
            await nc.close()

    with omnibus.subscriber(sub_url, auto_ack=False, prefetch=10) as sub:
        inbox = run(lambda: flood(sub))
        assert inbox.startswith("_INBOX.")

        def step() -> bool:
            batch = sub.receive_batch(10, timeout=0.05)
            got.extend(batch)
            for m in batch:
                m.ack()
            return len(got) >= n

        assert wait_until(step, timeout=120, interval=0), f"{len(got)} of {n} arrived"
        assert sub.receive_batch(10, timeout=0.5) == []
    payloads = [bytes(m.payload) for m in got]
    assert sorted(payloads, key=int) == [str(i).encode() for i in range(n)]
    assert {m.delivery_attempt for m in got} == {1}


@pytest.mark.fault
def test_confirmed_jetstream_messages_survive_a_broker_crash(nats_broker: Any) -> None:  # type: ignore[no-untyped-def]
    """File storage, SIGKILL mid-stream: every message whose PubAck came arrives after the restart."""
    stream = name()
    url = url_of(nats_broker.url, stream, stream=stream, ack_timeout_ms=3000)
    sub_url = url_of(nats_broker.url, stream, stream=stream, group="crash")
    n, batch = 60000, 1000
    received: set[bytes] = set()
    stop = threading.Event()
    killed = threading.Event()
    errors: list[BaseException] = []
    with omnibus.subscriber(sub_url, prefetch=5000) as sub:

        def consume() -> None:
            try:
                while not stop.is_set():
                    received.update(bytes(m.payload) for m in sub.receive_batch(1000, timeout=0.1))
            except BaseException as e:  # reported below
                errors.append(e)

        def crash() -> None:
            # While messages are in flight: some were stored and delivered, more are on their way.
            try:
                if wait_until(lambda: len(received) >= n // 6 or stop.is_set(), timeout=60, interval=0.001):
                    nats_broker.kill()  # SIGKILL; the main thread starts it again (see below)
                    killed.set()
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=consume), threading.Thread(target=crash)]
        for t in threads:
            t.start()
        try:
            with omnibus.publisher(url) as pub:
                deliveries = [pub.publish_many([str(i).encode() for i in range(start, start + batch)])
                              for start in range(0, n, batch)]
                # The broker is started from this thread: a broker process dies with the thread that spawned it.
                assert killed.wait(timeout=60), "the broker was not killed"
                nats_broker.restart(kill=True)
                assert pub.flush(timeout=120)
            acked = {str(start + i).encode() for start, d in zip(range(0, n, batch), deliveries)
                     for i in range(batch) if i not in {j for j, _ in d.failures()}}
            assert len(acked) > n // 6, "the messages before the crash were confirmed"
            assert wait_until(lambda: acked <= received, timeout=60), \
                f"{len(acked - received)} confirmed messages never arrived (of {len(acked)} confirmed); " \
                f"subscriber errors: {errors}; connection: {sub.connected}"
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert not errors
    print(f"\n{len(acked)} of {n} confirmed, {n - len(acked)} failed around the crash, {len(received)} received")
