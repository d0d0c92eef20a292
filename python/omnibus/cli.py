"""The omnibus command line: ``omnibus compare``, ``omnibus demo``, ``omnibus brokers up|status|down``,
``omnibus bridge``, ``omnibus simulate``, ``omnibus drivers``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time

import omnibus

from . import quickbench
from .testing.brokers.kinds import KINDS


def _demo(args: argparse.Namespace) -> int:
    print(f"omnibus {omnibus.__version__}: mem:// round trip, {args.size}-byte messages")
    with omnibus.subscriber("mem://demo", codec="json", auto_ack=False) as sub, \
            omnibus.publisher("mem://demo", codec="json") as pub:
        pub.publish({"sensor": "t1", "celsius": 21.5}, key="t1", headers={"unit": "C"}).result(timeout=10)
        msg = sub.receive(timeout=10)
        msg.ack()
        print(f"  round trip: value={msg.value} key={msg.key!r} headers={msg.headers} attempt={msg.delivery_attempt}")
    figures = [
        quickbench.publish_per_call(args.messages, args.size),
        quickbench.publish_many(args.messages, args.size),
        quickbench.end_to_end(args.messages, args.size),
        quickbench.peer_simple_queue(args.messages, args.size),
    ]
    width = max(len(f.name) for f in figures)
    for f in figures:
        print(f"  {f.name:<{width}}  {f.rate:>12,.0f} msg/s  ({f.messages:,} messages in {f.seconds:.3f} s)")
    ratio = figures[2].rate / figures[3].rate
    print(f"  end to end vs queue.SimpleQueue: {ratio:.2f}x")
    missing = omnibus.unavailable_drivers()
    if missing:
        print("  not in this build yet: " + ", ".join(f"{s}://" for s in sorted(missing)))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from . import bench

    # Before any work: the report needs the "compare" extra.
    missing = bench.missing_extra("compare")
    if missing:
        print(f"omnibus compare: {missing}", file=sys.stderr)
        return 2
    protocols = [p for p in (args.protocols or ",".join(bench.PROTOCOLS)).split(",") if p and p != "mem"]
    unknown = sorted(set(protocols) - set(bench.PROTOCOLS))
    if unknown:
        print(f"omnibus compare: unknown protocol(s) {unknown}; choose from mem (always included), "
              f"{', '.join(bench.PROTOCOLS)}", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print(f"omnibus compare: --repeat must be 1 or more, got {args.repeat}", file=sys.stderr)
        return 2
    try:
        sweep = None if args.no_sweep else (bench.Sweep.quick if args.quick else bench.Sweep)(
            slo_p99_ms=args.slo_p99_ms)
        names = args.scenarios if args.scenarios is not None else "" if args.quick or args.workload else "all"
        names_list = list(bench.SCENARIOS) if names == "all" else [n.strip() for n in names.split(",") if n.strip()]
        unknown_s = [n for n in names_list if n not in bench.SCENARIOS]
        if unknown_s:
            raise omnibus.InvalidArgument(f"unknown scenario(s) {unknown_s}; choose from "
                                          f"{', '.join(bench.SCENARIOS)} or all")
        workloads = [bench.SCENARIOS[n] for n in names_list]
        if args.quick:  # built-in scenarios a fifth of their size, as coarse as the quick sweep
            workloads = [dataclasses.replace(w, messages=max(1_000, w.messages // 5)) for w in workloads]
        workloads += [bench.Workload.from_file(f) for f in args.workload or []]
    except omnibus.InvalidArgument as e:
        print(f"omnibus compare: {e}", file=sys.stderr)
        return 2
    if sweep is None and not workloads:
        print("omnibus compare: --no-sweep leaves nothing to measure here; give --scenarios or --workload FILE",
              file=sys.stderr)
        return 2
    given = dict(u.split("=", 1) for u in args.url or [])
    for kind, url in given.items():
        os.environ[f"OMNIBUS_{kind.upper()}_URL"] = url
    started = time.monotonic()
    print(f"omnibus {omnibus.__version__} protocol comparison: starting brokers for "
          f"{', '.join(protocols) or 'none (mem:// only)'} ...", flush=True)
    with bench.local_brokers(protocols) as (urls, brokers):
        for kind, url in urls.items():
            how = f"started in {brokers[kind].started_in:.1f} s" if kind in brokers else "given"
            print(f"  {kind:<6} {url} ({how})")
        targets = bench.default_targets(urls, brokers)
        with _Progress() as progress:
            result = bench.compare(targets, workloads, sweep=sweep, repeat=args.repeat, progress=progress,
                                   meta=bench.machine_facts(brokers))
    print()
    print(result.table())
    print()
    for line in result.conclusions():
        print(re.sub(r"</?b>", "", line))
    report = result.save(args.out)
    print(f"\nresults: {report.parent / 'results.csv'}, report: {report}  "
          f"({time.monotonic() - started:.0f} s in all)")
    return 1 if any(r.get("error") for r in result.rows) else 0


class _Progress:
    """The comparison's progress: a tqdm bar (case, rate, ETA) on a terminal; one line per
    finished case otherwise, so logs stay readable."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.tty = sys.stderr.isatty()
        self.bar = tqdm(total=0, unit="case", file=sys.stderr, dynamic_ncols=True) if self.tty else None

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def __call__(self, done: int, total: int, label: str, row: dict | None) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.set_description(label, refresh=False)
            if row is not None:
                self.bar.set_postfix_str(_row_text(row), refresh=False)
            self.bar.update(done - self.bar.n)
            self.bar.refresh()
        elif row is not None and done > self._last_done:  # a case finished
            print(f"[{done}/{total}] {label}: {_row_text(row)}", flush=True)
        self._last_done = done

    _last_done = 0


