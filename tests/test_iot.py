"""omnibus.iot: the device simulator and the loss checker, against mem:// and real brokers."""

from __future__ import annotations

import uuid

import msgpack
import pytest

import omnibus
from omnibus import cli, iot


def topic() -> str:
    return f"iot-{uuid.uuid4().hex[:10]}"


def drain(sub: omnibus.Subscriber, idle: float = 0.5) -> list[omnibus.Message]:
    """Everything the subscriber gets until nothing came for `idle` seconds."""
    got: list[omnibus.Message] = []
    while True:
        batch = sub.receive_batch(1000, timeout=idle)
        if not batch:
            return got
        got.extend(batch)


# ---------------------------------------------------------------- mem://


def test_simulate_into_mem_loses_nothing() -> None:
    url = f"mem://{topic()}"
    with omnibus.subscriber(url, codec="json") as sub:
        result = iot.simulate(url, devices=20, rate=1000, readings=2_000)
        messages = drain(sub)
    assert (result.sent, result.failed, result.devices, result.publishers) == (2_000, 0, 20, 1)
    assert not result.interrupted
    assert result.expected() == {iot.device_id(i, 20): 100 for i in range(20)}
    report = iot.check(messages, expected=result.expected())
    assert report.ok and report.duplicates == 0 and report.invalid == 0
    assert (report.total, report.unique, report.devices) == (2_000, 2_000, 20)
    assert report.summary().startswith("ok: 2,000 readings from 20 devices")
    first = messages[0]
    assert first.key == b"dev-0000"
    assert set(first.value) == {"device", "seq", "ts", "temperature", "humidity", "battery"}
    assert first.value["device"] == "dev-0000" and first.value["seq"] == 1
    assert isinstance(first.value["ts"], int) and isinstance(first.value["temperature"], float)
    # Each device's seqs arrive in order, 1..100 without holes.
    seqs: dict[str, list[int]] = {}
    for m in messages:
        seqs.setdefault(m.value["device"], []).append(m.value["seq"])
    assert all(s == list(range(1, 101)) for s in seqs.values())


def test_failed_readings_say_why() -> None:
    # A reading is ~100 bytes of JSON: a 50-byte limit refuses every one.
    result = iot.simulate(f"mem://{topic()}?max_message_bytes=50", devices=3, rate=1000, readings=30)
    assert (result.sent, result.failed) == (30, 30)
    assert sum(result.errors.values()) == 30
    assert all("exceeds max_message_bytes=50" in text for text in result.errors)
    most = max(result.errors.items(), key=lambda e: e[1])
    assert f"{most[1]} x {most[0]}" in result.summary()


def test_same_seed_same_readings() -> None:
    def run(seed: int) -> list[tuple]:
        url = f"mem://{topic()}"
        with omnibus.subscriber(url, codec="json") as sub:
            iot.simulate(url, devices=3, rate=1000, readings=30, seed=seed)
            return [(v["device"], v["seq"], v["temperature"], v["humidity"], v["battery"])
                    for v in (m.value for m in drain(sub))]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_duration_gives_rate_times_duration_readings_per_device() -> None:
    url = f"mem://{topic()}"
    result = iot.simulate(url, devices=5, rate=50, duration=0.2)
    assert result.sent == 50
    assert result.expected() == {iot.device_id(i, 5): 10 for i in range(5)}


def test_progress_is_reported_while_publishing() -> None:
    # 2 devices x round(1.5 s * 10/s) = 30 readings, the last due at 1.45 s: past the first report at 1 s.
    snapshots: list[iot.SimulationResult] = []
    result = iot.simulate(f"mem://{topic()}", devices=2, rate=10, duration=1.5, progress=snapshots.append)
    assert result.sent == 30
    assert snapshots and all(0 < s.sent <= 30 for s in snapshots)


def test_msgpack_payloads_and_check_of_raw_bytes() -> None:
    url = f"mem://{topic()}"
    with omnibus.subscriber(url, codec="raw") as sub:
        result = iot.simulate(url, devices=4, rate=1000, readings=40, codec="msgpack")
        payloads = [bytes(m.payload) for m in drain(sub)]
    assert len(payloads) == 40
    assert msgpack.unpackb(payloads[0])["device"] == "dev-0000"  # really MessagePack on the wire
    report = iot.check(payloads, expected=result.expected(), codec="msgpack")
    assert report.ok and report.unique == 40 and report.invalid == 0
    # A lost payload, a repeated one and one that is not MessagePack of a reading.
    report = iot.check(payloads[1:] + payloads[5:6] + [b"\xc1"], expected=result.expected(), codec="msgpack")
    assert report.missing == {"dev-0000": [1]}
    assert (report.duplicates, report.invalid) == (1, 1)


