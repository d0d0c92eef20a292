"""Protocol comparison: the same workload through the same omnibus API on each protocol.

    from omnibus.bench import SCENARIOS, Sweep, compare, default_targets, local_brokers

    with local_brokers() as (urls, brokers):           # or your own {"kafka": "kafka://...", ...}
        result = compare(default_targets(urls, brokers), [SCENARIOS["fan-out"]], sweep=Sweep(), repeat=3)
    result.sweep_summary()                             # per target: max sustainable rate, latency below it
    result.summary()                                   # per scenario, target and size: medians over rounds
    result.frame()                                     # a pandas DataFrame, one row per run or sweep step
    result.save("out/")                                # CSV, JSON (workloads, versions, machine), report.html

The rate sweep (``sweep()``, ``Sweep``) offers each target rising rates, open loop, and keeps the
highest at which every message arrived, the subscribers kept pace and p99 stayed under the bound;
then it measures latency at fractions of that rate.

What one row measures, for one target (a URL and its variant options) and one payload size:

- ``publish_rate``: messages per second from the first publish call until flush() returned (every
  delivery result in); ``delivered_rate``: distinct messages received per second, from the first
  publish call to the last receive. ``*_mbps``: the same in MB/s of payload.
- ``p50_ms`` ... ``max_ms``: end-to-end latency from each message's *intended* send time to the
  moment a subscriber's receive_batch() handed it over, in a log-linear histogram kept in C++
  (within 0.8 %). With ``rate`` set (open loop) the intended send times follow the schedule, so a
  publisher that falls behind shows as latency (no coordinated omission); without it messages are
  sent as fast as the target takes them and latency includes the queueing that causes.
- ``client_cpu_us``: CPU time of this process (every thread: Python, omnibus, the native client)
  per delivered message; ``broker_cpu_us``: CPU time of the broker's processes per message, where
  omnibus started the broker (else empty).
- ``wire_out_bytes`` / ``wire_in_bytes``: TCP payload bytes per message from this process to the
  broker and back, read from the kernel's counters of this process's sockets to the broker's port
  (``ss -ti``: bytes_acked, bytes_received) before and after the run: exact protocol overhead,
  including acks, heartbeats and consumer polling in that window, without a relay in the path.
- ``lost`` and ``duplicated``: counted from sequence numbers in every payload, never assumed.
  ``failed``: publishes whose delivery result was an error.
- ``broker_count`` / ``broker_check``: how many messages the broker itself says it accepted
  (Kafka end offsets, NATS monitoring in_msgs or the JetStream stream's count, Mosquitto's
  ``$SYS/broker/publish/messages/received``, RabbitMQ's global received counter from its
  Prometheus plugin, Pulsar's topic msgInCounter, Redis' XLEN), and whether that matches what the
  client counted (server-wide counters: at least as many); ``not checked`` where the broker has no
  such counter here (mem://, a RabbitMQ not started with ``metrics=True``).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import itertools
import json
import math
import os
import platform
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import omnibus

from . import _core

PERCENTILES = (50.0, 90.0, 99.0, 99.9, 99.99)
HEADER_BYTES = 16  # sequence number + intended send time at the start of every payload

__all__ = [
    "ComparisonResult",
    "Target",
    "SCENARIOS",
    "Sweep",
    "Workload",
    "compare",
    "default_targets",
    "local_brokers",
    "run_target",
    "sweep",
]


@dataclasses.dataclass
class Workload:
    """What to send. Plain data: ``Workload.from_file("w.yaml")`` or ``Workload(**dict)``.

    ``messages`` per target and payload size; ``rate`` in messages per second over all
    publishers (open loop), or None for as fast as the target takes them; ``publishers`` and
    ``subscribers`` (more than one subscriber share the messages as one group); ``key_space``
    distinct keys (0: no keys); ``headers`` on every message; ``batch`` messages per
    publish_many() call; ``idle_timeout`` seconds without a new message after the last publish
    before the run ends (what has not arrived by then counts as lost); ``options`` extra URL
    options per target name, e.g. ``{"kafka acks=1": {"linger_ms": 1}}``; ``consumer_work_us``
    the time each subscriber spends per message (paced, not busy: a slow consumer that handles
    at most 1e6 / consumer_work_us messages per second, whatever the machine); ``fanout``
    independent subscriptions that each get every message (each with ``subscribers`` members);
    ``backlog``: publish everything first, then start consuming (a catch-up read: the rates are
    then the drain's, from the first receive).
    """

    payload_sizes: list[int] = dataclasses.field(default_factory=lambda: [100])
    messages: int = 20_000
    rate: float | None = None
    publishers: int = 1
    subscribers: int = 1
    key_space: int = 0
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    batch: int = 500
    idle_timeout: float = 5.0
    options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    consumer_work_us: float = 0.0
    fanout: int = 1
    backlog: bool = False
    name: str = "throughput"

    def __post_init__(self) -> None:
        problems = []
        if not self.payload_sizes or any(not isinstance(s, int) or s < HEADER_BYTES for s in self.payload_sizes):
            problems.append(f"payload_sizes must be integers >= {HEADER_BYTES} (the benchmark header), "
                            f"got {self.payload_sizes!r}")
        for name in ("messages", "publishers", "subscribers", "batch", "fanout"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        if self.rate is not None and (not isinstance(self.rate, (int, float)) or self.rate <= 0):
            problems.append(f"rate must be a positive number of messages per second or None, got {self.rate!r}")
        if not isinstance(self.consumer_work_us, (int, float)) or self.consumer_work_us < 0:
            problems.append(f"consumer_work_us must be a number >= 0, got {self.consumer_work_us!r}")
        if not isinstance(self.key_space, int) or self.key_space < 0:
            problems.append(f"key_space must be an integer >= 0, got {self.key_space!r}")
        if problems:
            raise omnibus.InvalidArgument("bad workload: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Workload:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise omnibus.InvalidArgument(f"unknown workload field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**dict(data))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Workload:
        """A workload from a JSON or YAML file (YAML needs PyYAML)."""
        text = Path(path).read_text()
        if str(path).endswith((".yaml", ".yml")):
            try:
                import yaml  # type: ignore[import-untyped]
            except ImportError as e:
                raise omnibus.InvalidArgument(f"{path}: reading YAML needs PyYAML (pip install pyyaml); "
                                              "or write the workload as JSON") from e
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        if not isinstance(data, dict):
            raise omnibus.InvalidArgument(f"{path}: a workload is a mapping of fields, got {type(data).__name__}")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The scenarios people compare brokers by, as data (examples/scenarios/*.json are these files).
SCENARIOS: dict[str, Workload] = {w.name: w for w in [
    Workload(name="payload sizes", payload_sizes=[100, 1_000, 10_000, 65_536], messages=10_000),
    Workload(name="fan-out", fanout=4, messages=5_000),
    Workload(name="competing consumers", subscribers=4, messages=10_000),
    Workload(name="many producers", publishers=4, messages=10_000),
    Workload(name="keys", key_space=100, messages=10_000),
    Workload(name="backlog drain", backlog=True, messages=10_000),
]}


@dataclasses.dataclass(frozen=True)
class Target:
    """A protocol variant to measure: a broker URL (no topic) plus its options.

    ``base`` is ``mem://`` or a broker URL such as ``kafka://127.0.0.1:9092``; each run gets a
    fresh topic under it. In option values, ``{topic}`` is replaced by that topic (JetStream's
    ``stream={topic}``) and ``{group}`` by a group name per subscription (members of one
    subscription share it; fan-out's subscriptions each have their own). ``broker`` is the local broker object when omnibus started it (for its
    CPU time and counters), else None.
    """

    name: str
    base: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    broker: Any = None

    @property
    def protocol(self) -> str:
        return self.base.split("://", 1)[0]

    def url(self, topic: str, extra: Mapping[str, Any] | None = None, group: str = "") -> str:
        opts = {**self.options, **(extra or {})}
        query = "&".join(f"{k}={_text(v).replace('{topic}', topic).replace('{group}', group or topic)}"
                         for k, v in opts.items())
        base = self.base.rstrip("/")
        head = f"mem://{topic}" if self.protocol == "mem" else f"{base}/{topic}"
        return head + (f"?{query}" if query else "")


def _text(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


# The variants compared by default, per protocol: the usual choices a user weighs.
_VARIANTS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "mqtt": [("mqtt qos0", {"qos": 0}), ("mqtt qos1", {"qos": 1})],
    "kafka": [("kafka acks=1", {"acks": "1", "linger_ms": 5}), ("kafka acks=all", {"acks": "all", "linger_ms": 5})],
    # RabbitMQ confirms a persistent message routed to a durable queue once it is on disk: "amqp
    # durable" is the setting under which nothing confirmed is lost (the others' queues are private,
    # not durable): every subscription a durable group queue of its own, gone with its last consumer.
    "amqp": [("amqp", {"confirm": False}), ("amqp confirms", {"confirm": True}),
             ("amqp durable", {"confirm": True, "group": "{group}", "auto_delete": True})],
    "nats": [("nats core", {}), ("nats jetstream", {"stream": "{topic}"})],
    "redis": [("redis streams", {})],  # a driver written in Python (omnibus.redis_streams)
    # libpulsar's batching (1 ms) against one entry per message, each confirmed on its own.
    "pulsar": [("pulsar batching", {"batching": True}), ("pulsar no batching", {"batching": False})],
}
PROTOCOLS = ("mqtt", "kafka", "amqp", "nats", "redis", "pulsar")
# capabilities() that the report states per target, beside the figures.
FEATURES = ("delivery_guarantee", "ordered_per_key", "durable", "nack", "competing_consumers", "headers",
            "request_reply", "dead_letter", "max_message_bytes")


def default_targets(urls: Mapping[str, str], brokers: Mapping[str, Any] | None = None,
                    *, include_mem: bool = True) -> list[Target]:
    """The default variants for each protocol in ``urls`` ({"kafka": "kafka://..."}), plus mem://.

    A protocol whose driver is not in this build is left out (``omnibus.unavailable_drivers()``
    says why).
    """
    missing = omnibus.unavailable_drivers()
    targets = [Target("mem", "mem://")] if include_mem else []
    for proto in PROTOCOLS:
        if proto in urls and proto not in missing:
            for name, options in _VARIANTS[proto]:
                targets.append(Target(name, urls[proto], options, (brokers or {}).get(proto)))
    return targets


# What the comparison asks of the brokers it starts beyond the defaults: RabbitMQ's exact counters
# for the broker-side count (see _BrokerCounter).
_BROKER_OPTIONS: dict[str, dict[str, Any]] = {"amqp": {"metrics": True}}


@contextlib.contextmanager
def local_brokers(protocols: Sequence[str] = PROTOCOLS, *, note: Callable[[str], None] = print,
                  ) -> Iterator[tuple[dict[str, str], dict[str, Any]]]:
    """Brokers for ``protocols``: from OMNIBUS_<KIND>_URL when set, else started on loopback.

    Yields ``(urls, brokers)``; a broker whose program is not installed is skipped with a
    one-line note saying how to get it. Every broker started here is stopped on exit.
    """
    from .testing.brokers import BROKERS

    urls: dict[str, str] = {}
    started: dict[str, Any] = {}
    try:
        pending = []
        for proto in protocols:
            env = os.environ.get(f"OMNIBUS_{proto.upper()}_URL")
            if env:
                urls[proto] = env
                continue
            if proto in omnibus.unavailable_drivers():
                note(f"skipping {proto}: {omnibus.unavailable_drivers()[proto]}")
                continue
            cls = BROKERS[proto]
            why = cls.missing()
            if why:
                note(f"skipping {proto}: {why}")
                continue
            pending.append((proto, cls(**_BROKER_OPTIONS.get(proto, {}))))
        # Spawn every broker, then wait for each: RabbitMQ and Kafka boot side by side. Spawned
        # from this thread, which outlives them (a broker is signalled when its spawning thread ends).
        errors: dict[str, BaseException] = {}
        for proto, broker in pending:
            try:
                broker.spawn()
            except Exception as e:  # reported below, the others go on
                errors[proto] = e
        for proto, broker in pending:
            if proto not in errors:
                try:
                    broker.wait_ready()
                except Exception as e:
                    errors[proto] = e
        for proto, broker in pending:
            if proto in errors:
                note(f"skipping {proto}: its broker did not start: {errors[proto]}")
                with contextlib.suppress(Exception):
                    broker.close()
            else:
                started[proto] = broker
                urls[proto] = broker.url
        yield urls, started
    finally:
        for broker in started.values():
            with contextlib.suppress(Exception):
                broker.close()


# ---------------------------------------------------------------- counters


def _tcp_bytes(port: int) -> tuple[int, int] | None:
    """(bytes acked by the broker, bytes received from it) over this process's sockets to ``port``."""
    if shutil.which("ss") is None:
        return None
    out = subprocess.run(["ss", "-tinpH", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, timeout=10).stdout
    sent = received = 0
    pid = f"pid={os.getpid()},"
    # Each socket is a line with its addresses and process, then an indented line of TCP info.
    for record in re.split(r"\n(?=\S)", out):
        if pid not in record:
            continue
        m = re.search(r"bytes_acked:(\d+)", record)
        sent += int(m.group(1)) if m else 0
        m = re.search(r"bytes_received:(\d+)", record)
        received += int(m.group(1)) if m else 0
    return sent, received


def _broker_port(target: Target) -> int | None:
    if target.protocol == "mem":
        return None
    hostport = target.base.split("://", 1)[1].split("@")[-1].split("/", 1)[0].split(",")[0]
    try:
        return int(hostport.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def _process_tree_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of ``pid`` and its descendants, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    if pid not in stats:
        return None
    total, frontier = 0.0, [pid]
    while frontier:
        p = frontier.pop()
        total += stats[p][1]
        frontier.extend(c for c, (ppid, _) in stats.items() if ppid == p)
    return total


class _BrokerCounter:
    """The broker's own count of messages accepted on a topic, where it has one."""

    def __init__(self, target: Target, topic: str) -> None:
        self.target, self.topic = target, topic
        self.before = self._read(fresh=False)

    def _read(self, *, fresh: bool = True) -> int | None:
        proto, broker = self.target.protocol, self.target.broker
        try:
            if proto == "kafka":
                return _kafka_end_offsets(self.target.base, self.topic)
            if proto == "redis":
                return _redis_stream_length(self.target.base, self.topic)
            if proto == "nats" and broker is not None and "monitor" in getattr(broker, "ports", {}):
                mon = f"http://127.0.0.1:{broker.ports['monitor']}"
                if "stream" in self.target.options:
                    with urllib.request.urlopen(f"{mon}/jsz?streams=true", timeout=5) as r:  # noqa: S310
                        data = json.loads(r.read())
                    for acc in data.get("account_details", []):
                        for s in acc.get("stream_detail", []):
                            if s.get("name") == self.topic:
                                return int(s["state"]["messages"])
                    return 0
                with urllib.request.urlopen(f"{mon}/varz", timeout=5) as r:  # noqa: S310
                    return int(json.loads(r.read())["in_msgs"])
            if proto == "mqtt":
                return _mosquitto_received(self.target.base, fresh=fresh)
            if proto == "amqp" and getattr(broker, "metrics", False):
                return int(broker.messages_received())
            if proto == "pulsar" and broker is not None and hasattr(broker, "web_url"):
                return _pulsar_messages_in(broker.web_url, self.topic)
        except Exception:
            return None
        return None

    def delta(self) -> int | None:
        after = self._read()
        if after is None or self.before is None:
            return None
        return after - self.before


def _redis_stream_length(base: str, stream: str) -> int | None:
    """XLEN of the stream: every entry the benchmark XADDed (it sets no MAXLEN)."""
    import redis

    host, port = base.split("://", 1)[1].rstrip("/").rsplit("@", 1)[-1].rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port))
    try:
        return int(client.xlen(stream))
    finally:
        client.close()


def _mosquitto_received(base: str, *, fresh: bool) -> int | None:
    """Mosquitto's own count of PUBLISH packets received from every client since it started
    ($SYS/broker/publish/messages/received, retained, updated every sys_interval seconds; the
    harness sets 1). ``fresh``: wait for the next update, so that the count includes what was
    published before this call. None when the broker publishes no such topic (not Mosquitto)."""
    values: list[int] = []
    with omnibus.subscriber(f"{base.rstrip('/')}/$SYS/broker/publish/messages/received", qos=0) as sub:
        # The retained value comes at once; the next update within sys_interval (when it changed).
        until = time.monotonic() + (1.5 if fresh else 1.0)
        while time.monotonic() < until and len(values) < (2 if fresh else 1):
            for msg in sub.receive_batch(10, timeout=0.1):
                values.append(int(bytes(msg.payload).decode()))
    return values[-1] if values else None


def _pulsar_messages_in(web_url: str, topic: str) -> int | None:
    """The topic's msgInCounter from Pulsar's admin API: messages (not batches) it persisted since
    it was created. The benchmark's topics are bare names, in persistent://public/default."""
    url = f"{web_url}/admin/v2/persistent/public/default/{urllib.parse.quote(topic)}/stats"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 (the harness' broker)
            return int(json.loads(r.read())["msgInCounter"])
    except urllib.error.HTTPError as e:
        if e.code == 404:  # no such topic yet: nothing published
            return 0
        raise


def _kafka_end_offsets(base: str, topic: str) -> int | None:
    try:
        from confluent_kafka import Consumer, TopicPartition
    except ImportError:
        return None
    bootstrap = base.split("://", 1)[1].split("/", 1)[0]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"omnibus-bench-{uuid.uuid4().hex[:6]}"})
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions)
    finally:
        c.close()


