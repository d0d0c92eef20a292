"""gcppubsub:// specifics beyond the conformance suite, against Google's Pub/Sub fake (pstest) on loopback.

The independent client is Google's own, google-cloud-pubsub, spoken to both ways: payloads, ordering
keys, attributes, and subscriptions that one side creates and the other uses. The fake is no
real Pub/Sub (no TLS, no authentication, no quotas): TLS with Application Default Credentials is
checked against a small gRPC server of the test's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import omnibus
from omnibus.testing import wait_until
from omnibus.testing.brokers import free_port, topic_url
from omnibus.testing.brokers.pubsub import PROJECT

pytestmark = pytest.mark.skipif("gcppubsub" in omnibus.unavailable_drivers(),
                                reason="gcppubsub:// is not in this build")

pubsub_v1 = pytest.importorskip("google.cloud.pubsub_v1")


def name(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def host_of(gcp_url: str) -> str:
    return gcp_url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]


@pytest.fixture
def google(gcp_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """Google's publisher (message ordering on) and subscriber clients, pointed at the fake as Google
    documents it: PUBSUB_EMULATOR_HOST, read when a client is made."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", host_of(gcp_url))
    options = pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
    pub = pubsub_v1.PublisherClient(publisher_options=options)
    sub = pubsub_v1.SubscriberClient()
    try:
        yield pub, sub
    finally:
        pub.stop()
        pub.transport.close()
        sub.close()


def google_pull(sub: Any, path: str, n: int, timeout: float = 20.0) -> list[Any]:
    """n messages by synchronous Pull, acked as they come."""
    got: list[Any] = []

    def step() -> bool:
        r = sub.pull(request={"subscription": path, "max_messages": n - len(got)}, timeout=5)
        if r.received_messages:
            sub.acknowledge(request={"subscription": path, "ack_ids": [m.ack_id for m in r.received_messages]})
        got.extend(m.message for m in r.received_messages)
        return len(got) >= n

    wait_until(step, timeout=timeout, interval=0)
    return got


# ---------------------------------------------------------------- interop with google-cloud-pubsub


def test_omnibus_to_google_payload_key_headers(gcp_url: str, google: tuple[Any, Any]) -> None:
    pub_g, sub_g = google
    topic, sub_name = name(), name("s")
    url = topic_url(gcp_url, topic)
    with omnibus.publisher(url) as pub:  # creates the topic
        sub_path = sub_g.subscription_path(PROJECT, sub_name)
        sub_g.create_subscription(request={"name": sub_path, "topic": pub_g.topic_path(PROJECT, topic),
                                           "enable_message_ordering": True})
        pub.publish(b"\x00binary\xff", key=b"device-7", headers={"trace": b"abc", "span": b"1"}).result(timeout=10)
        pub.publish_many([str(i).encode() for i in range(20)], keys=[b"k"] * 20).result(timeout=10)
    got = google_pull(sub_g, sub_path, 21)
    first = next(m for m in got if m.data == b"\x00binary\xff")
    assert first.ordering_key == "device-7"
    assert dict(first.attributes) == {"trace": "abc", "span": "1", "omnibus-order": "5:trace4:span"}
    assert first.message_id
    # One ordering key, on a subscription with ordering: in publish order.
    assert [int(m.data) for m in got if m.ordering_key == "k"] == list(range(20))


def test_google_to_omnibus_payload_key_headers(gcp_url: str, google: tuple[Any, Any]) -> None:
    pub_g, _ = google
    topic = name()
    url = topic_url(gcp_url, topic)
    with omnibus.subscriber(url) as sub:  # creates the topic and a subscription of its own
        path = pub_g.topic_path(PROJECT, topic)
        futures = [pub_g.publish(path, b"from google", ordering_key="dev-1", zeta="z", alpha="a")]
        futures += [pub_g.publish(path, str(i).encode(), ordering_key="seq") for i in range(20)]
        ids = [f.result(timeout=10) for f in futures]
        assert all(ids)
        got: list[omnibus.Message] = []
        wait_until(lambda: bool(got.extend(sub.receive_batch(100, timeout=0.2))) or len(got) >= 21, timeout=20)
    first = next(m for m in got if bytes(m.payload) == b"from google")
    assert first.key == b"dev-1"
    assert first.headers == [("alpha", b"a"), ("zeta", b"z")]  # another client's attributes: sorted by name
    assert first.delivery_attempt == 1 and first.timestamp_ms > 0 and first.topic == topic
    assert [int(bytes(m.payload)) for m in got if m.key == b"seq"] == list(range(20))