def _row_text(row: dict) -> str:
    if row.get("phase") is not None and row.get("max_rate") is not None and str(row["phase"]).startswith("at"):
        return f"max {row['max_rate']:,.0f} msg/s; {row['phase']}: p99 {row.get('p99_ms', float('nan')):.2f} ms"
    if row.get("error"):
        return f"failed: {row['error']}"
    if row.get("phase") == "search":
        return f"{row['rate']:,.0f} msg/s offered: {row['verdict']}"
    return f"{row['delivered_rate']:,.0f} msg/s, p99 {row['p99_ms']:.2f} ms, lost {row['lost']}"


def _bridge(args: argparse.Namespace) -> int:
    from ._bridge import load_transform

    transform = load_transform(args.transform) if args.transform else None
    headers: bool | dict[str, str] = not args.no_headers
    if args.header:
        headers = dict(h.split("=", 1) for h in args.header)
    b = omnibus.bridge(args.source, args.sink, transform=transform, key=args.key, headers=headers,
                       codec=args.codec, sink_codec=args.sink_codec, dead_letter=args.dead_letter,
                       batch=args.batch)
    print(f"bridge {args.source} -> {args.sink} ({b.delivery_guarantee}); Ctrl-C stops after draining",
          flush=True)
    started = time.monotonic()
    last = [0, started]

    def report(stats: omnibus.BridgeStats) -> None:
        now = time.monotonic()
        rate = (stats.published - last[0]) / max(now - last[1], 1e-9)
        last[:] = [stats.published, now]
        print(f"  {now - started:6.0f} s  {rate:>10,.0f} msg/s  {stats.line()}", flush=True)

    try:
        b.run(args.duration, report=report)
    except KeyboardInterrupt:
        print("stopping: draining messages in flight ...", flush=True)
    drained = b.stop(args.drain_timeout)
    stats = b.stats
    print(f"stopped: {stats.line()}" + ("" if drained else "  (not drained: the rest stays unacked at the source)"))
    if b.last_error:
        print(f"last error: {b.last_error}")
    return 1 if stats.failed or b.failed else 0


