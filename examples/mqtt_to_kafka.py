"""Ingest sensor readings from MQTT into Kafka with omnibus.bridge, then prove none was lost.

    python examples/mqtt_to_kafka.py                      # starts Mosquitto and Kafka on loopback
    python examples/mqtt_to_kafka.py --mqtt mqtt://127.0.0.1:1883 --kafka kafka://127.0.0.1:9092

Simulated devices publish JSON readings on sensors/<device>. The bridge converts each temperature
to Fahrenheit, drops readings whose battery is low and writes the rest to the Kafka topic
"readings", keyed by device. The script then reads the topic back: every reading sent must be
either in Kafka or one the transform dropped on purpose (with brokers of your own, start from an
empty "readings" topic: the check counts all it holds).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
import uuid
from typing import Any

import omnibus
from omnibus import iot
from omnibus.bench import local_brokers

LOW_BATTERY = 82.0  # percent; the simulated batteries start between 80 and 100 and only drain
dropped: set[tuple[str, int]] = set()  # (device, seq) of what enrich() dropped, for the final check


def enrich(msgs: list[omnibus.Message]) -> list[Any]:
    """Called once per batch, not per message: one Python call for up to `batch` readings."""
    now_ms = int(time.time() * 1000)
    out: list[Any] = []
    for m in msgs:
        r = m.value  # a dict: the bridge decoded the JSON (codec="json")
        if r["battery"] < LOW_BATTERY:
            dropped.add((r["device"], r["seq"]))
            out.append(None)  # None drops the reading; it is still acked at the source
        else:  # a plain value replaces the message; the key from key="{topic[1]}" is kept
            out.append({**r, "temperature": round(r["temperature"] * 9 / 5 + 32, 2), "unit": "F",
                        "bridged_ms": now_ms})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="MQTT -> Kafka ingestion with omnibus.bridge")
    parser.add_argument("--mqtt", help="mqtt://host:port (default: start Mosquitto on loopback)")
    parser.add_argument("--kafka", help="kafka://host:port (default: start Kafka on loopback)")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--readings", type=int, default=5000, help="readings in all")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:  # stops any broker started here, whatever happens
        urls: dict[str, str | None] = {"mqtt": args.mqtt, "kafka": args.kafka}
        if missing := [p for p, url in urls.items() if not url]:
            started, _ = stack.enter_context(local_brokers(missing))
            urls.update(started)
        if not (urls["mqtt"] and urls["kafka"]):
            raise SystemExit("no broker for " + ", ".join(p for p, url in urls.items() if not url))

        # A persistent QoS 1 session (clean_session=false, fixed client_id): readings published
        # while the bridge is down wait on the broker. The bridge warns (DeliveryGuaranteeWarning)
        # that MQTT is at-most-once on its side: the MQTT client library acks a message on arrival.
        source = f"{urls['mqtt']}/sensors/%23?qos=1&version=5&clean_session=false&client_id=ingest"
        sink = f"{urls['kafka']}/readings?acks=all&idempotence=true"
        with omnibus.bridge(source, sink, codec="json", key="{topic[1]}", transform=enrich) as bridge:
            # The bridge subscribed first: MQTT keeps nothing for a subscriber that is not there yet.
            sim = iot.simulate(f"{urls['mqtt']}/sensors", devices=args.devices, readings=args.readings,
                               rate=None, qos=1, version=5)
            print(sim.summary())
            deadline = time.monotonic() + 120
            while bridge.stats.consumed < sim.sent and time.monotonic() < deadline and not bridge.failed:
                time.sleep(0.1)
            bridge.wait_idle(timeout=60)  # every reading taken is confirmed by Kafka (or dropped)
        stats = bridge.stats  # leaving the block stopped the bridge
        print(f"bridge: {stats.line()}")

        # A new consumer group reading from the start sees the topic as any downstream consumer will.
        audit = f"{sink}&group=audit-{uuid.uuid4().hex[:8]}&offset_reset=earliest"
        # The dropped readings never come, so collect() returns after its idle timeout (10 s).
        checked = iot.collect(audit, expected=sim.expected(), timeout=10)
        # The dropped readings are missing from Kafka on purpose: what remains missing was lost.
        lost = {d: [s for s in seqs if (d, s) not in dropped] for d, seqs in checked.missing.items()}
        checked = dataclasses.replace(checked, missing={d: seqs for d, seqs in lost.items() if seqs})
        kept = sim.sent - len(dropped)
        print(f"kafka: {checked.summary()}")
        print(f"dropped {len(dropped):,} low-battery readings, kept {kept:,}")
        # unique == kept: no dropped reading reached Kafka either.
        ok = checked.ok and checked.unique == kept and sim.failed == 0 and stats.failed == 0
        print("PASS: every reading is in Kafka or was dropped on purpose" if ok else "FAIL")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