def test_omnibus_receives_from_a_subscription_google_made(gcp_url: str, google: tuple[Any, Any]) -> None:
    pub_g, sub_g = google
    topic, sub_name = name(), name("s")
    tpath, spath = pub_g.topic_path(PROJECT, topic), sub_g.subscription_path(PROJECT, sub_name)
    pub_g.create_topic(request={"name": tpath})
    sub_g.create_subscription(request={"name": spath, "topic": tpath})
    pub_g.publish(tpath, b"waiting").result(timeout=10)
    with omnibus.subscriber(f"{gcp_url}/projects/{PROJECT}/subscriptions/{sub_name}", auto_ack=False) as sub:
        msg = sub.receive(timeout=10)
        assert bytes(msg.payload) == b"waiting"
        msg.ack()
    # Acked: Google's client finds nothing left (the server holds an empty Pull a moment).
    assert list(sub_g.pull(request={"subscription": spath, "max_messages": 10}, timeout=5).received_messages) == []
    # Not ours: it stays after close.
    assert sub_g.get_subscription(request={"subscription": spath}).name == spath


def test_omnibus_keys_and_headers_google_cannot_carry_round_trip(gcp_url: str) -> None:
    url = topic_url(gcp_url, name())
    odd_headers = [("a", b"1"), ("a", b"2"), ("bin", b"\xff\x00")]
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        pub.publish(b"1", key=b"\xff\xfe", headers=odd_headers).result(timeout=10)
        pub.publish(b"2", key=b"").result(timeout=10)
        got = sorted((sub.receive(timeout=10) for _ in range(2)), key=lambda m: bytes(m.payload))
    assert got[0].key == b"\xff\xfe" and got[0].headers == odd_headers
    assert got[1].key == b"" and got[1].headers == []


# ---------------------------------------------------------------- groups and subscriptions


def test_group_members_share_a_named_subscription_that_outlives_them(gcp_url: str, google: tuple[Any, Any]) -> None:
    _, sub_g = google
    topic, group = name(), name("g")
    url = topic_url(gcp_url, topic)
    n = 200
    with omnibus.subscriber(url, group=group) as a, omnibus.subscriber(url, group=group) as b, \
            omnibus.subscriber(url, group=name("other")) as other, omnibus.publisher(url) as pub:
        pub.publish_many([str(i).encode() for i in range(n)]).result(timeout=10)
        got: list[list[bytes]] = [[], [], []]

        def step() -> bool:
            for i, s in enumerate((a, b, other)):
                got[i] += [bytes(m.payload) for m in s.receive_batch(1000, timeout=0.05)]
            return len(got[0]) + len(got[1]) >= n and len(got[2]) >= n

        wait_until(step, timeout=30, interval=0)
    assert sorted(got[0] + got[1]) == sorted(str(i).encode() for i in range(n))  # shared, no duplicates
    assert got[0] and got[1], "one member got everything"
    assert sorted(got[2]) == sorted(str(i).encode() for i in range(n))  # another group: a copy of its own
    # A group's subscription (TOPIC-GROUP) is kept for the members to come.
    path = sub_g.subscription_path(PROJECT, f"{topic}-{group}")
    assert sub_g.get_subscription(request={"subscription": path}).name == path


def test_a_private_subscription_is_deleted_on_close(gcp_url: str, google: tuple[Any, Any]) -> None:
    pub_g, _ = google
    topic = name()
    with omnibus.subscriber(topic_url(gcp_url, topic)):
        subs = list(pub_g.list_topic_subscriptions(request={"topic": pub_g.topic_path(PROJECT, topic)}))
        assert len(subs) == 1 and subs[0].split("/")[-1].startswith(f"omnibus-{topic}-")
    assert list(pub_g.list_topic_subscriptions(request={"topic": pub_g.topic_path(PROJECT, topic)})) == []


