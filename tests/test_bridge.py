"""omnibus.bridge against real brokers: MQTT readings from simulated devices into Kafka, with no loss
across a Kafka SIGKILL and a Mosquitto restart; dead letters; the transform; mem:// for the API."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest

import omnibus
from omnibus import iot
from omnibus.testing import wait_until

DEVICES, READINGS = 1000, 100_000


def _needs(*kinds: str) -> None:
    for kind in kinds:
        missing = omnibus.unavailable_drivers().get(kind)
        if missing:
            pytest.skip(f"{kind}:// is not in this build: {missing}")


def _mqtt_to_kafka(mqtt_url: str, kafka_url: str, tag: str, **bridge_options: Any) -> tuple[str, str, omnibus.Bridge]:
    """A bridge from a persistent MQTT 5 QoS 1 session on plant-TAG/# to a 4-partition Kafka topic (acks=all)."""
    source = (f"{mqtt_url}/plant-{tag}/%23?qos=1&version=5&clean_session=false&client_id=bridge-{tag}"
              "&prefetch=20000")
    sink = f"{kafka_url}/readings-{tag}?acks=all&idempotence=true&partitions=4&delivery_timeout_ms=180000"
    # MQTT's client library acks on arrival: the pair is honestly at-most-once at the MQTT end.
    with pytest.warns(omnibus.DeliveryGuaranteeWarning, match="at-most-once"):
        bridge = omnibus.bridge(source, sink, codec="json", **bridge_options)
    return source, sink, bridge


def _simulate(mqtt_url: str, tag: str) -> iot.SimulationResult:
    # rate=None queues readings faster than the publishers drain them; under ASan on a loaded
    # machine the last confirmations came more than simulate()'s default 60 s after the last
    # publish, and closing then failed them. This test is about loss, not speed: wait longer.
    result = iot.simulate(f"{mqtt_url}/plant-{tag}", devices=DEVICES, readings=READINGS, rate=None,
                          qos=1, version=5, connect_timeout_ms=30000, delivery_timeout=600)
    assert result.sent == READINGS and result.failed == 0, result.summary()
    return result


def _audit(sink: str, tag: str, expected: dict[str, int]) -> iot.CheckResult:
    """Every (device, seq) the simulator had confirmed must be in the Kafka topic; duplicates are counted."""
    checked = iot.collect(f"{sink}&group=audit-{tag}&offset_reset=earliest", expected=expected, timeout=30)
    print(f"\nkafka topic: {checked.summary()}")
    assert checked.total >= READINGS
    assert checked.ok, checked.summary()
    return checked


def _drain(bridge: omnibus.Bridge, sent: int) -> None:
    assert wait_until(lambda: bridge.stats.consumed >= sent, timeout=240, interval=0.2), \
        f"{bridge.stats.line()}; last error: {bridge.last_error}"
    assert bridge.wait_idle(timeout=240), f"{bridge.stats.line()}; last error: {bridge.last_error}"
    assert bridge.stop(timeout=60)
    stats = bridge.stats
    print(f"\nbridge: {stats.line()}")
    assert stats.failed == 0 and stats.in_flight == 0
    assert stats.published == stats.consumed


@pytest.mark.slow
def test_100k_readings_from_1000_devices_reach_kafka(mqtt_url: str, kafka_url: str) -> None:
    _needs("mqtt", "kafka")
    tag = uuid.uuid4().hex[:8]
    _, sink, bridge = _mqtt_to_kafka(mqtt_url, kafka_url, tag)
    with bridge:
        sim = _simulate(mqtt_url, tag)
        _drain(bridge, sim.sent)
    checked = _audit(sink, tag, sim.expected())
    assert checked.devices == DEVICES


@pytest.mark.fault
@pytest.mark.slow
def test_no_reading_is_lost_when_kafka_is_killed_mid_stream(mqtt_url: str, kafka_broker: Any, kafka_url: str) -> None:
    _needs("mqtt", "kafka")
    tag = uuid.uuid4().hex[:8]
    _, sink, bridge = _mqtt_to_kafka(mqtt_url, kafka_url, tag)
    results: list[iot.SimulationResult] = []
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            results.append(_simulate(mqtt_url, tag))
        except BaseException as e:  # reported below
            errors.append(e)

    with bridge:
        simulator = threading.Thread(target=publish)
        simulator.start()
        try:
            assert wait_until(lambda: bridge.stats.published >= READINGS // 4, timeout=240, interval=0.01), \
                bridge.stats.line()
            before = bridge.stats
            # SIGKILL from this thread: a broker dies with the thread that started it.
            kafka_broker.restart(kill=True)
            print(f"\nkafka killed after {before.published:,} confirmed, {before.in_flight:,} in flight")
        finally:
            simulator.join(300)
        assert not errors, "\n".join(str(e) for e in errors)
        _drain(bridge, results[0].sent)
    _audit(sink, tag, results[0].expected())


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason=(
    "known loss on the MQTT side: once, on a loaded machine (fresh-clone CI beside ASan runs), 99 of 100,000 "
    "readings (the last of 97 devices) never reached the bridge across a graceful Mosquitto restart, with "
    "Mosquitto saving on SIGTERM. The bridge declares MQTT sources at-most-once (Paho acks on arrival); "
    "the MQTT client on Asio (its own issue) is what makes this side at-least-once. Passes 4 of 4 unloaded."))