# ---------------------------------------------------------------- one run

_runs = itertools.count()


def _warm_up(pub: omnibus.Publisher, groups: list[list[omnibus.Subscriber]], timeout: float = 30.0) -> int:
    """Publish markers until every subscription (a list of members sharing a group, or one
    subscriber) got one: connections, subscriptions and topics are ready before the clock starts.
    A group may legitimately leave members idle (Kafka: one partition), so it is ready when any
    member received; it then gets a second of markers to settle its rebalance. Returns how many
    markers were published."""
    marker = _core.make_payloads(2**63, 1, HEADER_BYTES, 0, 0)[0]  # a sequence number no run uses
    waiting = set(range(len(groups)))
    deadline = time.monotonic() + timeout
    slice_s = 0.5 if sum(map(len, groups)) == 1 else 0.05
    sent = 0
    while waiting:
        if time.monotonic() > deadline:
            raise omnibus.Timeout(f"warm-up: {len(waiting)} subscription(s) received nothing within {timeout} s")
        pub.publish(marker).result(timeout=timeout)
        sent += 1
        for i, members in enumerate(groups):
            for sub in members:
                if sub.receive_batch(1000, timeout=slice_s):
                    waiting.discard(i)
    if any(len(members) > 1 for members in groups):
        settle = time.monotonic() + 1.0
        while time.monotonic() < settle:
            pub.publish(marker).result(timeout=timeout)
            sent += 1
            for members in groups:
                for sub in members:
                    sub.receive_batch(1000, timeout=0.02)
    for members in groups:  # late markers
        for sub in members:
            sub.receive_batch(1000, timeout=0.2)
    return sent