# ---------------------------------------------------------------- errors


def test_bad_urls_say_what_is_wrong(gcp_url: str) -> None:
    for path, match in [("", "projects/PROJECT/topics/TOPIC"), ("/projects/p", "the path must be"),
                        ("/projects/p/queues/q", "neither topics nor subscriptions"),
                        ("/projects//topics/t", "the path must be")]:
        with pytest.raises(omnibus.InvalidArgument, match=match):
            omnibus.publisher(gcp_url + path)
    with pytest.raises(omnibus.InvalidArgument, match="unknown option|request_bytes"):
        omnibus.publisher(topic_url(gcp_url, name(), request_bytes="12"))
    with pytest.raises(omnibus.InvalidArgument, match="either as the URL's host or as \\?endpoint="):
        omnibus.publisher(topic_url(gcp_url, name(), endpoint="127.0.0.1:1"))


def test_a_subscription_url_cannot_publish_and_its_group_must_match(gcp_url: str) -> None:
    url = f"{gcp_url}/projects/{PROJECT}/subscriptions/{name('s')}"
    with pytest.raises(omnibus.InvalidArgument, match="names a subscription"):
        omnibus.publisher(url)
    with pytest.raises(omnibus.InvalidArgument, match="give one"):
        omnibus.subscriber(url + "?group=other")


def test_missing_topic_and_subscription_are_not_found(gcp_url: str) -> None:
    topic = name()
    with pytest.raises(omnibus.NotFound, match=topic) as info:
        omnibus.publisher(topic_url(gcp_url, topic, create="false"))
    assert not info.value.retryable
    with pytest.raises(omnibus.NotFound, match="gone"):
        omnibus.subscriber(f"{gcp_url}/projects/{PROJECT}/subscriptions/gone")
    with pytest.raises(omnibus.NotFound):
        omnibus.subscriber(topic_url(gcp_url, topic, create="false"), group="g")


def test_one_group_name_on_two_topics_is_two_subscriptions(gcp_url: str) -> None:
    a, b = topic_url(gcp_url, name()), topic_url(gcp_url, name())
    with omnibus.subscriber(a, group="workers") as sa, omnibus.subscriber(b, group="workers") as sb, \
            omnibus.publisher(a) as pa, omnibus.publisher(b) as pb:
        pa.publish(b"to a").result(timeout=10)
        pb.publish(b"to b").result(timeout=10)
        assert bytes(sa.receive(timeout=10).payload) == b"to a"
        assert bytes(sb.receive(timeout=10).payload) == b"to b"


def test_a_subscription_on_another_topic_is_refused_as_a_group(gcp_url: str, google: tuple[Any, Any]) -> None:
    pub_g, sub_g = google
    topic, other = name(), name()
    for t in (topic, other):
        pub_g.create_topic(request={"name": pub_g.topic_path(PROJECT, t)})
    sub_g.create_subscription(request={"name": sub_g.subscription_path(PROJECT, f"{topic}-g"),
                                       "topic": pub_g.topic_path(PROJECT, other)})
    with pytest.raises(omnibus.InvalidArgument, match="exists on topic"):
        omnibus.subscriber(topic_url(gcp_url, topic), group="g")


def test_pull_unary_receives_acks_and_nacks(gcp_url: str) -> None:
    url = topic_url(gcp_url, name(), request_bytes="4000000")
    n = 3000
    # Flow control holds a subscriber at max_outstanding_messages unacked: room for all of them here.
    with omnibus.subscriber(url, pull="unary", auto_ack=False, max_outstanding_messages=5000) as sub, \
            omnibus.publisher(url) as pub:
        pub.publish_many([str(i).encode() for i in range(n)]).result(timeout=30)
        got: list[omnibus.Message] = []
        wait_until(lambda: bool(got.extend(sub.receive_batch(1000, timeout=0.2))) or len(got) >= n, timeout=60)
        assert sorted(int(bytes(m.payload)) for m in got) == list(range(n))
        sub.ack(got[1:])
        got[0].nack()
        again = sub.receive(timeout=10)
        assert bytes(again.payload) == bytes(got[0].payload) and again.delivery_attempt == 2
        again.ack()
        assert sub.receive_batch(10, timeout=1) == []