def test_no_reading_is_lost_when_mosquitto_restarts_mid_stream(mqtt_broker: Any, kafka_url: str) -> None:
    """The readings wait in the bridge's persistent session (Mosquitto persistence on); Mosquitto
    restarts while the bridge drains them into Kafka, and the bridge resumes the session."""
    _needs("mqtt", "kafka")
    tag = uuid.uuid4().hex[:8]
    mqtt_url = mqtt_broker.url
    source, sink, bridge = _mqtt_to_kafka(mqtt_url, kafka_url, tag, batch=500)
    # Stopped at once: its persistent session stays subscribed and queues the readings.
    assert bridge.stop()
    sim = _simulate(mqtt_url, tag)
    with pytest.warns(omnibus.DeliveryGuaranteeWarning):
        bridge = omnibus.bridge(source, sink, codec="json", batch=500)
    with bridge:
        assert wait_until(lambda: bridge.stats.published >= READINGS // 4, timeout=120, interval=0.01), \
            f"{bridge.stats.line()}; last error: {bridge.last_error}"
        before = bridge.stats
        mqtt_broker.restart()
        print(f"\nmosquitto restarted after {before.published:,} confirmed, {before.in_flight:,} in flight")
        _drain(bridge, sim.sent)
    _audit(sink, tag, sim.expected())
    with omnibus.subscriber(source.replace("clean_session=false", "clean_session=true")):
        pass  # ends the persistent session


def test_undecodable_readings_go_to_the_dead_letter_topic_with_the_error(mqtt_url: str, kafka_url: str) -> None:
    _needs("mqtt", "kafka")
    tag = uuid.uuid4().hex[:8]
    dlq = f"{kafka_url}/dead-{tag}?acks=all"
    _, sink, bridge = _mqtt_to_kafka(mqtt_url, kafka_url, tag, dead_letter=dlq, key="{topic[1]}")
    with bridge, omnibus.publisher(f"{mqtt_url}/plant-{tag}/dev-1?qos=1&version=5") as pub:
        pub.publish(json.dumps({"device": "dev-1", "seq": 1}).encode()).result(timeout=30)
        pub.publish(b"\x00 not json", headers={"firmware": "1.2"}).result(timeout=30)
        pub.publish(json.dumps({"device": "dev-1", "seq": 2}).encode()).result(timeout=30)
        assert wait_until(lambda: bridge.stats.consumed == 3, timeout=60)
        assert bridge.stop(timeout=60)
        assert bridge.stats.published == 2 and bridge.stats.dead_lettered == 1, bridge.stats.line()
    with omnibus.subscriber(f"{dlq}&group=audit&offset_reset=earliest") as sub:
        bad = sub.receive(timeout=60)
        headers = dict(bad.headers)
        assert bytes(bad.payload) == b"\x00 not json"
        assert headers["firmware"] == b"1.2"
        assert headers["omnibus-error-code"] == b"Codec"
        assert b"json" in headers["omnibus-error"].lower()
        assert headers["omnibus-source-topic"] == f"plant-{tag}/dev-1".encode()
    with omnibus.subscriber(f"{sink}&group=audit&offset_reset=earliest", codec="json") as sub:
        good = [sub.receive(timeout=60) for _ in range(2)]
        assert sorted(m.value["seq"] for m in good) == [1, 2]
        assert {m.key for m in good} == {b"dev-1"}  # key="{topic[1]}": the device's topic level


def test_transform_and_mapping_between_real_brokers(mqtt_url: str, nats_url: str) -> None:
    """MQTT into a JetStream stream: key from the topic, headers carried and added, a Python transform
    that converts units and drops readings, msgpack on the way out."""
    _needs("mqtt", "nats")
    tag = uuid.uuid4().hex[:8]
    calls: list[int] = []

    def to_fahrenheit(msgs: list[omnibus.Message]) -> list[Any]:
        calls.append(len(msgs))
        return [None if m.value["seq"] % 2 == 0 else
                omnibus.Out({**m.value, "temperature": m.value["temperature"] * 9 / 5 + 32})
                for m in msgs]

    sink = f"{nats_url}/f-{tag}?stream=f{tag}"
    with omnibus.subscriber(sink, codec="msgpack", auto_ack=False) as out, pytest.warns(omnibus.DeliveryGuaranteeWarning):
        bridge = omnibus.bridge(f"{mqtt_url}/t-{tag}/%23?qos=1&version=5", sink, codec="json", sink_codec="msgpack",
                                key="{topic[1]}", headers={"site": "plant-1"}, transform=to_fahrenheit)
        with bridge, omnibus.publisher(f"{mqtt_url}/t-{tag}/dev-7?qos=1&version=5", codec="json") as pub:
            pub.publish_many([{"seq": i, "temperature": 20.0} for i in range(1, 101)],
                             headers=[{"unit": "C"}] * 100).wait(timeout=30)
            assert wait_until(lambda: bridge.stats.consumed == 100, timeout=60)
            assert bridge.stop(timeout=60)
        got = []
        while len(got) < 50:
            batch = out.receive_batch(100, timeout=30)
            assert batch, f"only {len(got)} of 50 arrived"
            got += batch
        out.ack(got)
    assert sorted(m.value["seq"] for m in got) == list(range(1, 101, 2))
    assert {m.value["temperature"] for m in got} == {68.0}
    assert {m.key for m in got} == {b"dev-7"}
    assert dict(got[0].headers) == {"unit": b"C", "site": b"plant-1"}
    stats = bridge.stats
    assert (stats.published, stats.dropped, stats.acked) == (50, 50, 100)
    assert len(calls) < 100  # once per batch, not per message


def test_bridge_bad_arguments_name_what_is_valid() -> None:
    with pytest.raises(omnibus.InvalidArgument, match=r"\{topic\[N\]\}"):
        omnibus.bridge("mem://a", "mem://b", key="{device}")
    with pytest.raises(omnibus.InvalidArgument, match="known schemes"):
        omnibus.bridge("mem://a", "kafak://b")
    with pytest.raises(omnibus.InvalidArgument, match="msgpack"):
        omnibus.bridge("mem://a", "mem://b", sink_codec="yaml")
    with pytest.raises(omnibus.InvalidArgument, match="batch"):
        omnibus.bridge("mem://a", "mem://b", batch=0)
    with pytest.raises(omnibus.InvalidArgument, match="callable"):
        omnibus.bridge("mem://a", "mem://b", transform=42)  # type: ignore[arg-type]


def test_a_transform_error_or_wrong_result_dead_letters_the_batch() -> None:
    def wrong(msgs: list[omnibus.Message]) -> list[Any]:
        return msgs[:-1]  # one short

    for fn, why in ((wrong, "same length"), (lambda msgs: 1 / 0, "ZeroDivisionError")):
        tag = uuid.uuid4().hex[:8]
        with omnibus.subscriber(f"mem://dlq-{tag}") as dead, \
                omnibus.bridge(f"mem://in-{tag}", f"mem://out-{tag}", transform=fn, dead_letter=f"mem://dlq-{tag}") as b, \
                omnibus.publisher(f"mem://in-{tag}") as pub:
            pub.publish_many([b"a", b"b"]).wait(timeout=5)
            got = dead.receive_batch(10, timeout=10)
            while len(got) < 2:
                got += dead.receive_batch(10, timeout=10)
            assert why in dict(got[0].headers)["omnibus-error"].decode()
            assert b.wait_idle(timeout=10)
            assert b.stats.dead_lettered == 2 and b.stats.published == 0


def test_mem_to_mem_is_at_least_once_without_a_warning() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with omnibus.bridge("mem://w-in", "mem://w-out") as b:
            assert b.delivery_guarantee == "at-least-once"
    assert "at-least-once" in repr(b)


def test_cli_bridge_runs_for_a_duration_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    import re
    import time

    from omnibus import cli

    done = threading.Event()

    def feed() -> None:
        with omnibus.publisher("mem://cli-in", codec="json") as pub:
            i = 0
            while not done.is_set():
                pub.publish({"i": i}).result(timeout=5)
                i += 1
                time.sleep(0.01)

    feeder = threading.Thread(target=feed)
    with omnibus.subscriber("mem://cli-out", codec="json") as out:
        feeder.start()
        try:
            assert cli.main(["bridge", "mem://cli-in", "mem://cli-out", "--duration", "1.5", "--codec", "json",
                             "--header", "via=cli"]) == 0
        finally:
            done.set()
            feeder.join()
        printed = capsys.readouterr().out
        assert "mem://cli-in -> mem://cli-out (at-least-once)" in printed
        final = re.search(r"stopped: consumed ([\d,]+)\s+published ([\d,]+)", printed)
        assert final, printed
        consumed, published = (int(g.replace(",", "")) for g in final.groups())
        assert consumed == published > 0
        got = out.receive_batch(100000, timeout=1)
        assert len(got) == published
        assert {dict(m.headers)["via"] for m in got} == {b"cli"}