def run_target(target: Target, size: int, workload: Workload, *, drain_seconds: float | None = None,
               check_broker: bool = True) -> dict[str, Any]:
    """Measure one target at one payload size; one result row (see the module doc).

    ``drain_seconds``: wait at most this long after the last publish for the rest to arrive
    (what has not arrived by then counts as lost); None: until ``workload.idle_timeout`` passes
    with nothing new. ``check_broker``: read the broker's own count (see the module doc; takes up
    to a few seconds on some brokers).
    """
    n = workload.messages
    topic = f"cmp-{os.getpid()}-{next(_runs)}-{uuid.uuid4().hex[:6]}"
    extra = workload.options.get(target.name, {})
    url = target.url(topic, extra)
    row: dict[str, Any] = {"workload": workload.name, "target": target.name, "protocol": target.protocol,
                           "payload_bytes": size, "messages": n, "rate": workload.rate, "topic": topic}
    # One recorder per subscription (fan-out: each gets every message); the members of one
    # subscription share a group (competing consumers).
    recorders = [_core.DeliveryRecorder(n) for _ in range(workload.fanout)]
    # (time, distinct messages so far) after each record() of each subscription, for _pace().
    progress: list[list[tuple[int, int]]] = [[] for _ in recorders]
    with contextlib.ExitStack() as stack:
        subs: list[tuple[omnibus.Subscriber, Any]] = []
        for i, rec in enumerate(recorders):
            group = f"g{i}-{topic}"
            sub_url = target.url(topic, extra, group)
            # The members of one subscription share a group; a target that names its groups itself
            # ({group} in its options: a durable queue per subscription) has it in the URL already.
            named = sub_url != target.url(topic, extra, "")
            opts: dict[str, Any] = {"group": group} if workload.subscribers > 1 and not named else {}
            subs += [(stack.enter_context(omnibus.subscriber(sub_url, **opts)), i) for _ in range(workload.subscribers)]
        pubs = [stack.enter_context(omnibus.publisher(url, max_pending=max(4 * workload.batch, 10_000)))
                for _ in range(workload.publishers)]
        caps = pubs[0].capabilities()
        sub_caps = subs[0][0].capabilities()
        # The pair is as strong as its weaker side (amqp with confirm=false: the publisher is at-most-once).
        sides = {caps.get("delivery_guarantee"), sub_caps.get("delivery_guarantee")}
        row["guarantee"] = "at-most-once" if "at-most-once" in sides else sub_caps.get("delivery_guarantee")
        row["features"] = {name: sub_caps.get(name) if name in sub_caps else caps.get(name) for name in FEATURES}
        k = workload.subscribers
        _warm_up(pubs[0], [[sub for sub, _ in subs[i:i + k]] for i in range(0, len(subs), k)])
        counter = _BrokerCounter(target, topic) if check_broker else None
        port = _broker_port(target)
        wire0 = _tcp_bytes(port) if port else None
        broker_pid = getattr(target.broker, "pid", None)
        broker_cpu0 = _process_tree_cpu(broker_pid) if broker_pid else None
        cpu0 = time.process_time()

        stop = threading.Event()
        done_publishing = threading.Event()
        failures: list[int] = []
        receive_errors: list[BaseException] = []

        service_ns = int(workload.consumer_work_us * 1000)

        def receive(sub: omnibus.Subscriber, index: int) -> None:
            recorder, seen = recorders[index], progress[index]
            free_ns = 0  # when this (paced) consumer is done with the messages it holds
            try:
                while not stop.is_set():
                    batch = sub.receive_batch(1000, timeout=0.05)
                    if not batch:
                        continue
                    if not service_ns:
                        recorder.record(batch)
                        seen.append((time.monotonic_ns(), recorder.unique))
                        continue
                    # A queue with a fixed service time: each message is handed over service_ns after
                    # the later of its arrival and the previous message's hand-over. The schedule, not
                    # the sleeps, sets the rate, so the capacity is exactly 1e9 / service_ns per second.
                    free_ns = max(free_ns, time.monotonic_ns())
                    i = 0
                    while i < len(batch) and not stop.is_set():
                        now = time.monotonic_ns()
                        done = min(len(batch) - i, (now - free_ns) // service_ns)
                        if done <= 0:
                            time.sleep((free_ns + service_ns - now) / 1e9)
                            continue
                        recorder.record(batch[i:i + done])
                        seen.append((time.monotonic_ns(), recorder.unique))
                        free_ns += done * service_ns
                        i += done
            except BaseException as e:  # noqa: BLE001 - reported in the row
                receive_errors.append(e)

        keys_cycle = [f"k{i}".encode() for i in range(workload.key_space)] if workload.key_space else None
        headers = [(k, v.encode()) for k, v in workload.headers.items()] or None
        per_pub = [(i * n // workload.publishers, (i + 1) * n // workload.publishers) for i in range(workload.publishers)]
        start_ns = time.monotonic_ns() + 1_000_000  # a common schedule for every publisher
        interval_ns = int(1e9 / workload.rate) if workload.rate else 0

        def publish(pub: omnibus.Publisher, first: int, end: int) -> None:
            deliveries = []
            seq = first
            while seq < end:
                now = time.monotonic_ns()
                if interval_ns:
                    due = min(end, (now - start_ns) // interval_ns + 1)
                    if due <= seq:  # ahead of the schedule: wait for the next message's time
                        time.sleep(max(0.0, (start_ns + seq * interval_ns - now) / 1e9))
                        continue
                    count = min(due - seq, workload.batch)
                    payloads = _core.make_payloads(seq, count, size, start_ns, interval_ns)
                else:
                    count = min(end - seq, workload.batch)
                    payloads = _core.make_payloads(seq, count, size, now, 0)  # stamped: sent now
                keys = [keys_cycle[(seq + i) % len(keys_cycle)] for i in range(count)] if keys_cycle else None
                deliveries.append((seq, pub.publish_many(payloads, keys=keys,
                                                         headers=[headers] * count if headers else None)))
                seq += count
            pub.flush()
            for first_seq, d in deliveries:
                failures.extend(first_seq + i for i, _ in d.failures())

        receivers = [threading.Thread(target=receive, args=sr, name="bench-receive") for sr in subs]
        publishers = [threading.Thread(target=publish, args=(p, a, b), name="bench-publish")
                      for p, (a, b) in zip(pubs, per_pub)]
        for t in ([] if workload.backlog else receivers) + publishers:
            t.start()
        t0 = time.monotonic_ns()
        for t in publishers:
            t.join()
        published_ns = time.monotonic_ns()
        done_publishing.set()
        receive_ns = min(t0, start_ns)
        if workload.backlog:  # everything is published (and confirmed): now the catch-up read
            receive_ns = time.monotonic_ns()
            for t in receivers:
                t.start()
        expected = n * workload.fanout
        # Wait until everything arrived, or nothing new came for idle_timeout seconds.
        last, last_change = -1, time.monotonic()
        drain_until = time.monotonic() + drain_seconds if drain_seconds is not None else float("inf")
        while sum(r.unique for r in recorders) < expected and not receive_errors and time.monotonic() < drain_until:
            got = sum(r.received for r in recorders)
            if got != last:
                last, last_change = got, time.monotonic()
            elif time.monotonic() - last_change > workload.idle_timeout:
                break
            time.sleep(0.01)
        stop.set()
        for t in receivers:
            t.join()
        cpu = time.process_time() - cpu0
        wire1 = _tcp_bytes(port) if port else None
        broker_cpu1 = _process_tree_cpu(broker_pid) if broker_pid else None
        broker_count = counter.delta() if counter else None
    hist = recorders[0].histogram()
    for rec in recorders[1:]:
        hist.merge(rec.histogram())
    unique = sum(r.unique for r in recorders)
    last_ns = max(r.last_ns for r in recorders)
    pct = hist.percentiles(list(PERCENTILES))
    publish_s = max(published_ns - min(t0, start_ns), 1) / 1e9
    deliver_s = max(last_ns - receive_ns, 1) / 1e9 if unique else float("nan")
    ok_published = n - len(failures)
    paces = [p for p in (_pace(progress[i], n) for i in range(len(recorders))) if p is not None]
    row.update({
        "publish_rate": n / publish_s,
        "delivered_rate": unique / deliver_s if unique else 0.0,
        "keep_up_rate": min(paces) if len(paces) == len(recorders) else None,
        "publish_mbps": n * size / publish_s / 1e6,
        "delivered_mbps": unique * size / deliver_s / 1e6 if unique else 0.0,
        **{f"p{p:g}_ms".replace(".", "_"): v / 1e6 for p, v in zip(PERCENTILES, pct)},
        "max_ms": hist.max / 1e6,
        "mean_ms": hist.mean / 1e6,
        "client_cpu_us": cpu / max(unique, 1) * 1e6,
        "broker_cpu_us": (broker_cpu1 - broker_cpu0) / max(unique, 1) * 1e6
        if broker_cpu0 is not None and broker_cpu1 is not None else None,
        "wire_out_bytes": (wire1[0] - wire0[0]) / n if wire0 and wire1 else None,
        "wire_in_bytes": (wire1[1] - wire0[1]) / n if wire0 and wire1 else None,
        "received": sum(r.received for r in recorders),
        "lost": expected - unique,
        "duplicated": sum(r.duplicates for r in recorders),
        "failed": len(failures),
        "broker_count": broker_count,
        "broker_check": _check(broker_count, ok_published, target) if counter else None,
        "error": "; ".join(repr(e) for e in receive_errors) or None,
    })
    return row


def _pace(seen: list[tuple[int, int]], n: int) -> float | None:
    """Messages per second that one subscription kept between receiving 10 % and 90 % of ``n``.

    What a saturated target cannot hide (it delivers at its own rate, not the offered one), while
    a stall of a shared machine in between is caught up right after and changes nothing; the
    start-up and the last messages' latency, which delivered_rate includes, stay out. None when
    fewer than 90 % arrived."""
    seen = sorted(seen)
    lo = next(((t, u) for t, u in seen if u >= 0.1 * n), None)
    hi = next(((t, u) for t, u in seen if u >= 0.9 * n), None)
    if lo is None or hi is None or hi[0] <= lo[0] or hi[1] <= lo[1]:
        return None
    return (hi[1] - lo[1]) / ((hi[0] - lo[0]) / 1e9)


def _check(broker_count: int | None, published: int, target: Target) -> str:
    if broker_count is None:
        return "not checked"
    if broker_count == published:
        return "ok"
    if broker_count > published and (target.protocol in ("mqtt", "amqp") or
                                     (target.protocol == "nats" and "stream" not in target.options)):
        # Mosquitto's $SYS, RabbitMQ's global counter and NATS' in_msgs count every message from
        # every client of the server (the warm-up markers, other clients).
        return f"ok (server-wide count {broker_count} >= {published})"
    return f"mismatch: broker counted {broker_count}, client {published}"


# ---------------------------------------------------------------- rate sweep


@dataclasses.dataclass
class Sweep:
    """How ``sweep()`` looks for a target's highest sustainable rate.

    A step offers ``rate`` messages per second for ``step_seconds`` (open loop). It is sustained
    when every message arrived, the subscribers kept pace within ``tolerance`` (0.05: 5 %) and
    p99 stayed at or under ``slo_p99_ms``. Rates grow by ``factor`` from ``start_rate`` until a
    step fails (or shrink until one holds; the first failure before any success is measured
    twice, as a target may still be warming up), then bisect (geometric mean) until the highest
    sustained and the lowest failed rate are within ``precision`` (0.1: 10 %) or
    ``budget_seconds`` of steps were spent. Then latency is measured at ``fractions`` of the
    rate found. ``retries``: a failed step is measured again up to this many times (a stall of a
    shared machine then cannot fail a rate alone); a step that delivered under half its offered
    rate is the target's limit and is not retried. ``Sweep.quick()`` is the small one that
    ``omnibus compare --quick`` uses.
    """

    slo_p99_ms: float = 50.0
    tolerance: float = 0.05
    step_seconds: float = 2.0
    start_rate: float = 2_000.0
    factor: float = 2.0
    precision: float = 0.1
    min_rate: float = 50.0
    max_rate: float = 1_000_000.0
    budget_seconds: float = 40.0
    fractions: tuple[float, ...] = (0.1, 0.5, 0.9)
    fraction_seconds: float = 2.0
    retries: int = 0

    def __post_init__(self) -> None:
        problems = [f"{name} must be > 0, got {getattr(self, name)!r}" for name in
                    ("slo_p99_ms", "step_seconds", "start_rate", "precision", "min_rate", "max_rate",
                     "budget_seconds", "fraction_seconds")
                    if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) <= 0]
        if not 0 <= self.tolerance < 1:
            problems.append(f"tolerance must be a fraction in [0, 1), got {self.tolerance!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            problems.append(f"retries must be an integer >= 0, got {self.retries!r}")
        if not self.factor > 1:
            problems.append(f"factor must be > 1, got {self.factor!r}")
        if any(not 0 < f <= 1 for f in self.fractions):
            problems.append(f"fractions must be in (0, 1], got {self.fractions!r}")
        if problems:
            raise omnibus.InvalidArgument("bad sweep: " + "; ".join(problems))

    @classmethod
    def quick(cls, **overrides: Any) -> Sweep:
        """Short steps, coarse bisection: about 8 s per target."""
        # One retry: a half-second step is short enough for one stall of a shared machine to fail
        # it (Kafka acks=1 once "sustained" a 20th of acks=all's rate without it).
        settings = {"step_seconds": 0.5, "start_rate": 4_000.0, "factor": 4.0, "precision": 0.5,
                    "budget_seconds": 5.0, "fraction_seconds": 0.4, "retries": 1, **overrides}
        return cls(**settings)

    def judge(self, row: Mapping[str, Any]) -> str:
        """'ok' when the step held its offered rate, else why not."""
        if row.get("error"):
            return f"error: {row['error']}"
        if row["lost"]:
            return f"{row['lost']} of {row['messages']} not delivered in time"
        offered, kept = row["rate"], row.get("keep_up_rate")
        if kept is None or kept < offered * (1 - self.tolerance):
            return f"fell behind ({_num(kept)} of {offered:,.0f} msg/s)"
        if row["p99_ms"] > self.slo_p99_ms:
            return f"p99 {row['p99_ms']:.1f} ms over {self.slo_p99_ms:g} ms"
        return "ok"


def _saturated(row: Mapping[str, Any]) -> bool:
    """A step that delivered under half its offered rate: the target's limit, not a stall of the
    machine (a stall within a step is caught up at once, see _pace), so not worth a retry."""
    kept = row.get("keep_up_rate")
    return kept is not None and not row.get("lost") and kept < 0.5 * row["rate"]


def _num(v: Any) -> str:
    return "-" if _missing(v) else f"{v:,.0f}"


def sweep(target: Target, size: int, workload: Workload, settings: Sweep | None = None, *,
          on_step: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """The highest rate ``target`` sustains at ``size``-byte payloads, then latency below it.

    Returns one row per step (``phase`` "search", ``verdict`` "ok" or why not) and per fraction
    (``phase`` "at 50%", ...); every row carries ``max_rate``, the highest sustained offered rate
    (0.0 when even ``min_rate`` failed). ``workload`` gives everything but the rate and the count.
    ``on_step(row)`` is called after each step.
    """
    s = settings or Sweep()
    deadline = time.monotonic() + s.budget_seconds
    rows: list[dict[str, Any]] = []
    # A cut-off drain: a step whose backlog takes longer than this to arrive did not keep up.
    drain = max(1.0, 4 * s.slo_p99_ms / 1000)

    def step(rate: float, seconds: float, phase: str) -> dict[str, Any]:
        wl = dataclasses.replace(workload, rate=rate, messages=max(100, int(rate * seconds)),
                                 name="sweep", payload_sizes=[size])
        try:
            # The broker's count is read where the report shows it (at 50%), not on every step.
            row = run_target(target, size, wl, drain_seconds=drain, check_broker=phase == "at 50%")
        except (omnibus.Error, OSError) as e:
            row = {"workload": "sweep", "target": target.name, "protocol": target.protocol,
                   "payload_bytes": size, "messages": wl.messages, "rate": rate, "error": f"{type(e).__name__}: {e}"}
        row.update(phase=phase, verdict=s.judge(row))
        rows.append(row)
        if on_step:
            on_step(row)
        return row

    good: float | None = None  # highest rate sustained
    bad: float | None = None   # lowest rate not sustained
    rate = min(max(s.start_rate, s.min_rate), s.max_rate)
    retried = False
    while time.monotonic() < deadline:
        verdict = step(rate, s.step_seconds, "search")["verdict"]
        for _ in range(s.retries):
            if verdict == "ok" or rows[-1].get("error") or _saturated(rows[-1]) or time.monotonic() >= deadline:
                break
            verdict = step(rate, s.step_seconds, "search")["verdict"]
        if verdict != "ok" and good is None and not retried and not rows[-1].get("error"):
            # Before any rate held, a failure may be the target warming up (a JVM compiling, a
            # topic's first leader election): the first failure is measured once more.
            retried = True
            verdict = step(rate, s.step_seconds, "search")["verdict"]
        if verdict == "ok":
            good = rate
        else:
            bad = rate
            if rows[-1].get("error") and good is None:
                break  # the target does not work at all: nothing to search
        if good is not None and bad is not None:
            if bad / good <= 1 + s.precision:
                break
            rate = math.sqrt(good * bad)
        elif bad is None:
            if rate >= s.max_rate:
                break
            rate = min(rate * s.factor, s.max_rate)
        else:
            if rate <= s.min_rate:
                break
            rate = max(rate / s.factor, s.min_rate)
    max_rate = good or 0.0
    if max_rate:
        for fraction in s.fractions:
            step(max_rate * fraction, s.fraction_seconds, f"at {fraction:.0%}")
    for row in rows:
        row["max_rate"] = max_rate
        row["slo_p99_ms"] = s.slo_p99_ms
    return rows


_sweep = sweep  # compare() takes a parameter of that name


# ---------------------------------------------------------------- many runs

# The words for each column, in tables and plots.
LABELS = {
    "target": "target", "guarantee": "guarantee", "workload": "workload", "payload_bytes": "payload bytes",
    "max_rate": "max sustainable msg/s", "max_rate_spread": "spread (min-max)", "vs_fastest": "vs fastest",
    "delivered_rate": "delivered msg/s", "delivered_rate_spread": "spread (min-max)",
    "delivered_mbps": "MB/s", "p50_ms": "p50 ms", "p99_ms": "p99 ms", "p50_at_50": "p50 ms at 50%",
    "p99_at_50": "p99 ms at 50%", "p99_at_90": "p99 ms at 90%", "wire_out_bytes": "bytes out/msg",
    "wire_in_bytes": "bytes in/msg", "client_cpu_us": "client CPU µs/msg", "broker_cpu_us": "broker CPU µs/msg",
    "lost": "lost", "duplicated": "duplicated", "failed": "failed", "broker_check": "broker count",
    "broker_count": "broker counted", "keep_up_rate": "kept pace msg/s", "publish_rate": "published msg/s",
    "publish_mbps": "published MB/s", "p90_ms": "p90 ms", "p99_9_ms": "p99.9 ms", "p99_99_ms": "p99.99 ms",
    "max_ms": "max ms", "mean_ms": "mean ms", "round": "round",
    "rounds": "rounds",
}
_FORMATS = {"max_rate": "{:,.0f}", "delivered_rate": "{:,.0f}", "delivered_mbps": "{:.1f}", "vs_fastest": "{:.2f}x",
            "p50_ms": "{:.2f}", "p99_ms": "{:.2f}", "p50_at_50": "{:.2f}", "p99_at_50": "{:.2f}",
            "p99_at_90": "{:.2f}", "wire_out_bytes": "{:.0f}", "wire_in_bytes": "{:.0f}", "client_cpu_us": "{:.1f}",
            "broker_cpu_us": "{:.1f}", "lost": "{:.0f}", "duplicated": "{:.0f}", "failed": "{:.0f}",
            "payload_bytes": "{:.0f}", "rounds": "{:.0f}"}


def _spread(values: Sequence[float]) -> str:
    vals = [v for v in values if not _missing(v)]
    if len(vals) < 2:
        return "-"
    return f"{min(vals):,.0f}-{max(vals):,.0f}"


def _median(values: Sequence[Any]) -> float | None:
    vals = sorted(float(v) for v in values if not _missing(v))
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


@dataclasses.dataclass
class ComparisonResult:
    """Rows of measurements plus what they were measured on.

    Sweep rows have ``workload`` "sweep" (see ``sweep()``); every row has its ``round`` (1..N with
    ``compare(repeat=N)``).
    """

    rows: list[dict[str, Any]]
    workloads: list[Workload]
    meta: dict[str, Any]

    def frame(self) -> Any:
        """Every row as a pandas DataFrame (needs pandas); ``features`` is left out (see features())."""
        return _pandas().DataFrame([{k: v for k, v in r.items() if k != "features"} for r in self.rows])

    def _targets(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        return list(dict.fromkeys(r["target"] for r in rows))

    def sweep_summary(self) -> Any:
        """One row per target from the rate sweep: the max sustainable rate (median over rounds,
        spread, ratio to the fastest target of the same round), latency at 50% and 90% of it, bytes
        and CPU per message at 50%."""
        pd = _pandas()
        rows = [r for r in self.rows if r.get("workload") == "sweep"]
        out = []
        for target in self._targets(rows):
            mine = [r for r in rows if r["target"] == target]
            rounds = sorted({r.get("round", 1) for r in mine})
            per_round = {k: next(r["max_rate"] for r in mine if r.get("round", 1) == k) for k in rounds}
            ratios = []
            for k in rounds:
                # Against the fastest broker of the round: mem:// is the in-process ceiling, not a peer.
                ref = [r for r in rows if r.get("round", 1) == k and r.get("protocol") != "mem"] or \
                    [r for r in rows if r.get("round", 1) == k]
                best = max((r["max_rate"] for r in ref), default=0.0)
                if best:
                    ratios.append(per_round[k] / best)

            def at(phase: str, col: str) -> float | None:
                return _median([r.get(col) for r in mine if r.get("phase") == phase and not r.get("error")])

            out.append({
                "target": target,
                "guarantee": next((r["guarantee"] for r in mine if r.get("guarantee")), None),
                "max_rate": _median(list(per_round.values())),
                "max_rate_spread": _spread(list(per_round.values())),
                "vs_fastest": _median(ratios),
                "p50_at_50": at("at 50%", "p50_ms"), "p99_at_50": at("at 50%", "p99_ms"),
                "p99_at_90": at("at 90%", "p99_ms"),
                "wire_out_bytes": at("at 50%", "wire_out_bytes"), "wire_in_bytes": at("at 50%", "wire_in_bytes"),
                "client_cpu_us": at("at 50%", "client_cpu_us"), "broker_cpu_us": at("at 50%", "broker_cpu_us"),
                "broker_check": _checks(r.get("broker_check") for r in mine if r.get("phase") != "search"),
                "rounds": len(rounds),
            })
        return pd.DataFrame(out)

    def summary(self) -> Any:
        """One row per workload, target and payload size of the fixed workloads (not the sweep):
        medians over rounds and the spread of the delivered rate."""
        pd = _pandas()
        rows = [r for r in self.rows if r.get("workload") != "sweep"]
        groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault((r["workload"], r["target"], r["payload_bytes"]), []).append(r)
        out = []
        for (wl, target, size), g in groups.items():
            ok = [r for r in g if not r.get("error")]
            out.append({
                "workload": wl, "target": target, "payload_bytes": size,
                "guarantee": next((r["guarantee"] for r in g if r.get("guarantee")), None),
                "delivered_rate": _median([r.get("delivered_rate") for r in ok]),
                "delivered_rate_spread": _spread([r.get("delivered_rate") for r in ok]),
                **{c: _median([r.get(c) for r in ok]) for c in
                   ("delivered_mbps", "p50_ms", "p99_ms", "wire_out_bytes", "wire_in_bytes", "client_cpu_us",
                    "broker_cpu_us")},
                **{c: sum(r.get(c) or 0 for r in ok) for c in ("lost", "duplicated", "failed")},
                "broker_check": _checks(r.get("broker_check") for r in g) if ok else "; ".join(
                    str(r.get("error")) for r in g),
                "rounds": len({r.get("round", 1) for r in g}),
            })
        return pd.DataFrame(out)

    def features(self) -> Any:
        """What each target offers, from its subscriber's and publisher's capabilities()."""
        seen: dict[str, dict[str, Any]] = {}
        for r in self.rows:
            if r.get("features") and r["target"] not in seen:
                seen[r["target"]] = {"target": r["target"], "guarantee (pair)": r.get("guarantee"), **r["features"]}
        df = _pandas().DataFrame(list(seen.values()))
        if "max_message_bytes" in df:
            df["max_message_bytes"] = [f"{v:,}" if v else "no limit known" for v in df["max_message_bytes"]]
        return df.drop(columns=["delivery_guarantee"], errors="ignore")

    def conclusions(self) -> list[str]:
        """Plain sentences: the fastest target per guarantee, the price of durability per protocol,
        and any loss."""
        lines: list[str] = []
        sw = self.sweep_summary()
        if len(sw):
            slo = next((r["slo_p99_ms"] for r in self.rows if "slo_p99_ms" in r), None)
            proto = {r["target"]: r.get("protocol") for r in self.rows}
            mem = sw[[proto.get(t) == "mem" for t in sw["target"]]]
            brokers = sw[[proto.get(t) != "mem" for t in sw["target"]]]
            for guarantee, g in (brokers if len(brokers) else sw).groupby("guarantee", sort=False):
                g = g[g["max_rate"] > 0].sort_values("max_rate", ascending=False)
                if g.empty:
                    continue
                best = g.iloc[0]
                text = (f"{guarantee}: fastest is <b>{_html(best['target'])}</b>, sustaining "
                        f"{best['max_rate']:,.0f} msg/s with p99 under {slo:g} ms")
                if not _missing(best["p99_at_50"]):
                    text += f" (p99 {best['p99_at_50']:.2f} ms at half that rate)"
                if len(g) > 1:
                    second = g.iloc[1]
                    text += (f"; {best['max_rate'] / second['max_rate']:.2f}x the next, "
                             f"{_html(second['target'])}" if second["max_rate"] else "")
                lines.append(text + ".")
            if len(brokers) and len(mem) and mem["max_rate"].max() > 0:
                lines.append(f"mem://, the in-process broker (the engine's own ceiling, no network), sustained "
                             f"{mem['max_rate'].max():,.0f} msg/s.")
            for p in dict.fromkeys(proto.values()):
                g = sw[[proto.get(t) == p for t in sw["target"]]]
                if len(g) < 2 or not g["max_rate"].max():
                    continue
                top = g.sort_values("max_rate", ascending=False).iloc[0]
                others = [f"{_html(r['target'])} ({r['guarantee']}) sustains {r['max_rate'] / top['max_rate']:.2f}x"
                          for _, r in g.iterrows() if r["target"] != top["target"]]
                lines.append(f"Guarantee against speed on {p}: {_html(top['target'])} ({top['guarantee']}) "
                             f"is the fastest setting; " + ", ".join(others) + " of its rate.")
            zero = sw[sw["max_rate"] <= 0]
            for _, r in zero.iterrows():
                tried = [x["rate"] for x in self.rows if x.get("workload") == "sweep" and x["target"] == r["target"]]
                lines.append(f"{_html(r['target'])} sustained none of the rates tried (the lowest: "
                             f"{min(tried, default=0):,.0f} msg/s) within the sweep's time; see every run below.")
        lost = [r for r in self.rows if r.get("workload") != "sweep" and (r.get("lost") or r.get("error"))]
        for r in lost:
            what = r.get("error") or f"lost {r['lost']} of {r['messages']}"
            lines.append(f"{_html(r['target'])} in {_html(r['workload'])}: {_html(str(what))}.")
        if not lost and self.summary().shape[0]:
            lines.append("Every fixed-count run delivered every message.")
        return lines

    def table(self) -> str:
        """The summaries as fixed-width text, for a terminal."""
        parts = []
        sw = self.sweep_summary()
        if len(sw):
            parts.append("Max sustainable rate (p99 under the SLO), latency below it:\n" + _text_table(sw))
        s = self.summary()
        if len(s):
            parts.append("Fixed workloads:\n" + _text_table(s))
        return "\n\n".join(parts) or "(no results)"

    def plot(self, out: str | os.PathLike[str]) -> list[Path]:
        """PNG plots into ``out``: from the sweep, offered rate vs p99 latency and latency
        percentiles on log axes, bytes and CPU per message; for fixed workloads, delivered rate
        (vs payload size where there are several)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths: list[Path] = []
        rows = [r for r in self.rows if not r.get("error")]
        sweep_rows = [r for r in rows if r.get("workload") == "sweep"]
        if sweep_rows:
            slo = sweep_rows[0].get("slo_p99_ms")
            fig, ax = plt.subplots(figsize=(8, 4.5))
            for target in self._targets(sweep_rows):
                pts = sorted((r["rate"], r["p99_ms"]) for r in sweep_rows if r["target"] == target)
                if pts:
                    ax.plot([p[0] for p in pts], [max(p[1], 1e-3) for p in pts], marker="o", label=target)
            if slo:
                ax.axhline(slo, color="grey", linestyle="--", linewidth=1, label=f"p99 bound {slo:g} ms")
            ax.set(xscale="log", yscale="log", xlabel="offered rate (messages per second)",
                   ylabel="p99 end-to-end latency (ms)", title="Latency as the offered rate grows (rate sweep)")
            _legend(ax)
            paths.append(_save(fig, out / "sweep_rate_vs_p99.png"))

            fig, ax = plt.subplots(figsize=(8, 4.5))
            cols = [f"p{p:g}_ms".replace(".", "_") for p in PERCENTILES]
            xs = [1 / (1 - p / 100) for p in PERCENTILES]
            for target in self._targets(sweep_rows):
                r = next((r for r in sweep_rows if r["target"] == target and r.get("phase") == "at 50%"), None)
                if r is not None:
                    ax.plot(xs, [max(r[c], 1e-3) for c in cols], marker="o", label=target)
            ax.set(xscale="log", yscale="log", xlabel="percentile", ylabel="end-to-end latency (ms)",
                   title="Latency percentiles at half the max sustainable rate")
            ax.set_xticks(xs)
            ax.set_xticklabels([f"{p:g}%" for p in PERCENTILES])
            ax.minorticks_off()
            _legend(ax)
            paths.append(_save(fig, out / "sweep_latency_percentiles.png"))

            sw = self.sweep_summary().set_index("target")
            fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
            sw[["wire_out_bytes", "wire_in_bytes"]].astype(float).rename(columns=LABELS).plot.bar(ax=axes[0])
            axes[0].set(ylabel="TCP payload bytes per message", xlabel="",
                        title="Bytes on the wire per message (at 50% of max rate)")
            sw[["client_cpu_us", "broker_cpu_us"]].astype(float).rename(columns=LABELS).plot.bar(ax=axes[1])
            axes[1].set(ylabel="CPU microseconds per message", xlabel="", title="CPU per message (at 50% of max rate)")
            paths.append(_save(fig, out / "sweep_overhead.png"))
        fixed = [r for r in rows if r.get("workload") != "sweep"]
        for wl in dict.fromkeys(r["workload"] for r in fixed):
            part = [r for r in fixed if r["workload"] == wl]
            sizes = sorted({r["payload_bytes"] for r in part})
            fig, ax = plt.subplots(figsize=(8, 4.5))
            if len(sizes) > 1:
                for target in self._targets(part):
                    pts = [(s, _median([r["delivered_rate"] for r in part if r["target"] == target
                                        and r["payload_bytes"] == s])) for s in sizes]
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=target)
                ax.set(xscale="log", yscale="log", xlabel="payload size (bytes)", ylabel="messages delivered per second",
                       title=f"Delivered rate by payload size ({wl})")
                _legend(ax)
            else:
                targets = self._targets(part)
                ax.bar(targets, [_median([r["delivered_rate"] for r in part if r["target"] == t]) or 0
                                 for t in targets])
                ax.set(ylabel="messages delivered per second",
                       title=f"Delivered rate, {sizes[0]}-byte payloads ({wl})")
                ax.tick_params(axis="x", labelrotation=45)
            paths.append(_save(fig, out / f"delivered_{_slug(wl)}.png"))
        return paths

    def save(self, out: str | os.PathLike[str]) -> Path:
        """results.csv, results.json (rows, workloads, machine and versions), the plots (PNG) and
        report.html, which holds everything itself (plots inline) and reads top down: summary
        first, then plots, features, the machine and every run."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.frame().to_csv(out / "results.csv", index=False)
        (out / "results.json").write_text(json.dumps(
            {"meta": self.meta, "workloads": [w.to_dict() for w in self.workloads], "rows": self.rows},
            indent=2, default=str))
        plots = self.plot(out)
        html = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                "<meta name='viewport' content='width=device-width, initial-scale=1'>"
                "<title>omnibus protocol comparison</title>",
                "<style>body{font-family:sans-serif;margin:2em;max-width:75em}"
                "table{border-collapse:collapse;font-size:13px;margin:.5em 0}"
                "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f3f3f3}"
                "td:first-child{text-align:left}img{max-width:100%}</style></head><body>",
                "<h1>omnibus protocol comparison</h1>",
                f"<p>omnibus {omnibus.__version__}, {_html(str(self.meta.get('time', '')))}. "
                "The same workload through the same omnibus API on each protocol, against brokers on this "
                "machine.</p>",
                "<h2>Summary</h2><ul>" + "".join(f"<li>{c}</li>" for c in self.conclusions()) + "</ul>"]
        sw = self.sweep_summary()
        if len(sw):
            slo = next((r["slo_p99_ms"] for r in self.rows if "slo_p99_ms" in r), 50)
            html += [_html_table(sw),
                     f"<p>Max sustainable rate: the highest offered rate (open loop) at which every message "
                     f"arrived, the subscribers kept pace and p99 latency stayed under {slo:g} ms. Latency from "
                     "each message's scheduled send time; bytes: TCP payload per message each way; CPU: this "
                     "process and the broker's, per message; broker count: the broker's own counter. With "
                     "several rounds: the median, the spread over rounds, and the ratio to the fastest target "
                     "of the same round.</p>"]
        s = self.summary()
        if len(s):
            html += ["<h2>Fixed workloads</h2>", _html_table(s)]
        for p in plots:
            title = _html(_plot_titles.get(p.stem, _title(p.stem)))
            html.append(f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,"
                        f"{base64.b64encode(p.read_bytes()).decode()}'>")
        feats = self.features()
        if len(feats):
            html += ["<h2>What each target offers</h2>",
                     "<p>From the drivers' capabilities() as each target was opened: measured settings, not "
                     "documentation.</p>", _html_table(feats)]
        html += ["<h2>Machine</h2>", _html_table(_pandas().DataFrame(
            [{"": k, "value": v} for k, v in _machine_rows(self.meta)]))]
        html += ["<h2>Every run</h2>", _html_table(self.frame()), "</body></html>"]
        (out / "report.html").write_text("\n".join(html))
        return out / "report.html"


_plot_titles = {
    "sweep_rate_vs_p99": "Throughput and latency: p99 as the offered rate grows",
    "sweep_latency_percentiles": "Latency percentiles at half the max sustainable rate",
    "sweep_overhead": "Bytes on the wire and CPU per message",
}


def _title(stem: str) -> str:
    if stem.startswith("delivered_"):
        return f"Delivered rate: {stem[len('delivered_'):].replace('-', ' ')}"
    return stem.replace("_", " ")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "workload"


def _checks(values: Any) -> str:
    vals = [str(v) for v in values if v is not None]
    bad = sorted({v for v in vals if not v.startswith("ok")})
    if not vals:
        return "-"
    return "; ".join(bad) if bad else "ok"


def _cell(col: str, v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if _missing(v):
        return "-"
    if col in _FORMATS and isinstance(v, (int, float)):
        return _FORMATS[col].format(v)
    if isinstance(v, float):
        return f"{v:,.3f}"
    return str(v)


def _text_table(df: Any) -> str:
    cols = list(df.columns)
    cells = [[LABELS.get(c, c) for c in cols]]
    cells += [[_cell(c, r[c]) for c in cols] for _, r in df.iterrows()]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(row, widths)))
                     for row in cells)


def _html_table(df: Any) -> str:
    cols = list(df.columns)
    head = "".join(f"<th>{_html(LABELS.get(c, c).replace('_', ' '))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_html(_cell(c, r[c]))}</td>" for c in cols) + "</tr>"
                   for _, r in df.iterrows())
    return f"<table><tr>{head}</tr>{body}</table>"


def _machine_rows(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [(k, str(meta[k])) for k in ("cpu", "cores", "memory", "kernel", "os", "python", "omnibus", "time")
            if meta.get(k)]
    if not rows and meta.get("machine"):
        rows.append(("machine", str(meta["machine"])))
    rows += [(f"{proto} broker", str(v)) for proto, v in (meta.get("brokers") or {}).items()]
    return rows


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _html(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#39;")


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:  # a target that sustained nothing draws no line
        ax.legend(fontsize=7, ncol=2)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# What `omnibus compare` imports, by extra, and the distribution that brings each.
EXTRAS: dict[str, dict[str, str]] = {"compare": {"pandas": "pandas", "matplotlib": "matplotlib", "tqdm": "tqdm"}}


def missing_extra(extra: str = "compare") -> str | None:
    """None when the modules of ``extra`` import, else a sentence naming the missing ones and the
    pip command that installs them."""
    import importlib

    missing = []
    for module, dist in EXTRAS[extra].items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(dist)
    if not missing:
        return None
    return (f"omnibus {extra} needs {', '.join(missing)}, which this Python does not have: "
            f'pip install "omnibus[{extra}]" (from a source checkout: pip install ".[{extra}]")')


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as e:
        raise omnibus.Unsupported(missing_extra("compare") or str(e)) from e
    return pandas


def machine_facts(brokers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """CPU model, cores, memory, kernel, OS, Python, omnibus and broker versions, for the results."""
    cpu = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:", 1)[1].split()[0])
        memory = f"{kb / 1024 / 1024:.1f} GiB"
    os_name = None
    with contextlib.suppress(OSError):
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME")  # type: ignore[attr-defined]
    facts: dict[str, Any] = {
        "cpu": cpu or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory": memory,
        "kernel": f"{platform.system()} {platform.release()}",
        "os": os_name,
        "python": platform.python_version(),
        "omnibus": omnibus.__version__,
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "brokers": {},
    }
    facts["machine"] = f"{facts['cores']} cores ({facts['cpu']}), {facts['kernel']}, Python {facts['python']}"
    for proto, broker in (brokers or {}).items():
        facts["brokers"][proto] = getattr(broker, "version", None) or _broker_version(proto, broker)
    return facts


def _broker_version(proto: str, broker: Any) -> str:
    """"mosquitto 2.0.11-1.2+deb12u2" and so on: the broker's package and its installed version."""
    from .testing.brokers.kinds import KINDS

    package = KINDS[proto].package if proto in KINDS else None  # None: not from Debian (Kafka, Pulsar: Maven)
    name = {"kafka": "Apache Kafka", "pulsar": "Apache Pulsar"}.get(proto) or package or type(broker).__name__
    version = None
    with contextlib.suppress(Exception):
        if proto == "kafka":
            from .testing.brokers.kafka import kafka_version

            version = kafka_version()
        elif proto == "pulsar":
            from .testing.brokers.pulsar import pulsar_version

            version = pulsar_version()
        elif package and shutil.which("dpkg-query"):
            out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                                 capture_output=True, text=True, timeout=10)
            version = out.stdout.strip() if out.returncode == 0 else None
    return f"{name} {version}" if version else name


# What compare() sends through each broker before measuring it, and throws away.
_WARM_UP = Workload(name="warm-up", payload_sizes=[100], messages=10_000, batch=500, idle_timeout=3)


def compare(targets: Sequence[Target], workloads: Workload | Sequence[Workload] = Workload(), *,
            sweep: Sweep | None = None, sweep_size: int = 100, repeat: int = 1,
            progress: Callable[[int, int, str, dict[str, Any] | None], None] | None = None,
            meta: Mapping[str, Any] | None = None) -> ComparisonResult:
    """Run the rate sweep (when ``sweep`` is given, at ``sweep_size``-byte payloads) and every
    workload on every target at every payload size; one row per run or sweep step.

    ``repeat`` rounds, interleaved: each round measures every target once (in an order rotated
    by one each round) before the next round starts, so a drift of the machine hits every target
    alike. Before the first case on each broker, an unmeasured run (``_WARM_UP``) lets it warm up:
    a JVM compiling or an Erlang VM growing its pools would otherwise fail the first target's steps
    (Kafka acks=1, measured first, came out at a fiftieth of acks=all's rate). A run that fails (a
    broker gone, a timeout) becomes a row with its ``error`` and the comparison goes on. ``progress(done, total, label, row)`` is called before each case
    (row None), after each sweep step and after each case, ``done`` counting finished cases.
    """
    if not isinstance(repeat, int) or repeat < 1:
        raise omnibus.InvalidArgument(f"repeat must be an integer >= 1, got {repeat!r}")
    wls = [workloads] if isinstance(workloads, Workload) else list(workloads)
    rows: list[dict[str, Any]] = []
    per_round = len(targets) * ((1 if sweep else 0) + sum(len(w.payload_sizes) for w in wls))
    total, done = per_round * repeat, 0
    warm: set[str] = set()
    for rnd in range(1, repeat + 1):
        shift = (rnd - 1) % max(len(targets), 1)
        order = list(targets[shift:]) + list(targets[:shift])
        plan: list[tuple[Target, Workload | None, int]] = [(t, None, sweep_size) for t in order] if sweep else []
        plan += [(t, w, s) for w in wls for t in order for s in w.payload_sizes]
        for t, w, s in plan:
            label = f"{t.name}: rate sweep" if w is None else f"{t.name}: {w.name}, {s} B"
            if repeat > 1:
                label = f"round {rnd}/{repeat}, {label}"
            if progress:
                progress(done, total, label, None)
            if t.protocol != "mem" and t.base not in warm:
                warm.add(t.base)
                with contextlib.suppress(omnibus.Error, OSError):  # the measured run reports it
                    run_target(t, sweep_size, _WARM_UP, check_broker=False)
            if w is None:
                assert sweep is not None
                got = _sweep(t, s, Workload(payload_sizes=[s]), sweep,
                              on_step=(lambda row, label=label: progress(done, total, label, row))
                              if progress else None)
            else:
                try:
                    got = [run_target(t, s, w)]
                except (omnibus.Error, OSError) as e:
                    got = [{"workload": w.name, "target": t.name, "protocol": t.protocol, "payload_bytes": s,
                            "messages": w.messages, "error": f"{type(e).__name__}: {e}"}]
            for row in got:
                row["round"] = rnd
            rows += got
            done += 1
            if progress:
                progress(done, total, label, got[-1])
    meta = dict(meta or machine_facts())
    if sweep:
        meta["sweep"] = dataclasses.asdict(sweep)
    meta["repeat"] = repeat
    return ComparisonResult(rows, wls, meta)
