"""IoT ingestion: a fleet of simulated devices, and a checker that finds lost and repeated readings.

An ingestion pipeline is only trustworthy once it has been shown not to lose
readings under load, so this module makes that measurable end to end::

    import omnibus.iot as iot

    # Subscribe first: MQTT and core NATS keep nothing for late subscribers.
    with omnibus.subscriber("mqtt://127.0.0.1:1883/sensors/#?qos=1&version=5", codec="json") as sub:
        sent = iot.simulate("mqtt://127.0.0.1:1883/sensors?qos=1&version=5", devices=50, rate=10, duration=5)
        report = iot.collect(sub, expected=sent.expected(), timeout=5)
    print(sent.summary())
    print(report.summary())     # "ok: ..." or the gaps per device and the duplicate count

Every reading is a dict ``{"device": "dev-0007", "seq": 1, "ts": <epoch ms>,
"temperature": 21.4, "humidity": 43.1, "battery": 99.87}``. ``seq`` counts
from 1 per device without holes, so a hole at the receiving end is a lost
reading and a repeated (device, seq) is a redelivery; no clock or ordering
assumption is needed to tell them apart.
"""

from __future__ import annotations

import concurrent.futures
import math
import random
import string
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import omnibus

from . import _core

__all__ = ["CODECS", "CheckResult", "SimulationResult", "check", "collect", "device_id", "simulate"]

CODECS = ("json", "msgpack")
"""Codecs a reading travels in: both keep the dict as it is (floats, ints and str)."""

# Schemes whose topic is chosen per device, and the separator of their topic levels.
_TOPIC_SEPARATOR = {"mqtt": "/", "nats": "."}
_TEMPLATE_FIELDS = ("base", "device")
_CHUNK = 1000  # readings per publish_many call: one boundary crossing, a bounded batch
_STEP = 20_000  # readings per loop pass at most: progress and reaping keep going when far behind


def device_id(index: int, devices: int) -> str:
    """The id of device ``index`` (0-based) of a fleet of ``devices``: dev-0000, dev-0001, ...

    Zero-padded to at least four digits so that ids sort in device order.
    """
    return f"dev-{index:0{max(4, len(str(devices - 1)))}d}"


@dataclass
class SimulationResult:
    """What simulate() sent, and what the protocol confirmed.

    ``sent`` counts readings handed to a publisher; ``failed`` those whose
    delivery result was an error (or that were refused, or still unconfirmed
    when simulate() stopped waiting). ``last_seq`` maps each device to the last
    seq it sent: every seq from 1 to it was sent exactly once, which is what
    check() and collect() need to know to find gaps. ``publishers`` is the
    number of publishers (broker connections) used; ``in_flight`` is nonzero
    only in the snapshots passed to ``progress``. ``errors`` says why readings
    failed: error text -> readings, the first 20 distinct texts (the rest
    counted under "(other errors)").
    """

    url: str
    devices: int
    sent: int
    failed: int
    seconds: float
    rate: float
    last_seq: dict[str, int] = field(default_factory=dict)
    publishers: int = 1
    in_flight: int = 0
    interrupted: bool = False
    errors: dict[str, int] = field(default_factory=dict)

    def expected(self) -> dict[str, int]:
        """device -> last seq sent: the readings a lossless pipeline delivers (for check/collect)."""
        return dict(self.last_seq)

    def summary(self) -> str:
        """One line: sent, failed and the rate achieved."""
        stopped = ", interrupted" if self.interrupted else ""
        plural = "s" if self.publishers != 1 else ""
        why = "".join(f"; {n:,} x {text}" for text, n in
                      sorted(self.errors.items(), key=lambda e: -e[1])[:3])
        return (f"sent {self.sent:,} readings from {self.devices:,} devices in {self.seconds:.1f} s "
                f"({self.rate:,.0f} msg/s, {self.publishers} publisher{plural}), "
                f"failed {self.failed:,}{stopped}{why}")