def _drivers(args: argparse.Namespace) -> int:
    for d in omnibus.drivers():
        print(f"{d['scheme']}://  {d['description']}")
        for role in ("publisher_options", "subscriber_options"):
            print(f"  {role.replace('_', ' ')}:")
            for o in d[role]:
                choices = f" {'|'.join(o['choices'])}" if o["choices"] else ""
                print(f"    {o['name']} ({o['type']}{choices}, default {o['default'] or repr('')}): {o['doc']}")
    for scheme, why in sorted(omnibus.unavailable_drivers().items()):
        print(f"{scheme}://  unavailable: {why}")
    return 0


def _brokers(args: argparse.Namespace) -> int:
    from .testing.brokers import control

    if args.action == "up":
        results = control.up(args.kinds or None)
    elif args.action == "status":
        results = control.status()
    else:
        results = control.down(args.kinds or None)
    if not results:
        print("no brokers" + (" running" if args.action != "up" else ""))
    for r in results:
        took = f" (ready in {r.seconds:.1f} s)" if r.seconds is not None else ""
        # The URL may carry a (test server's) secret key: shown masked, in full in omnibus.env.
        url = omnibus.redact_url(r.url) if r.url else "-"
        print(f"{r.kind:<6} {r.state:<8} {url}{took}{'  ' + r.detail if r.detail else ''}")
    if args.action == "up" and any(r.url for r in results):
        print(f"\nURLs for a shell: source {control.state_dir() / 'omnibus.env'}")
    return 1 if any(r.state == "failed" for r in results) else 0


def _simulate(args: argparse.Namespace) -> int:
    from . import iot

    rate = "as fast as possible" if args.rate is None else f"{args.rate:g}/s each"
    if args.readings is not None:
        amount = f"{args.readings:,} readings"
    elif args.duration:
        amount = f"{args.duration:g} s"
    else:
        amount = "until Ctrl-C"
    print(f"omnibus {omnibus.__version__} simulate: {args.devices:,} devices, {rate}, {amount}, "
          f"{args.codec} -> {args.url}", flush=True)

    def progress(s: iot.SimulationResult) -> None:
        print(f"  {s.seconds:6.1f} s  sent {s.sent:>12,}  failed {s.failed:>8,}  "
              f"in flight {s.in_flight:>8,}  {s.rate:>10,.0f} msg/s", flush=True)

    try:
        result = iot.simulate(args.url, devices=args.devices, rate=args.rate, duration=args.duration or None,
                              readings=args.readings, codec=args.codec, seed=args.seed,
                              connections=args.connections, progress=progress)
    except omnibus.InvalidArgument as e:
        print(f"omnibus simulate: {e}", file=sys.stderr)
        return 2
    print(result.summary())
    if result.interrupted:
        return 130
    return 1 if result.failed else 0