def test_flow_control_stops_at_max_outstanding_messages(gcp_url: str) -> None:
    url = topic_url(gcp_url, name())
    with omnibus.subscriber(url, pull="unary", auto_ack=False, max_outstanding_messages=10) as sub, \
            omnibus.publisher(url) as pub:
        pub.publish_many([str(i).encode() for i in range(30)]).result(timeout=10)
        held: list[omnibus.Message] = []
        wait_until(lambda: bool(held.extend(sub.receive_batch(100, timeout=0.2))) or len(held) >= 10, timeout=20)
        assert sub.receive_batch(100, timeout=1.5) == []  # 10 held, unacked: nothing more comes
        sub.ack(held)
        more: list[omnibus.Message] = []
        wait_until(lambda: bool(more.extend(sub.receive_batch(100, timeout=0.2))) or len(more) >= 10, timeout=20)
        sub.ack(more)


def test_nothing_listening_is_unavailable_and_retryable() -> None:
    url = f"gcppubsub://127.0.0.1:{free_port()}/projects/{PROJECT}/topics/t"
    with pytest.raises(omnibus.Unavailable) as info:
        omnibus.publisher(url, timeout_ms=3000)
    assert info.value.retryable and "gRPC status 14" in str(info.value)


def test_tls_without_credentials_says_where_they_are_looked_for(gcp_url: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(omnibus.InvalidArgument, match="GOOGLE_APPLICATION_CREDENTIALS"):
        omnibus.publisher(topic_url(gcp_url, name(), tls="true"))


def test_tls_sends_a_bearer_token_from_a_service_account_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The production path as far as it goes without Google: TLS to a gRPC server of the test's own
    (the harness CA, trusted through GRPC_DEFAULT_SSL_ROOTS_FILE_PATH), Application Default
    Credentials from GOOGLE_APPLICATION_CREDENTIALS (a service account key made here), and a bearer
    token that the key's public half verifies. grpc++ signs a JWT itself for a service account (no
    token exchange), so nothing leaves the machine."""
    import base64
    import json
    from concurrent import futures

    import grpc
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    from omnibus.testing.certs import make_pki

    pki = make_pki(tmp_path / "pki")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    account = {"type": "service_account", "project_id": PROJECT, "private_key_id": "key-1", "private_key": pem,
               "client_email": f"omnibus@{PROJECT}.iam.gserviceaccount.com", "client_id": "1",
               "token_uri": "https://oauth2.invalid/token"}
    (tmp_path / "key.json").write_text(json.dumps(account))
    seen: list[dict[str, str]] = []

    def get_topic(request: bytes, context: Any) -> bytes:
        seen.append(dict(context.invocation_metadata()))
        return request  # Topic{name = 1} and GetTopicRequest{topic = 1}: the same bytes name the topic

    server = grpc.server(futures.ThreadPoolExecutor(1))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "google.pubsub.v1.Publisher", {"GetTopic": grpc.unary_unary_rpc_method_handler(get_topic)}),))
    port = free_port()
    server.add_secure_port(f"localhost:{port}", grpc.ssl_server_credentials(
        [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())]))
    server.start()
    try:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "key.json"))
        monkeypatch.setenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", str(pki.ca))
        with omnibus.publisher(f"gcppubsub://localhost:{port}/projects/{PROJECT}/topics/t?tls=true&create=false"):
            pass
    finally:
        server.stop(None).wait(10)
    assert seen, "the server saw no GetTopic"
    scheme, _, token = seen[0]["authorization"].partition(" ")
    assert scheme == "Bearer"
    head, body, signature = token.split(".")

    def unb64(s: str) -> bytes:
        return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

    header, claims = json.loads(unb64(head)), json.loads(unb64(body))
    assert header["alg"] == "RS256" and header["kid"] == "key-1"
    assert claims["iss"] == claims["sub"] == account["client_email"]
    assert claims["aud"].startswith(f"https://localhost:{port}")  # the service the token is for
    key.public_key().verify(unb64(signature), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())


def test_credentials_in_the_url_are_refused_without_showing_them(gcp_url: str) -> None:
    host = host_of(gcp_url)
    with pytest.raises(omnibus.InvalidArgument, match="GOOGLE_APPLICATION_CREDENTIALS") as info:
        omnibus.publisher(f"gcppubsub://u:s3cret@{host}/projects/{PROJECT}/topics/t")
    assert "s3cret" not in str(info.value)


# ---------------------------------------------------------------- the URL's other forms, the harness


def test_go_cdk_form_takes_the_endpoint_from_pubsub_emulator_host(gcp_url: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", host_of(gcp_url))
    url = f"gcppubsub://projects/{PROJECT}/topics/{name()}"
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        pub.publish(b"via the emulator variable").result(timeout=10)
        assert bytes(sub.receive(timeout=10).payload) == b"via the emulator variable"
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST")
    url = f"gcppubsub://projects/{PROJECT}/topics/{name()}?endpoint={host_of(gcp_url)}"
    with omnibus.publisher(url) as pub:
        pub.publish(b"via endpoint=").result(timeout=10)


def test_capabilities_are_honest(gcp_url: str) -> None:
    with omnibus.publisher(topic_url(gcp_url, name())) as pub:
        caps = dict(pub.capabilities())
    assert caps["delivery_guarantee"] == "at-least-once"
    assert caps["keys"] and caps["headers"] and caps["nack"] and caps["ack_deadline"] and caps["fan_out"]
    assert caps["ordered_per_key"] and not caps["key_affinity"] and not caps["delivery_count"]
    assert not caps["request_reply"] and not caps["dead_letter"]
    assert caps["max_message_bytes"] == 9437184 - 64


def test_a_held_message_is_leased_past_the_servers_deadline(gcp_url: str) -> None:
    """The fake's (and Pub/Sub's) shortest ack deadline is 10 s: a message held for 12 s while the
    lease is extended is not redelivered."""
    url = topic_url(gcp_url, name())
    with omnibus.subscriber(url, auto_ack=False, ack_deadline_ms=60000) as sub, omnibus.publisher(url) as pub:
        pub.publish(b"held").result(timeout=10)
        msg = sub.receive(timeout=10)
        assert sub.receive_batch(10, timeout=12) == []
        msg.ack()


def test_cli_up_status_down_gcp(tmp_path: Path) -> None:
    from omnibus.testing.brokers import PubSubFake

    if PubSubFake.missing():
        pytest.skip(str(PubSubFake.missing()))
    env = {k: v for k, v in os.environ.items() if k != "PUBSUB_EMULATOR_HOST"}
    env["OMNIBUS_STATE_DIR"] = str(tmp_path / "state")
    cli = [sys.executable, "-m", "omnibus", "brokers"]
    up = subprocess.run(cli + ["up", "gcp"], env=env, capture_output=True, text=True, timeout=120, check=False)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "gcppubsub://127.0.0.1:" in up.stdout, up.stdout
        exported = (tmp_path / "state" / "omnibus.env").read_text()
        url = exported.split("OMNIBUS_GCP_URL=", 1)[1].strip()
        with omnibus.publisher(topic_url(url, name())) as pub:
            pub.publish(b"via omnibus brokers up").result(timeout=10)
        status = subprocess.run(cli + ["status"], env=env, capture_output=True, text=True, timeout=60,
                                check=False)
        assert "answers its protocol" in status.stdout, status.stdout
    finally:
        down = subprocess.run(cli + ["down"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert down.returncode == 0 and " down " in down.stdout, down.stdout + down.stderr
    assert not (tmp_path / "state" / "gcp").exists()