def test_check_of_json_bytes() -> None:
    readings = [b'{"device": "a", "seq": 1}', b'{"device": "a", "seq": 3}', b"not json"]
    report = iot.check(readings)
    assert report.missing == {"a": [2]} and report.invalid == 1


def test_collect_from_url_replays_a_mem_group_backlog() -> None:
    # A named mem:// group keeps a backlog while no consumer is attached, as a
    # Kafka consumer group with offset_reset=earliest replays the topic.
    url = f"mem://{topic()}"
    omnibus.subscriber(url, group="audit").close()
    result = iot.simulate(url, devices=10, rate=1000, readings=300)
    report = iot.collect(url, expected=result.expected(), timeout=5, group="audit")
    assert report.ok and report.unique == 300 and report.duplicates == 0


def test_collect_stops_after_idle_timeout_and_names_the_missing() -> None:
    url = f"mem://{topic()}"
    with omnibus.subscriber(url, codec="json") as sub:
        result = iot.simulate(url, devices=2, rate=1000, readings=10)
        expected = {**result.expected(), "dev-0001": 7, "dev-0009": 2}
        report = iot.collect(sub, expected=expected, timeout=0.3)
    assert not report.ok
    assert report.missing == {"dev-0001": [6, 7], "dev-0009": [1, 2]}
    assert "MISSING 4 readings of 2 devices" in report.summary()


# ---------------------------------------------------------------- check on hand-made readings


def test_check_reports_exactly_the_gap_and_the_duplicate() -> None:
    readings = [{"device": "d1", "seq": s} for s in (1, 2, 4, 5, 5, 6)]
    readings += [{"device": "d2", "seq": s} for s in (1, 2, 3)]
    report = iot.check(readings)
    assert report.missing == {"d1": [3]}
    assert report.duplicates == 1
    assert (report.total, report.unique, report.devices, report.invalid) == (9, 8, 2, 0)
    assert not report.ok and report.missing_count == 1
    assert report.summary().startswith("MISSING 1 readings of 1 devices (d1: 3);")


def test_check_with_expected_sees_losses_at_the_end_and_silent_devices() -> None:
    readings = [{"device": "d1", "seq": s} for s in (1, 2, 3)]
    report = iot.check(readings, expected={"d1": 5, "d2": 2})
    assert report.missing == {"d1": [4, 5], "d2": [1, 2]}
    assert iot.check(readings).ok  # without expected the tail loss is invisible


def test_check_summary_spells_gaps_as_ranges() -> None:
    readings = [{"device": "d", "seq": s} for s in (1, 5, 6, 10)]
    assert "d: 2-4, 7-9" in iot.check(readings).summary()


def test_check_counts_non_readings_as_invalid() -> None:
    report = iot.check([{"device": "d", "seq": 1}, {"seq": 2}, {"device": "d", "seq": 0}, {"device": "d",
                        "seq": True}, "text"])
    assert (report.invalid, report.unique, report.ok) == (4, 1, True)


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"devices": 0}, "devices must be an int >= 1"),
        ({"devices": 2.5}, "devices must be an int >= 1"),
        ({"rate": 0}, "rate must be a finite number > 0 or None"),
        ({"rate": -1.0}, "rate must be a finite number > 0 or None"),
        ({"rate": float("inf")}, "rate must be a finite number > 0 or None"),
        ({"duration": 0}, "duration must be a finite number > 0 or None"),
        ({"readings": 0}, "readings must be an int >= 1 or None"),
        ({"codec": "xml"}, "valid codecs: json, msgpack"),
        ({"codec": "raw"}, "valid codecs: json, msgpack"),
        ({"topic_template": "{base}/{sensor}"}, "valid fields: base, device"),
        ({"connections": 0}, "connections must be an int >= 1"),
    ],
)
def test_bad_arguments_raise_invalid_argument_naming_valid_values(kwargs: dict, names: str) -> None:
    with pytest.raises(omnibus.InvalidArgument, match=names.replace("(", r"\(")):
        iot.simulate(f"mem://{topic()}", **kwargs)


