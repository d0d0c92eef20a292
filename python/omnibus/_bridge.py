"""omnibus.bridge: move messages between protocols (MQTT into Kafka, say) without losing one.

The engine's threads receive from the source, map each message (key, headers,
timestamp, codec), call an optional Python transform once per batch, publish
to the sink and acknowledge the source message only after the sink confirmed
it. See :func:`bridge`.
"""

from __future__ import annotations

import importlib
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from . import _core
from .codecs import CodecLike, resolve_codec

__all__ = ["Bridge", "BridgeStats", "DeliveryGuaranteeWarning", "Out", "Transform", "bridge", "load_transform"]


class DeliveryGuaranteeWarning(UserWarning):
    """The source or the sink of a bridge cannot give at-least-once delivery.

    The bridge still acks a source message only after the sink confirmed it,
    but an at-most-once end (core NATS, MQTT whose client library acks on
    arrival, Kafka with acks=0) can lose messages that the bridge cannot see.
    """


@dataclass(frozen=True)
class Out:
    """A transform's result for one message when it changes more than the value.

    ``value`` is encoded with the sink codec; ``key`` and ``headers`` replace the
    mapped ones when given (None keeps them).
    """

    value: Any
    key: Optional[Union[str, bytes]] = None
    headers: Optional[Union[Mapping[str, Union[str, bytes]], Sequence[tuple[str, Union[str, bytes]]]]] = None


# A transform takes the batch's messages (msg.value decoded with the source
# codec) and returns one entry per message: None drops it (and acks it), the
# message itself forwards it as mapped, an Out or any other value replaces it.
Transform = Callable[[list[_core.Message]], Sequence[Any]]


@dataclass(frozen=True)
class BridgeStats:
    """Counters of a bridge. ``in_flight`` were received and are not settled yet."""

    consumed: int
    published: int
    dropped: int
    dead_lettered: int
    failed: int
    retried: int
    acked: int
    in_flight: int

    def line(self) -> str:
        """One line for a log or a progress display."""
        return (f"consumed {self.consumed:,}  published {self.published:,}  in flight {self.in_flight:,}  "
                f"dropped {self.dropped:,}  dead-lettered {self.dead_lettered:,}  failed {self.failed:,}  "
                f"retried {self.retried:,}")