def _rate(text: str) -> float | None:
    """--rate: readings per second per device, or "max" for as fast as possible."""
    if text == "max":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'max', got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    from . import bench  # no pandas or matplotlib: those are checked when compare runs

    parser = argparse.ArgumentParser(prog="omnibus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    compare = sub.add_parser("compare", help="measure MQTT, Kafka, RabbitMQ and NATS side by side")
    compare.add_argument("--quick", action="store_true",
                         help="a short, coarse rate sweep (under two minutes for every protocol); built-in "
                              "scenarios only when --scenarios names them, at a fifth of their size")
    compare.add_argument("--slo-p99-ms", type=float, default=50.0,
                         help="the p99 latency bound of a sustainable rate, in ms (default 50)")
    compare.add_argument("--repeat", type=int, default=1,
                         help="measure every case N times, interleaved; report medians and spreads")
    compare.add_argument("--no-sweep", action="store_true", help="skip the rate sweep (only the workloads)")
    compare.add_argument("--out", default="omnibus-compare", help="folder for results.csv/json, plots, report.html")
    compare.add_argument("--protocols",
                         help="comma-separated subset of mqtt,kafka,amqp,nats,redis,pulsar (default: all; mem: mem:// only)")
    compare.add_argument("--url", action="append", metavar="KIND=URL",
                         help="use this broker instead of starting one, e.g. kafka=kafka://127.0.0.1:9092")
    compare.add_argument("--workload", action="append", metavar="FILE",
                         help="a workload file (JSON or YAML) with omnibus.bench.Workload fields; repeatable "
                              "(examples/scenarios/ has one per built-in scenario)")
    compare.add_argument("--scenarios", metavar="NAMES",
                         help="comma-separated built-in scenarios after the sweep, or all (default: all; "
                              "none with --quick or --workload): " + ", ".join(bench.SCENARIOS))
    compare.set_defaults(fn=_compare)
    demo = sub.add_parser("demo", help="a mem:// round trip and its throughput")
    demo.add_argument("--messages", type=int, default=1_000_000, help="messages per measurement")
    demo.add_argument("--size", type=int, default=100, help="payload bytes")
    demo.set_defaults(fn=_demo)
    brokers = sub.add_parser("brokers", help="start, check or stop local brokers in the background")
    brokers.add_argument("action", choices=["up", "status", "down"])
    brokers.add_argument("kinds", nargs="*", choices=[*KINDS, []], metavar="KIND",
                         help=", ".join(f"{k} ({kind.serves})" for k, kind in KINDS.items()) + " (default: all)")
    brokers.set_defaults(fn=_brokers)
    bridge = sub.add_parser("bridge", help="move messages from SOURCE to SINK, acking each after the sink confirmed")
    bridge.add_argument("source", help="subscriber URL, e.g. mqtt://127.0.0.1:1883/sensors/#?qos=1&clean_session=false")
    bridge.add_argument("sink", help="publisher URL, e.g. kafka://127.0.0.1:9092/readings?acks=all")
    bridge.add_argument("--key", help="sink key template, e.g. '{topic[1]}' (default: the source key)")
    bridge.add_argument("--codec", default="raw", help="source codec: raw, text, json, msgpack (default raw)")
    bridge.add_argument("--sink-codec", help="re-encode for the sink (default: as the source)")
    bridge.add_argument("--dead-letter", help="publisher URL for messages that cannot be delivered")
    bridge.add_argument("--transform", help="module:function or file.py:function called once per batch")
    bridge.add_argument("--header", action="append", metavar="NAME=VALUE", help="add a header to every message")
    bridge.add_argument("--no-headers", action="store_true", help="do not carry the source headers")
    bridge.add_argument("--batch", type=int, default=1000, help="messages per batch (default 1000)")
    bridge.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    bridge.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to drain on stop (default 30)")
    bridge.set_defaults(fn=_bridge)
    drivers = sub.add_parser("drivers", help="list drivers and their options")
    drivers.set_defaults(fn=_drivers)
    simulate = sub.add_parser("simulate", help="publish sensor readings from simulated devices (omnibus.iot)")
    simulate.add_argument("url", metavar="URL", help="e.g. mqtt://127.0.0.1:1883/sensors?qos=1&version=5")
    simulate.add_argument("--devices", type=int, default=100, help="number of devices (default: 100)")
    simulate.add_argument("--rate", type=_rate, default=1.0,
                          help="readings per second per device, or 'max' (default: 1)")
    simulate.add_argument("--duration", type=float, default=10.0,
                          help="seconds to run; 0: until Ctrl-C (default: 10)")
    simulate.add_argument("--readings", type=int,
                          help="exactly this many readings in all (instead of --duration)")
    simulate.add_argument("--codec", choices=["json", "msgpack"], default="json",
                          help="payload codec (default: json)")
    simulate.add_argument("--seed", type=int, default=0, help="seed of the sensor values (default: 0)")
    simulate.add_argument("--connections", type=int, default=64,
                          help="most publishers for per-device MQTT/NATS topics; more devices share them "
                               "(default: 64)")
    simulate.set_defaults(fn=_simulate)
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