def test_check_and_collect_reject_unknown_codecs() -> None:
    with pytest.raises(omnibus.InvalidArgument, match="valid codecs: json, msgpack"):
        iot.check([], codec="yaml")
    with pytest.raises(omnibus.InvalidArgument, match="valid codecs: json, msgpack"):
        iot.collect(f"mem://{topic()}", expected={}, codec="yaml")


# ---------------------------------------------------------------- CLI


def test_cli_simulate(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", f"mem://{topic()}", "--devices", "3", "--readings", "30", "--rate", "100"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "3 devices" in out
    assert "sent 30 readings from 3 devices" in out and "failed 0" in out


def test_cli_simulate_bad_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["simulate", "mem://x", "--devices", "0"]) == 2
    assert "devices must be an int >= 1" in capsys.readouterr().err


# ---------------------------------------------------------------- real brokers

needs_mqtt = pytest.mark.skipif("mqtt" in omnibus.unavailable_drivers(),
                                reason="mqtt:// is not in this build")


@needs_mqtt
def test_simulate_into_mosquitto_one_topic_per_device(mqtt_url: str) -> None:
    base = f"{mqtt_url}/{topic()}"
    with omnibus.subscriber(f"{base}/#?qos=1&version=5", codec="json") as sub:
        result = iot.simulate(f"{base}?qos=1&version=5", devices=50, rate=100, readings=1_000)
        assert (result.sent, result.failed, result.publishers) == (1_000, 0, 50)
        messages = iot_messages(sub, 1_000)
    report = iot.check(messages, expected=result.expected())
    assert report.ok and report.unique == 1_000 and report.duplicates == 0
    path = base.split("/", 3)[3]
    assert {(m.topic, m.key) for m in messages} == {
        (f"{path}/{iot.device_id(i, 50)}", iot.device_id(i, 50).encode()) for i in range(50)}


@needs_mqtt
def test_simulate_into_mosquitto_groups_devices_beyond_connections(mqtt_url: str) -> None:
    base = f"{mqtt_url}/{topic()}"
    with omnibus.subscriber(f"{base}/#?qos=1&version=5", codec="msgpack") as sub:
        result = iot.simulate(f"{base}?qos=1&version=5", devices=10, rate=100, readings=200, codec="msgpack",
                              connections=3)
        assert (result.sent, result.failed, result.publishers) == (200, 0, 3)
        report = iot.collect(sub, expected=result.expected(), timeout=10, codec="msgpack")
        extra = sub.receive_batch(10, timeout=0.2)
    assert report.ok and report.unique == 200 and not extra
    assert result.expected() == {iot.device_id(i, 10): 20 for i in range(10)}


@needs_mqtt
def test_group_topics_and_keys_over_mqtt(mqtt_url: str) -> None:
    base = f"{mqtt_url}/{topic()}"
    path = base.split("/", 3)[3]
    with omnibus.subscriber(f"{base}/#?qos=1&version=5", codec="json") as sub:
        iot.simulate(f"{base}?qos=1&version=5", devices=4, rate=100, readings=4, connections=2)
        messages = iot_messages(sub, 4)
    assert sorted((m.topic, m.key) for m in messages) == [
        (f"{path}/group-0", b"dev-0000"), (f"{path}/group-0", b"dev-0002"),
        (f"{path}/group-1", b"dev-0001"), (f"{path}/group-1", b"dev-0003")]


@pytest.mark.skipif("nats" in omnibus.unavailable_drivers(), reason="nats:// is not in this build")
def test_simulate_into_nats_uses_dotted_subjects(nats_url: str) -> None:
    base = f"{nats_url}/{topic()}"
    path = base.split("/", 3)[3]
    with omnibus.subscriber(f"{base}.>", codec="json") as sub:
        result = iot.simulate(base, devices=5, rate=1000, readings=100)
        messages = iot_messages(sub, 100)
    assert iot.check(messages, expected=result.expected()).ok
    assert {m.topic for m in messages} == {f"{path}.{iot.device_id(i, 5)}" for i in range(5)}


def iot_messages(sub: omnibus.Subscriber, n: int, timeout: float = 30) -> list[omnibus.Message]:
    """n messages, or fewer when `timeout` seconds pass without one (check() then names the gaps)."""
    got: list[omnibus.Message] = []
    while len(got) < n:
        batch = sub.receive_batch(n - len(got), timeout=timeout)
        if not batch:
            break
        got.extend(batch)
    return got