@dataclass
class CheckResult:
    """Readings tallied per (device, seq).

    ``missing`` maps a device to its missing seqs, sorted; a device without
    gaps is absent. ``duplicates`` counts the copies beyond the first (an
    at-least-once pipeline may legitimately produce some, so they do not make
    ``ok`` false). ``invalid`` counts items that were not readings (could not
    be decoded, or had no str device and int seq >= 1).
    """

    total: int
    unique: int
    duplicates: int
    devices: int
    missing: dict[str, list[int]] = field(default_factory=dict)
    invalid: int = 0

    @property
    def ok(self) -> bool:
        """True when no reading is missing."""
        return not self.missing

    @property
    def missing_count(self) -> int:
        """Readings missing over all devices."""
        return sum(len(v) for v in self.missing.values())

    def summary(self, limit: int = 5) -> str:
        """One line; the gaps of at most ``limit`` devices are spelled out, as seq ranges."""
        counts = (f"{self.total:,} readings from {self.devices:,} devices, {self.unique:,} unique, "
                  f"{self.duplicates:,} duplicate{'s' if self.duplicates != 1 else ''}")
        if self.invalid:
            counts += f", {self.invalid:,} invalid"
        if self.ok:
            return f"ok: {counts}, none missing"
        shown = []
        for device in sorted(self.missing)[:limit]:
            shown.append(f"{device}: {_ranges(self.missing[device])}")
        more = len(self.missing) - len(shown)
        gaps = "; ".join(shown) + (f"; and {more:,} more devices" if more > 0 else "")
        return f"MISSING {self.missing_count:,} readings of {len(self.missing):,} devices ({gaps}); {counts}"


def _ranges(seqs: list[int], limit: int = 6) -> str:
    """Sorted seqs as "3, 7-9, 12": gaps usually come in runs, and a run reads better as a range."""
    runs: list[str] = []
    start = prev = seqs[0]
    for s in seqs[1:] + [None]:  # type: ignore[list-item]
        if s is not None and s == prev + 1:
            prev = s
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if s is not None:
            start = prev = s
    if len(runs) > limit:
        return ", ".join(runs[:limit]) + f", ... ({len(runs) - limit} more runs)"
    return ", ".join(runs)


# ---------------------------------------------------------------- simulate


class _Fleet:
    """Sensor values per device, drifting a little per reading.

    One random generator for the whole fleet, drawn from in publish order, so
    that a seed gives the same readings every run.
    """

    def __init__(self, ids: list[str], seed: int) -> None:
        self.ids = ids
        self.rng = random.Random(seed)
        rng = self.rng
        self.temperature = [rng.uniform(18.0, 26.0) for _ in ids]
        self.humidity = [rng.uniform(30.0, 60.0) for _ in ids]
        self.battery = [rng.uniform(80.0, 100.0) for _ in ids]

    def reading(self, d: int, seq: int, ts: int) -> dict[str, Any]:
        rng = self.rng
        self.temperature[d] += rng.gauss(0.0, 0.1)
        self.humidity[d] = min(100.0, max(0.0, self.humidity[d] + rng.gauss(0.0, 0.3)))
        self.battery[d] = max(0.0, self.battery[d] - rng.random() * 0.01)
        return {"device": self.ids[d], "seq": seq, "ts": ts, "temperature": round(self.temperature[d], 2),
                "humidity": round(self.humidity[d], 2), "battery": round(self.battery[d], 2)}


def _split_url(url: str) -> tuple[str, str, str]:
    """(scheme://authority, path without its leading '/', query without '?'), as written (not decoded)."""
    sep = url.index("://") + 3
    rest = url[sep:]
    query = ""
    if "?" in rest:
        rest, query = rest.split("?", 1)
    authority, _, path = rest.partition("/")
    return url[:sep] + authority, path, query


def _check_positive(name: str, value: Any, *, integer: bool, allow_none: bool, meaning: str) -> None:
    ok_type = (isinstance(value, int) and not isinstance(value, bool)) if integer else (
        isinstance(value, (int, float)) and not isinstance(value, bool))
    if value is None and allow_none:
        return
    if not ok_type or not (value > 0) or (not integer and not math.isfinite(value)):
        none = " or None" if allow_none else ""
        kind = "an int >= 1" if integer else "a finite number > 0"
        raise omnibus.InvalidArgument(f"{name} must be {kind}{none} ({meaning}), got {value!r}")


