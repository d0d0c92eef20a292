"""awssqs:// specifics beyond the conformance suite, against moto's server on loopback.

moto checks SigV4 signatures here (the harness made an IAM key through INITIAL_NO_AUTH_ACTION_COUNT),
so a wrong secret is refused as AWS refuses it. The independent client is boto3, spoken to both ways:
bodies (binary ones base64 with omnibus-body=base64), message attributes, FIFO order.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import omnibus
from omnibus.testing.brokers import aws_endpoint, queue_url

pytestmark = pytest.mark.skipif("awssqs" in omnibus.unavailable_drivers(),
                                reason="awssqs:// is not in this build")

boto3 = pytest.importorskip("boto3")


def name(suffix: str = "") -> str:
    return f"t{uuid.uuid4().hex[:10]}{suffix}"


@pytest.fixture
def sqs(sqs_url: str) -> Iterator[Any]:
    client = boto3.client("sqs", **aws_endpoint(sqs_url).boto3())
    yield client
    client.close()


def make_queue(sqs: Any, queue: str) -> str:
    attrs = {"FifoQueue": "true", "ContentBasedDeduplication": "true"} if queue.endswith(".fifo") else {}
    url: str = sqs.create_queue(QueueName=queue, Attributes=attrs)["QueueUrl"]
    return url


def boto3_receive(sqs: Any, qurl: str, n: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    for _ in range(30):
        if len(got) >= n:
            break
        r = sqs.receive_message(QueueUrl=qurl, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                MessageAttributeNames=["All"], AttributeNames=["All"])
        msgs = r.get("Messages", [])
        if msgs:
            sqs.delete_message_batch(QueueUrl=qurl, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                                             for i, m in enumerate(msgs)])
        got += msgs
    assert len(got) == n, f"boto3 received {len(got)} of {n}"
    return got


# ---------------------------------------------------------------- signatures and errors


def test_a_wrong_secret_is_refused_naming_the_key_id_not_the_secret(sqs_url: str, sqs: Any) -> None:
    queue = name()
    make_queue(sqs, queue)
    a = aws_endpoint(sqs_url)
    wrong = "x" + a.secret_access_key[1:]
    bad = sqs_url.replace(urllib.parse.quote(a.secret_access_key, safe=""), urllib.parse.quote(wrong, safe=""))
    assert bad != sqs_url
    with pytest.raises(omnibus.InvalidArgument) as info:
        omnibus.publisher(queue_url(bad, queue))
    text = str(info.value)
    assert a.access_key_id in text and "SignatureDoesNotMatch" in text
    assert wrong not in text and a.secret_access_key not in text
    assert not info.value.retryable
    # The right key works, so the refusal was the signature's.
    with omnibus.publisher(queue_url(sqs_url, queue)) as pub:
        pub.publish(b"ok").result(timeout=10)


def test_an_unknown_key_id_is_refused(sqs_url: str) -> None:
    a = aws_endpoint(sqs_url)
    bad = sqs_url.replace(a.access_key_id, "AKIAOMNIBUSNOSUCHKEY")
    with pytest.raises(omnibus.InvalidArgument, match="AKIAOMNIBUSNOSUCHKEY"):
        omnibus.subscriber(queue_url(bad, name(), create="true"))


def test_a_missing_queue_is_not_found(sqs_url: str) -> None:
    queue = name()
    with pytest.raises(omnibus.NotFound, match=queue):
        omnibus.publisher(queue_url(sqs_url, queue))
    with pytest.raises(omnibus.NotFound, match=queue):
        omnibus.subscriber(queue_url(sqs_url, queue))


def test_bad_urls_say_what_is_wrong(sqs_url: str) -> None:
    with pytest.raises(omnibus.InvalidArgument, match="names no queue"):
        omnibus.publisher(queue_url(sqs_url, ""))
    with pytest.raises(omnibus.InvalidArgument, match="not an http"):
        omnibus.publisher(queue_url(sqs_url, name()) + "&endpoint=ftp://x")


def test_a_deleted_queue_ends_the_subscriber_with_not_found(sqs_url: str, sqs: Any) -> None:
    queue = name()
    qurl = make_queue(sqs, queue)
    with omnibus.subscriber(queue_url(sqs_url, queue, wait_seconds="1")) as sub:
        sqs.delete_queue(QueueUrl=qurl)
        with pytest.raises(omnibus.NotFound):
            for _ in range(20):
                sub.receive_batch(10, timeout=1)


# ---------------------------------------------------------------- URL forms and credentials


def test_long_form_with_region_from_the_host_and_credentials_from_the_environment(
        sqs_url: str, sqs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    queue = name()
    qurl = make_queue(sqs, queue)
    account = urllib.parse.urlsplit(qurl).path.split("/")[1]
    a = aws_endpoint(sqs_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", a.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", a.secret_access_key)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    url = f"awssqs://sqs.{a.region}.amazonaws.com/{account}/{queue}?endpoint={a.endpoint}"
    with omnibus.publisher(url) as pub:
        pub.publish(b"long form").result(timeout=10)
    assert [m["Body"] for m in boto3_receive(sqs, qurl, 1)] == ["long form"]


def test_credentials_from_the_shared_file_and_region_from_the_environment(
        sqs_url: str, sqs: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    queue = name()
    qurl = make_queue(sqs, queue)
    a = aws_endpoint(sqs_url)
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n\n"
                     f"[omnibus]\naws_access_key_id = {a.access_key_id}\naws_secret_access_key = {a.secret_access_key}\n")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_PROFILE", "omnibus")
    monkeypatch.setenv("AWS_REGION", a.region)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", a.endpoint)
    with omnibus.publisher(f"awssqs:///{queue}") as pub:
        pub.publish(b"from the file").result(timeout=10)
    assert [m["Body"] for m in boto3_receive(sqs, qurl, 1)] == ["from the file"]
    # The [default] profile's key is refused, naming where it came from.
    with pytest.raises(omnibus.InvalidArgument, match=r"nope \(from profile \[default\]"):
        omnibus.publisher(f"awssqs:///{queue}?profile=default")


def test_no_credentials_anywhere_says_where_they_are_looked_for(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    with pytest.raises(omnibus.InvalidArgument, match="AWS_ACCESS_KEY_ID.*credentials"):
        omnibus.publisher("awssqs:///q?region=us-east-1&endpoint=http://127.0.0.1:9")


# ---------------------------------------------------------------- interop with boto3


def test_omnibus_to_boto3_bodies_and_attributes(sqs_url: str, sqs: Any) -> None:
    queue = name()
    qurl = make_queue(sqs, queue)
    with omnibus.publisher(queue_url(sqs_url, queue)) as pub:
        pub.publish(b"text body", key=b"k1", headers=[("trace", b"abc"), ("raw", b"\x00\x01")]).result(timeout=10)
        pub.publish(b"\x00\xffbinary").result(timeout=10)
    got = sorted(boto3_receive(sqs, qurl, 2), key=lambda m: m["Body"])
    binary, text = got  # "AP..." sorts before "text body"
    assert text["Body"] == "text body"
    attrs = text["MessageAttributes"]
    assert attrs["trace"] == {"StringValue": "abc", "DataType": "String"}
    assert attrs["raw"] == {"BinaryValue": b"\x00\x01", "DataType": "Binary"}
    assert attrs["omnibus-key"]["StringValue"] == "k1"
    assert attrs["omnibus-order"]["StringValue"] == "trace,raw"
    assert base64.b64decode(binary["Body"]) == b"\x00\xffbinary"
    assert binary["MessageAttributes"]["omnibus-body"]["StringValue"] == "base64"


def test_boto3_to_omnibus_bodies_and_attributes(sqs_url: str, sqs: Any) -> None:
    queue = name()
    qurl = make_queue(sqs, queue)
    with omnibus.subscriber(queue_url(sqs_url, queue), auto_ack=False) as sub:
        sqs.send_message(QueueUrl=qurl, MessageBody="from boto3 ✓", MessageAttributes={
            "zeta": {"DataType": "String", "StringValue": "z"},
            "alpha": {"DataType": "Binary", "BinaryValue": b"\x00\x02"},
            "count": {"DataType": "Number", "StringValue": "42"},
        })
        msg = sub.receive(timeout=20)
        assert bytes(msg.payload) == "from boto3 ✓".encode()
        assert msg.key is None
        assert msg.headers == [("alpha", b"\x00\x02"), ("count", b"42"), ("zeta", b"z")]  # sorted by name
        assert msg.delivery_attempt == 1
        msg.nack()
        again = sub.receive(timeout=20)
        assert bytes(again.payload) == bytes(msg.payload) and again.delivery_attempt == 2
        again.ack()
    # Acked: deleted from the queue.
    assert sqs.receive_message(QueueUrl=qurl, WaitTimeSeconds=1).get("Messages", []) == []


def test_fifo_order_per_key_both_ways(sqs_url: str, sqs: Any) -> None:
    queue = name(".fifo")
    qurl = make_queue(sqs, queue)
    n = 60
    with omnibus.publisher(queue_url(sqs_url, queue), batch_messages=7) as pub:
        assert pub.capabilities()["ordered_per_key"]
        pub.publish_many([f"{i}".encode() for i in range(n)], keys=[f"k{i % 3}".encode() for i in range(n)]).result(
            timeout=30)
    got = boto3_receive(sqs, qurl, n)
    for k in range(3):
        seq = [int(m["Body"]) for m in got if m["Attributes"]["MessageGroupId"] == f"k{k}"]
        assert seq == list(range(k, n, 3))
    # boto3 -> omnibus: MessageGroupId is the key of another client's message.
    for i in range(n):
        sqs.send_message(QueueUrl=qurl, MessageBody=str(i), MessageGroupId=f"g{i % 2}")
    with omnibus.subscriber(queue_url(sqs_url, queue)) as sub:
        assert sub.capabilities()["ordered_per_key"]
        msgs = []
        while len(msgs) < n:
            batch = sub.receive_batch(n, timeout=20)
            assert batch, f"received {len(msgs)} of {n}"
            msgs += batch
    for g in range(2):
        seq = [int(bytes(m.payload)) for m in msgs if m.key == f"g{g}".encode()]
        assert seq == list(range(g, n, 2))


def test_fifo_dedup_header_drops_a_repeat(sqs_url: str) -> None:
    queue = name(".fifo")
    url = queue_url(sqs_url, queue, create="true")
    with omnibus.subscriber(url) as sub, omnibus.publisher(url + "&dedup_header=id") as pub:
        pub.publish(b"first", headers=[("id", b"order-1")]).result(timeout=10)
        pub.publish(b"repeat", headers=[("id", b"order-1")]).result(timeout=10)  # accepted, dropped by SQS
        pub.publish(b"second", headers=[("id", b"order-2")]).result(timeout=10)
        with pytest.raises(omnibus.InvalidArgument, match="dedup_header"):
            pub.publish(b"no id").result(timeout=10)
        got = [bytes(m.payload) for m in sub.receive_batch(10, timeout=20)]
        while len(got) < 2:
            got += [bytes(m.payload) for m in sub.receive_batch(10, timeout=20)]
        got += [bytes(m.payload) for m in sub.receive_batch(10, timeout=1.5)]
    assert got == [b"first", b"second"]


def test_dedup_header_needs_a_fifo_queue(sqs_url: str) -> None:
    with pytest.raises(omnibus.InvalidArgument, match="FIFO"):
        omnibus.publisher(queue_url(sqs_url, name(), create="true", dedup_header="id"))


def test_capabilities_are_honest(sqs_url: str) -> None:
    with omnibus.publisher(queue_url(sqs_url, name(), create="true")) as pub:
        c = pub.capabilities()
    assert c["delivery_guarantee"] == "at-least-once" and not c["ordered_per_key"] and not c["fan_out"]
    assert c["competing_consumers"] and c["nack"] and c["ack_deadline"] and c["delivery_count"]
    assert c["max_message_bytes"] == 256 * 1024 and not c["request_reply"]


def test_a_batch_over_256_kib_in_all_is_split(sqs_url: str) -> None:
    """Ten messages of 100 KB fit SQS one by one but not in one SendMessageBatch (256 KiB in all)."""
    url = queue_url(sqs_url, name(), create="true")
    values = [bytes([65 + i]) * 100_000 for i in range(10)]
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        pub.publish_many(values).result(timeout=30)
        got: list[bytes] = []
        while len(got) < 10:
            batch = sub.receive_batch(10, timeout=20)
            assert batch
            got += [bytes(m.payload) for m in batch]
    assert sorted(got) == values


# ---------------------------------------------------------------- the harness


def test_moto_url_hides_its_secret_in_repr_and_messages(sqs_broker: Any) -> None:
    a = sqs_broker.aws
    assert a.secret_access_key not in repr(sqs_broker)
    with omnibus.publisher(queue_url(sqs_broker.url, name(), create="true")) as pub:
        assert a.secret_access_key not in repr(pub)
        assert urllib.parse.quote(a.secret_access_key, safe="") not in repr(pub)


def test_cli_up_status_down_sqs(tmp_path: Path) -> None:
    from omnibus.testing.brokers import Moto

    if Moto.missing():
        pytest.skip(str(Moto.missing()))
    env = dict(os.environ, OMNIBUS_STATE_DIR=str(tmp_path / "state"))
    cli = [sys.executable, "-m", "omnibus", "brokers"]
    up = subprocess.run(cli + ["up", "sqs"], env=env, capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "sqs    started  awssqs://" in up.stdout and ":***@/?endpoint=http://127.0.0.1:" in up.stdout
        exported = (tmp_path / "state" / "omnibus.env").read_text()
        url = exported.split("OMNIBUS_SQS_URL=", 1)[1].strip()
        with omnibus.publisher(queue_url(url, name(), create="true")) as pub:
            pub.publish(b"via omnibus brokers up").result(timeout=10)
        status = subprocess.run(cli + ["status"], env=env, capture_output=True, text=True, timeout=60)
        assert "answers its protocol" in status.stdout, status.stdout
    finally:
        down = subprocess.run(cli + ["down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0 and " down " in down.stdout, down.stdout + down.stderr
    assert not (tmp_path / "state" / "sqs").exists()


# ---------------------------------------------------------------- awssns://


def sns_url_of(sqs_url: str, topic: str, **options: str) -> str:
    return queue_url("awssns" + sqs_url[len("awssqs"):], topic, **options)


@pytest.fixture
def sns(sqs_url: str) -> Iterator[Any]:
    client = boto3.client("sns", **aws_endpoint(sqs_url).boto3())
    yield client
    client.close()


def test_sns_missing_topic_is_not_found(sqs_url: str) -> None:
    topic = name()
    with pytest.raises(omnibus.NotFound, match=topic):
        omnibus.publisher(sns_url_of(sqs_url, topic))


def test_sns_omnibus_publish_reaches_a_boto3_subscribed_queue(sqs_url: str, sqs: Any, sns: Any) -> None:
    topic = name()
    arn = sns.create_topic(Name=topic)["TopicArn"]
    qurl = make_queue(sqs, name())
    qarn = sqs.get_queue_attributes(QueueUrl=qurl, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=qarn, Attributes={"RawMessageDelivery": "true"})
    with omnibus.publisher(sns_url_of(sqs_url, topic)) as pub:  # found by name (ListTopics)
        pub.publish(b"via sns", key=b"k", headers=[("trace", b"t1"), ("bin", b"\x00\x01")]).result(timeout=10)
    (m,) = boto3_receive(sqs, qurl, 1)
    assert m["Body"] == "via sns"
    assert m["MessageAttributes"]["trace"]["StringValue"] == "t1"
    assert m["MessageAttributes"]["bin"]["BinaryValue"] == b"\x00\x01"
    assert m["MessageAttributes"]["omnibus-key"]["StringValue"] == "k"


def test_sns_boto3_publish_reaches_every_omnibus_subscriber(sqs_url: str, sqs: Any, sns: Any) -> None:
    topic = name()
    arn = sns.create_topic(Name=topic)["TopicArn"]
    url = sns_url_of(sqs_url, topic)
    before = set(sqs.list_queues().get("QueueUrls", []))
    with omnibus.subscriber(url) as a, omnibus.subscriber(url) as b:
        private = set(sqs.list_queues().get("QueueUrls", [])) - before
        assert len(private) == 2  # a queue of its own each
        sns.publish(TopicArn=arn, Message="hello all", MessageAttributes={
            "n": {"DataType": "Number", "StringValue": "7"}})
        for sub in (a, b):
            msg = sub.receive(timeout=20)
            assert bytes(msg.payload) == b"hello all" and msg.headers == [("n", b"7")]
    # Private queues go with their subscribers, and so do their subscriptions.
    assert not (set(sqs.list_queues().get("QueueUrls", [])) & private)
    assert sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"] == []


def test_sns_group_shares_a_durable_queue(sqs_url: str, sqs: Any) -> None:
    topic = name()
    url = sns_url_of(sqs_url, topic, create="true", group="workers")
    with omnibus.subscriber(url) as sub:
        pass  # subscribed; the queue stays
    with omnibus.publisher(url) as pub:
        pub.publish(b"kept for the group").result(timeout=10)
    qurl = sqs.get_queue_url(QueueName=f"{topic}-workers")["QueueUrl"]
    with omnibus.subscriber(url) as sub:
        assert bytes(sub.receive(timeout=20).payload) == b"kept for the group"
    sqs.delete_queue(QueueUrl=qurl)


def test_dead_letter_queue_through_the_redrive_policy(sqs_url: str) -> None:
    queue, dead = name(), name()
    url = queue_url(sqs_url, queue, create="true", dead_letter_queue=dead, max_receive_count="2")
    with omnibus.subscriber(url, auto_ack=False) as sub, omnibus.publisher(url) as pub:
        assert sub.capabilities()["dead_letter"]
        pub.publish(b"poison").result(timeout=10)
        for attempt in (1, 2):
            msg = sub.receive(timeout=20)
            assert bytes(msg.payload) == b"poison" and msg.delivery_attempt == attempt
            msg.nack()
        # Received twice: SQS moves it to the dead-letter queue instead of a third delivery.
        with omnibus.subscriber(queue_url(sqs_url, dead)) as dlq:
            assert bytes(dlq.receive(timeout=20).payload) == b"poison"
        assert sub.receive_batch(10, timeout=1.5) == []


def test_dead_letter_queue_needs_create(sqs_url: str) -> None:
    with pytest.raises(omnibus.InvalidArgument, match="create=true"):
        omnibus.subscriber(queue_url(sqs_url, name(), dead_letter_queue=name()))