class Bridge:
    """A running bridge; use :func:`bridge` to make one. Thread-safe.

    Use it as a context manager: leaving the block calls ``stop()``, which
    drains what is in flight. Without ``stop()`` the bridge runs until the
    object is garbage collected.
    """

    def __init__(self, core: _core.Bridge, source: str, sink: str) -> None:
        self._core = core
        self.source = source
        self.sink = sink

    @property
    def stats(self) -> BridgeStats:
        return BridgeStats(**self._core.stats)

    @property
    def delivery_guarantee(self) -> str:
        """"at-least-once" when both ends are, else "at-most-once"."""
        return str(self._core.delivery_guarantee)

    @property
    def source_guarantee(self) -> str:
        return str(self._core.source_guarantee)

    @property
    def sink_guarantee(self) -> str:
        return str(self._core.sink_guarantee)

    @property
    def last_error(self) -> str:
        """The last error met (sink failure, undecodable payload, transform), "" when none."""
        return str(self._core.last_error)

    @property
    def failed(self) -> bool:
        """True when the source failed for good and the bridge stopped receiving."""
        return bool(self._core.failed)

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Blocks until nothing is in flight; False when ``timeout`` seconds passed first."""
        return bool(self._core.wait_idle(timeout))

    def run(self, duration: Optional[float] = None, *, report: Optional[Callable[[BridgeStats], None]] = None,
            interval: float = 1.0) -> BridgeStats:
        """Blocks for ``duration`` seconds (None: until Ctrl-C or the source fails), calling
        ``report(stats)`` every ``interval`` seconds. Does not stop the bridge."""
        deadline = None if duration is None else time.monotonic() + duration
        while not self.failed:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - now)))
            if report is not None:
                report(self.stats)
        return self.stats

    def stop(self, timeout: float = 10.0) -> bool:
        """Stops receiving, waits up to ``timeout`` seconds for in-flight messages to be
        confirmed and acked, then closes both ends. True when all were settled; the
        rest stays unacked at the source (redelivered where the source can) and is
        counted in ``stats.failed``. Idempotent; Ctrl-C interrupts the wait."""
        return bool(self._core.stop(timeout))

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<omnibus.Bridge {self.source} -> {self.sink} ({self.delivery_guarantee}) {self.stats.line()}>"


def bridge(
    source: str,
    sink: str,
    *,
    transform: Optional[Transform] = None,
    key: Optional[str] = None,
    headers: Union[bool, Mapping[str, str]] = True,
    timestamps: bool = True,
    codec: CodecLike = "raw",
    sink_codec: Optional[CodecLike] = None,
    dead_letter: Optional[str] = None,
    batch: int = 1000,
    max_in_flight: int = 20000,
    source_options: Optional[Mapping[str, Any]] = None,
    sink_options: Optional[Mapping[str, Any]] = None,
) -> Bridge:
    """Start a bridge from ``source`` (a subscriber URL) to ``sink`` (a publisher URL).

    At-least-once end to end: each source message is acked only after the sink
    confirmed it (Kafka delivery report, AMQP confirm, JetStream ack, MQTT
    PUBACK). A sink that is away (broker restarting) is retried with backoff
    while the source messages stay unacked; nothing is dropped. When either end
    is at-most-once, a :class:`DeliveryGuaranteeWarning` says which.

    - ``key``: the sink key, a template of ``{topic}``, ``{topic[N]}`` (topic
      level N, negative from the end; levels split at "/" for mqtt:// and mem://,
      "." otherwise) and ``{key}``; None keeps the source key. ``key="{topic[1]}"``
      maps ``sensors/dev-7/temp`` to the Kafka key ``dev-7``.
    - ``headers``: True carries the source headers (MQTT 5 user properties,
      Kafka headers, AMQP table, NATS headers); False drops them; a mapping
      carries them and adds its entries. ``timestamps``: keep the source's.
    - ``codec``/``sink_codec``: the source payloads are decoded with ``codec``
      (a payload that does not decode goes to ``dead_letter``); when
      ``sink_codec`` differs they are re-encoded (json into msgpack, say).
      "raw" passes bytes through untouched.
    - ``transform``: called once per batch with the list of messages
      (``msg.value`` decoded), returning a list of the same length: None drops
      and acks that message, the message forwards it, an :class:`Out` or any
      other value replaces it (encoded with the sink codec). An exception sends
      the batch to ``dead_letter``.
    - ``dead_letter``: a publisher URL for what cannot be delivered (undecodable,
      refused by the sink, failed transform), with the error in the headers
      ``omnibus-error``, ``omnibus-error-code``, ``omnibus-source-topic``. Without
      it such messages count in ``stats.failed`` and stay unacked.
    - ``batch``: messages per receive (and per transform call); ``max_in_flight``
      bounds unconfirmed messages, so a slow sink slows the source down.
    """
    from . import option_pairs

    if not isinstance(batch, int) or batch < 1:
        raise _core.InvalidArgument(f"batch must be an int >= 1, got {batch!r}")
    if not isinstance(max_in_flight, int) or max_in_flight < batch:
        raise _core.InvalidArgument(f"max_in_flight must be an int >= batch ({batch}), got {max_in_flight!r}")
    if key is not None and not isinstance(key, str):
        raise _core.InvalidArgument(f"key must be a template string such as '{{topic[1]}}', got {type(key).__name__}")
    extra: list[tuple[str, str]] = []
    if isinstance(headers, Mapping):
        extra = [(str(k), str(v)) for k, v in headers.items()]
        keep_headers = True
    elif isinstance(headers, bool):
        keep_headers = headers
    else:
        raise _core.InvalidArgument(f"headers must be True, False or a mapping of extra headers, got "
                                    f"{type(headers).__name__}")
    src_codec = resolve_codec(codec)
    dst_codec = src_codec if sink_codec is None else resolve_codec(sink_codec)
    if transform is None and (not isinstance(src_codec, str) or not isinstance(dst_codec, str)):
        raise _core.InvalidArgument(
            "a codec written in Python runs in the transform only: pass transform=..., or use the built-in "
            "codecs raw, text, json, msgpack")
    core = _core.Bridge(
        source, sink, batch, max_in_flight, key or "", keep_headers, extra, timestamps,
        src_codec, dst_codec, dead_letter or "", transform, Out,
        option_pairs(dict(source_options or {})), option_pairs(dict(sink_options or {})),
    )
    b = Bridge(core, source, sink)
    if b.delivery_guarantee != "at-least-once":
        weak = [f"{name} {url} is {g}" for name, url, g in
                (("source", source, b.source_guarantee), ("sink", sink, b.sink_guarantee)) if g != "at-least-once"]
        warnings.warn(
            f"bridge {source} -> {sink} gives at-most-once delivery: {'; '.join(weak)}. The bridge acks the "
            "source only after the sink confirmed, but messages can be lost at the at-most-once end.",
            DeliveryGuaranteeWarning, stacklevel=2)
    return b


def load_transform(spec: str) -> Transform:
    """``"package.module:function"`` (or a file path ``path/to/file.py:function``) to the function."""
    if ":" not in spec:
        raise _core.InvalidArgument(f"transform {spec!r} must look like module:function or path/file.py:function")
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py"):
        import importlib.util

        loader_spec = importlib.util.spec_from_file_location("omnibus_transform", where)
        if loader_spec is None or loader_spec.loader is None:
            raise _core.InvalidArgument(f"transform file {where!r} cannot be loaded")
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise _core.InvalidArgument(f"{spec!r}: {name!r} is not a function in {where!r}")
    return fn  # type: ignore[no-any-return]