def _check_codec(codec: Any) -> None:
    if codec not in CODECS:
        raise omnibus.InvalidArgument(
            f"unknown codec {codec!r} for readings; valid codecs: {', '.join(CODECS)}")


def _check_template(template: str) -> None:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise omnibus.InvalidArgument(f"topic_template {template!r} is not a format string: {e}") from None
    unknown = sorted(set(names) - set(_TEMPLATE_FIELDS))
    if unknown or "device" not in names:
        raise omnibus.InvalidArgument(
            f"topic_template {template!r} must use {{device}} and may use {{base}}; valid fields: "
            f"{', '.join(_TEMPLATE_FIELDS)}" + (f" (unknown: {', '.join(unknown)})" if unknown else ""))


def _plan(url: str, ids: list[str], topic_template: str, connections: int) -> tuple[list[str], list[int]]:
    """The publisher URLs, and the index of each device's publisher.

    One topic per device where the protocol routes by topic (MQTT, NATS);
    beyond ``connections`` devices they share ``connections`` group topics,
    because every publisher is a broker connection of its own (see simulate).
    """
    scheme = _core.parse_url(url)["scheme"]
    separator = _TOPIC_SEPARATOR.get(scheme)
    if separator is None:
        return [url], [0] * len(ids)
    prefix, base, query = _split_url(url)
    base = base.rstrip("/")
    tail = f"?{query}" if query else ""

    def topic(name: str) -> str:
        text = topic_template.format(base=base, device=name)
        if separator != "/":
            text = text.replace("/", separator)
        return text.strip(separator) if not base else text

    if len(ids) <= connections:
        return [f"{prefix}/{topic(name)}{tail}" for name in ids], list(range(len(ids)))
    width = len(str(connections - 1))
    groups = [f"group-{g:0{width}d}" for g in range(connections)]
    return [f"{prefix}/{topic(g)}{tail}" for g in groups], [i % connections for i in range(len(ids))]


def _open_all(urls: list[str], codec: str, options: dict[str, Any]) -> list[omnibus.Publisher]:
    """Open the publishers concurrently.

    Paho connects one client at a time when opened in sequence (about 2 s each
    on an idle process: its socket thread polls new sockets once a second), so
    64 MQTT publishers took minutes one by one and seconds together.
    """
    if len(urls) == 1:
        return [omnibus.publisher(urls[0], codec=codec, **options)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(urls), 64)) as pool:
        futures = [pool.submit(omnibus.publisher, u, codec=codec, **options) for u in urls]
        concurrent.futures.wait(futures)
    opened = [f.result() for f in futures if f.exception() is None]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        for p in opened:
            p.close(timeout=0)
        raise errors[0]  # type: ignore[misc]
    return opened


