"""omnibus.bench: the protocol comparison on a tiny workload against every real broker.

These tests check the shape and sanity of the figures (counts add up, p50 <= p99 <= max, no
loss where the guarantee promises none, bytes on the wire as the protocol defines them), never
a speed: the machine is shared.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import omnibus
from omnibus import _core, bench
from omnibus.testing.brokers import RabbitMQ

TINY = bench.Workload(name="tiny", payload_sizes=[100], messages=300, batch=100, idle_timeout=3)


def check_row(row: dict[str, Any], workload: bench.Workload) -> None:
    assert row.get("error") is None, row
    n = workload.messages
    assert row["messages"] == n and row["failed"] == 0
    assert row["received"] == n - row["lost"] + row["duplicated"]
    assert 0 <= row["lost"] <= n and row["duplicated"] >= 0
    if row["guarantee"] == "at-least-once":
        assert row["lost"] == 0, f"{row['target']} promises at-least-once but lost {row['lost']}"
    assert 0 <= row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["p99_9_ms"] <= row["max_ms"]
    assert row["publish_rate"] > 0 and row["delivered_rate"] > 0
    assert row["client_cpu_us"] > 0
    if row["protocol"] != "mem":
        # Every message crossed the wire at least once each way (publish in, delivery out).
        assert row["wire_out_bytes"] >= row["payload_bytes"] and row["wire_in_bytes"] >= row["payload_bytes"]
    assert row["broker_check"] == "not checked" or row["broker_check"].startswith("ok"), row["broker_check"]


def test_mem_runs_everywhere() -> None:
    result = bench.compare(bench.default_targets({}), [TINY, bench.Workload(
        name="open-loop", payload_sizes=[64], messages=200, rate=2000, idle_timeout=3)])
    assert [r["target"] for r in result.rows] == ["mem", "mem"]
    for row, wl in zip(result.rows, result.workloads):
        check_row(row, wl)
        assert row["wire_out_bytes"] is None and row["broker_cpu_us"] is None
    # Open loop at 2,000 msg/s: 200 messages take about 0.1 s to publish; never faster than the schedule.
    assert result.rows[1]["publish_rate"] <= 2000 * 1.05


@pytest.fixture
def _rabbitmq_with_metrics() -> Iterator[RabbitMQ]:
    with RabbitMQ(**bench._BROKER_OPTIONS["amqp"]) as broker:
        yield broker


@pytest.mark.parametrize("kind", bench.PROTOCOLS)
def test_tiny_comparison_against_each_real_broker(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if kind in omnibus.unavailable_drivers():
        pytest.skip(f"{kind}:// is not in this build: {omnibus.unavailable_drivers()[kind]}")
    url = request.getfixturevalue(f"{kind}_url")
    broker = None if f"OMNIBUS_{kind.upper()}_URL" in os.environ else request.getfixturevalue(f"{kind}_broker")
    if kind == "amqp" and broker is not None:
        # The comparison starts RabbitMQ with its exact counters (bench._BROKER_OPTIONS); the
        # suite's shared broker has none.
        broker = request.getfixturevalue("_rabbitmq_with_metrics")
        url = broker.url
    targets = bench.default_targets({kind: url}, {kind: broker} if broker else {}, include_mem=False)
    assert {t.name for t in targets} == {name for name, _ in bench._VARIANTS[kind]}
    result = bench.compare(targets, TINY)
    assert len(result.rows) == len(targets)
    for row in result.rows:
        check_row(row, TINY)
        if broker is not None:
            assert row["broker_cpu_us"] is not None and row["broker_cpu_us"] >= 0
        if kind in ("kafka", "redis") or (kind in ("nats", "mqtt", "amqp", "pulsar") and broker is not None):
            assert row["broker_check"].startswith("ok"), row  # the broker's own count was read and matched
    report = result.save(tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["rows"]) == len(targets) and saved["workloads"][0]["messages"] == TINY.messages
    assert report.exists() and any(tmp_path.glob("delivered_*.png"))
    assert "msg/s" in result.table()


def test_bytes_on_the_wire_match_the_mqtt_publish_packet(mqtt_url: str) -> None:
    """QoS 0 on MQTT 5: each message is one PUBLISH each way, nothing else, so the measured
    bytes per message must equal the packet size computed from the topic and payload."""
    if "mqtt" in omnibus.unavailable_drivers():
        pytest.skip("mqtt:// is not in this build")
    wl = bench.Workload(name="wire", payload_sizes=[100], messages=2000, batch=200, idle_timeout=3)
    row = bench.run_target(bench.Target("mqtt qos0", mqtt_url, {"qos": 0}), 100, wl)
    assert row["lost"] == 0
    topic = row["topic"].encode()
    # PUBLISH: fixed header byte, Remaining Length (a varint), topic (2-byte length + bytes),
    # property length 0 (MQTT 5, no properties), payload. QoS 0 has no packet identifier.
    remaining = 2 + len(topic) + 1 + 100
    varint = 1 if remaining < 128 else 2
    expected = 1 + varint + remaining
    # Keepalive PINGREQ/PINGRESP (2 bytes each) may fall into the window; nothing else may.
    assert expected <= row["wire_out_bytes"] <= expected + 0.1
    assert expected <= row["wire_in_bytes"] <= expected + 0.1


def test_histogram_and_payloads_from_python() -> None:
    h = _core.LatencyHistogram()
    for v in range(1, 1001):
        h.record(v * 1000)
    p50, p99 = h.percentiles([50, 99])
    assert 500_000 <= p50 <= 500_000 * (1 + 1 / 128) and 990_000 <= p99 <= 990_000 * (1 + 1 / 128)
    assert h.count == 1000 and h.min == 1000 and h.max == 1_000_000
    with pytest.raises(omnibus.InvalidArgument, match="between 0 and 100"):
        h.percentile(120)
    payloads = _core.make_payloads(5, 3, 20, 1_000, 10)
    assert [len(p) for p in payloads] == [20, 20, 20]
    rec = _core.DeliveryRecorder(10)
    rec.record(payloads + payloads[:1])
    assert (rec.received, rec.unique, rec.duplicates, rec.missing) == (4, 3, 1, 7)
    with pytest.raises(omnibus.InvalidArgument, match="at least"):
        _core.make_payloads(0, 1, 8, 0, 0)


@pytest.mark.parametrize(
    ("fields", "match"),
    [({"payload_sizes": [8]}, "payload_sizes"), ({"messages": 0}, "messages"), ({"rate": -1}, "rate"),
     ({"key_space": -2}, "key_space")],
)
def test_bad_workloads_name_the_field(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(omnibus.InvalidArgument, match=match):
        bench.Workload(**fields)


def test_workload_from_file(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"payload_sizes": [64, 512], "messages": 50, "rate": 100.0}))
    wl = bench.Workload.from_file(path)
    assert wl.payload_sizes == [64, 512] and wl.rate == 100.0 and not math.isnan(wl.messages)
    path.write_text(json.dumps({"messagez": 5}))
    with pytest.raises(omnibus.InvalidArgument, match="unknown workload field.*valid fields"):
        bench.Workload.from_file(path)