def simulate(
    url: str,
    *,
    devices: int = 100,
    rate: float | None = 1.0,
    duration: float | None = 10.0,
    readings: int | None = None,
    codec: str = "json",
    topic_template: str = "{base}/{device}",
    seed: int = 0,
    connections: int = 64,
    delivery_timeout: float = 60.0,
    progress: Callable[[SimulationResult], Any] | None = None,
    **options: omnibus.OptionValue,
) -> SimulationResult:
    """Publish readings from ``devices`` simulated devices to ``url``; returns what was sent and confirmed.

    Topics: on mqtt:// and nats:// each device publishes on a topic of its
    own, ``topic_template`` formatted with ``base`` (the URL's path) and
    ``device`` (its id): ``mqtt://host/sensors`` gives ``sensors/dev-0007``,
    ``nats://host/sensors`` gives ``sensors.dev-0007`` ('/' in the template
    becomes NATS' '.'). Each topic is one publisher and so one broker
    connection, which is fine for tens of devices and wasteful for thousands:
    with more than ``connections`` devices (default 64) the devices share
    ``connections`` publishers, device i on group i % connections, and
    ``{device}`` in the template names the group (``sensors/group-07``). Other
    schemes (kafka, amqp, mem) route by key, not topic: one publisher on
    ``url`` itself. In every case the message key is the device id (MQTT
    carries keys in MQTT 5 user properties: use version=5) and the payload
    names the device, so a subscriber tells devices apart on any topic.

    Pacing: ``rate`` readings per second per device (``devices * rate`` in
    all), open loop on time.monotonic(): reading n is due at n / (devices *
    rate) seconds, and when the publisher falls behind the backlog goes out
    at once instead of slowing the schedule down (a slow broker must not
    lower the offered load). ``rate=None`` publishes as fast as the publishers
    accept. Readings go round robin over the devices, so each device's seqs
    are contiguous; a reading's ``ts`` is its scheduled time (the time the
    device measured), or the publish time with ``rate=None``.

    How many: ``readings`` total (exactly, wins over duration); else
    ``duration`` seconds: round(duration * rate) readings per device (at least
    one), or with rate=None as many as fit in the time; with both None until
    Ctrl-C. Ctrl-C always stops publishing early: simulate() then still waits
    for the delivery results and returns, with ``interrupted`` set.

    Delivery: publish_many in chunks per publisher; every result is waited for
    (up to ``delivery_timeout`` seconds after the last publish) and failures
    are counted, not raised. ``progress(snapshot)`` is called about once a
    second with a SimulationResult so far. ``options`` go to every publisher
    (as omnibus.publisher takes them). Raises InvalidArgument for a bad
    argument, and whatever opening a publisher raises (Unavailable, ...).
    """
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise omnibus.InvalidArgument(f"devices must be an int >= 1 (the fleet size), got {devices!r}")
    _check_positive("rate", rate, integer=False, allow_none=True,
                    meaning="readings per second per device; None: as fast as possible")
    _check_positive("duration", duration, integer=False, allow_none=True,
                    meaning="seconds; None: until Ctrl-C")
    _check_positive("readings", readings, integer=True, allow_none=True, meaning="readings in all")
    _check_positive("connections", connections, integer=True, allow_none=False,
                    meaning="most publishers for per-device topics")
    _check_positive("delivery_timeout", delivery_timeout, integer=False, allow_none=False, meaning="seconds")
    _check_codec(codec)
    _check_template(topic_template)

    ids = [device_id(i, devices) for i in range(devices)]
    urls, owner = _plan(url, ids, topic_template, connections)
    total_rate = None if rate is None else devices * rate
    if readings is not None:
        total: int | None = readings
    elif duration is not None and rate is not None:
        total = devices * max(1, round(duration * rate))
    else:
        total = None  # until duration passes (rate=None) or Ctrl-C
    stop_after = duration if (readings is None and rate is None) else None

    fleet = _Fleet(ids, seed)
    last_seq: dict[str, int] = {}
    outstanding: deque[tuple[omnibus.Delivery, int]] = deque()
    counts = {"sent": 0, "failed": 0, "confirmed": 0}
    errors: dict[str, int] = {}
    interrupted = False

    def count_failures(delivery: omnibus.Delivery) -> None:
        failures = delivery.failures()
        counts["failed"] += len(failures)
        for _, error in failures:
            _note_error(errors, str(error))

    def reap() -> None:
        while outstanding and outstanding[0][0].done():
            delivery, n = outstanding.popleft()
            count_failures(delivery)
            counts["confirmed"] += n

    def snapshot(elapsed: float, in_flight: int) -> SimulationResult:
        return SimulationResult(url=url, devices=devices, sent=counts["sent"], failed=counts["failed"],
                                seconds=elapsed, rate=counts["sent"] / elapsed if elapsed > 0 else 0.0,
                                last_seq=dict(last_seq), publishers=len(urls), in_flight=in_flight,
                                interrupted=interrupted, errors=dict(errors))

    pubs = _open_all(urls, codec, dict(options))
    start = time.monotonic()
    wall_start = time.time()
    deadline = start  # for the results: set when publishing ends
    try:
        next_report = start + 1.0
        n = 0  # index of the next reading: device n % devices, seq n // devices + 1
        try:
            while total is None or n < total:
                now = time.monotonic()
                if stop_after is not None and now - start >= stop_after:
                    break
                due = n + _STEP if total_rate is None else int((now - start) * total_rate) + 1
                due = min(due, n + _STEP, total if total is not None else due)
                if due > n:
                    _publish_range(pubs, owner, fleet, n, due, devices, total_rate, start, wall_start,
                                   last_seq, outstanding, counts, errors)
                    n = due
                reap()
                now = time.monotonic()
                if progress is not None and now >= next_report:
                    next_report = max(next_report + 1.0, now)
                    progress(snapshot(now - start, counts["sent"] - counts["confirmed"]))
                if total_rate is not None and (total is None or n < total):
                    # Sleep until the next reading is due, but at least a
                    # millisecond: at high rates the readings due meanwhile go
                    # out as one batch instead of one call each.
                    wake = min(start + n / total_rate, next_report if progress is not None else math.inf)
                    time.sleep(max(0.001, wake - time.monotonic()))
        except KeyboardInterrupt:
            interrupted = True
        deadline = time.monotonic() + delivery_timeout
        for delivery, _ in outstanding:
            if not delivery.wait(max(0.0, deadline - time.monotonic())):
                break
    finally:
        for p in pubs:
            try:
                p.close(timeout=max(0.0, deadline - time.monotonic()))
            except omnibus.Error:
                pass  # its undelivered messages fail their Delivery with Closed: counted below
    for delivery, size in outstanding:
        if delivery.done():
            count_failures(delivery)
        else:
            counts["failed"] += size
            _note_error(errors, f"not confirmed within delivery_timeout={delivery_timeout:g} s", size)
    elapsed = time.monotonic() - start
    return snapshot(elapsed, 0)


def _publish_range(pubs: list[omnibus.Publisher], owner: list[int], fleet: _Fleet, first: int, end: int,
                   devices: int, total_rate: float | None, start: float, wall_start: float,
                   last_seq: dict[str, int], outstanding: deque[tuple[omnibus.Delivery, int]],
                   counts: dict[str, int], errors: dict[str, int]) -> None:
    """Generate readings first..end-1 and publish them, in chunks per publisher."""
    now_ms = int((wall_start + time.monotonic() - start) * 1000)
    buckets: dict[int, tuple[list[dict[str, Any]], list[str]]] = {}
    for k in range(first, end):
        d = k % devices
        ts = now_ms if total_rate is None else int((wall_start + k / total_rate) * 1000)
        value = fleet.reading(d, k // devices + 1, ts)
        values, keys = buckets.setdefault(owner[d], ([], []))
        values.append(value)
        keys.append(value["device"])
    for p, (values, keys) in buckets.items():
        for i in range(0, len(values), _CHUNK):
            chunk, chunk_keys = values[i:i + _CHUNK], keys[i:i + _CHUNK]
            try:
                delivery = pubs[p].publish_many(chunk, keys=chunk_keys)
                outstanding.append((delivery, len(chunk)))
            except omnibus.Error as e:
                counts["failed"] += len(chunk)  # refused (queue full past block_timeout, closed, ...)
                _note_error(errors, str(e), len(chunk))
            counts["sent"] += len(chunk)
            for v in chunk:
                last_seq[v["device"]] = v["seq"]


def _note_error(errors: dict[str, int], text: str, n: int = 1) -> None:
    """Count `n` readings failed with `text`; past 20 distinct texts, under one bucket."""
    if text not in errors and len(errors) >= 20:
        text = "(other errors)"
    errors[text] = errors.get(text, 0) + n


# ---------------------------------------------------------------- check and collect


class _Tally:
    """Seen seqs per device, and how many expected readings are still to come."""

    def __init__(self, expected: Mapping[str, int] | None) -> None:
        self.expected = dict(expected) if expected is not None else None
        self.seen: dict[str, set[int]] = {}
        self.total = 0
        self.duplicates = 0
        self.invalid = 0
        self.remaining = sum(max(0, v) for v in self.expected.values()) if self.expected else 0

    def add(self, value: Any) -> None:
        self.total += 1
        if not isinstance(value, dict):
            self.invalid += 1
            return
        device, seq = value.get("device"), value.get("seq")
        if not isinstance(device, str) or isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            self.invalid += 1
            return
        got = self.seen.setdefault(device, set())
        if seq in got:
            self.duplicates += 1
            return
        got.add(seq)
        if self.expected is not None and seq <= self.expected.get(device, 0):
            self.remaining -= 1

    def result(self) -> CheckResult:
        missing: dict[str, list[int]] = {}
        devices = set(self.seen) | set(self.expected or ())
        for device in devices:
            got = self.seen.get(device, set())
            if self.expected is not None and device in self.expected:
                upper = self.expected[device]
            else:
                upper = max(got) if got else 0
            inside = len(got) if not got or max(got) <= upper else sum(1 for s in got if s <= upper)
            if inside < upper:
                missing[device] = [s for s in range(1, upper + 1) if s not in got]
        unique = sum(len(s) for s in self.seen.values())
        return CheckResult(total=self.total, unique=unique, duplicates=self.duplicates, devices=len(devices),
                           missing=missing, invalid=self.invalid)


def _decode(codec: str, payload: bytes) -> Any:
    """Payload bytes -> a value, decoded by the engine as a subscriber with ``codec`` would;
    None (counted as invalid) when they do not decode."""
    try:
        return _core.decode(codec, payload)
    except omnibus.CodecError:
        return None


def check(
    readings: Iterable[Mapping[str, Any] | bytes | bytearray | memoryview | omnibus.Message],
    expected: Mapping[str, int] | None = None,
    codec: str = "json",
) -> CheckResult:
    """Count readings per (device, seq) and report the missing ones and the duplicates.

    A device's missing seqs are those in 1..expected[device] (1..the highest
    seq seen, for a device ``expected`` does not name or without
    ``expected``) that never came; a device ``expected`` names but that sent
    nothing misses them all. Without ``expected`` a loss at the end of a
    device's run cannot be seen, hence SimulationResult.expected(). Items are
    decoded readings (dicts), received Messages (their value), or payload
    bytes decoded with ``codec`` (json or msgpack).
    """
    _check_codec(codec)
    tally = _Tally(expected)
    for item in readings:
        if isinstance(item, omnibus.Message):
            item = item.value  # type: ignore[assignment]
        if isinstance(item, (bytes, bytearray, memoryview)):
            item = _decode(codec, bytes(item))  # type: ignore[assignment]
        tally.add(item)
    return tally.result()


def collect(
    url: str | omnibus.Subscriber,
    *,
    expected: Mapping[str, int] | None,
    timeout: float = 10.0,
    codec: str = "json",
    **options: omnibus.OptionValue,
) -> CheckResult:
    """Receive readings until every expected one came, or ``timeout`` seconds pass without a message.

    ``url`` is a subscriber URL (``kafka://host/readings?group=audit&offset_reset=earliest``
    replays what was published before), opened with ``codec`` and
    ``options`` and closed at the end; or an open Subscriber, which stays
    open: subscribe before simulate() where the protocol keeps nothing for
    late subscribers (MQTT, core NATS, mem://). The timeout is an idle
    timeout, so a long run is not cut short while readings still flow.
    Returns check() of what arrived.
    """
    _check_codec(codec)
    _check_positive("timeout", timeout, integer=False, allow_none=False, meaning="seconds without a message")
    tally = _Tally(expected)
    sub = omnibus.subscriber(url, codec=codec, **options) if isinstance(url, str) else url
    try:
        last_message = time.monotonic()
        while expected is None or tally.remaining > 0:
            left = last_message + timeout - time.monotonic()
            if left <= 0:
                break
            batch = sub.receive_batch(_CHUNK, timeout=min(left, 1.0))
            if not batch:
                continue
            last_message = time.monotonic()
            for m in batch:
                try:
                    value = m.value
                except omnibus.CodecError:
                    value = None
                if isinstance(value, (bytes, bytearray, memoryview)):
                    value = _decode(codec, bytes(value))  # a raw subscriber passed in: decode as check() would
                tally.add(value)
    finally:
        if isinstance(url, str):
            sub.close()
    return tally.result()
