"""omnibus: one messaging engine for MQTT, Kafka, RabbitMQ, NATS and in-process mem://.

A URL picks the protocol and carries its options::

    import omnibus

    with omnibus.subscriber("mem://orders", codec="json") as sub, \\
         omnibus.publisher("mem://orders", codec="json") as pub:
        pub.publish({"id": 1}, key="customer-7").result(timeout=5)
        msg = sub.receive(timeout=5)
        print(msg.value, msg.key, msg.headers)

Options come from the URL query (``mem://orders?prefetch=10``) or keyword
arguments (``prefetch=10``); ``omnibus.drivers()`` lists every option of every
driver with its type, default and meaning. Errors are ``omnibus.Error``
subclasses that also inherit the matching builtin (``InvalidArgument`` is a
``ValueError``, ``Timeout`` a ``TimeoutError``, ...). ``omnibus.aio`` has the
same API for asyncio. ``omnibus.register_driver(scheme, driver)`` adds a
protocol written in Python (``omnibus.driver``; redis:// is one). ``omnibus.bridge(source_url, sink_url)`` moves messages
between protocols, acking each source message once the sink confirmed it.
"""

from __future__ import annotations

from typing import Any, Union

from . import _core
from ._core import (
    Closed,
    CodecError,
    Delivery,
    Error,
    InternalError,
    InvalidArgument,
    Message,
    NotFound,
    Publisher,
    ResourceExhausted,
    Subscriber,
    Timeout,
    Unavailable,
    Undelivered,
    Unsupported,
)
from ._bridge import Bridge, BridgeStats, DeliveryGuaranteeWarning, Out, Transform, bridge
from .codecs import Codec, CodecLike, codec_names, register_codec, resolve_codec, unregister_codec
from .driver import Option, Received, register_driver, unregister_driver

def _version() -> str:
    """The installed distribution's version: pyproject.toml is its one source."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("omnibus")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "0+unknown"


__version__ = _version()

OptionValue = Union[bool, int, float, str]

__all__ = [
    "Bridge",
    "BridgeStats",
    "DeliveryGuaranteeWarning",
    "Out",
    "Transform",
    "bridge",
    "Closed",
    "Codec",
    "CodecError",
    "CodecLike",
    "Delivery",
    "Error",
    "InternalError",
    "InvalidArgument",
    "Message",
    "NotFound",
    "Option",
    "OptionValue",
    "Received",
    "Publisher",
    "ResourceExhausted",
    "Subscriber",
    "Timeout",
    "Unavailable",
    "Undelivered",
    "Unsupported",
    "codec_names",
    "drivers",
    "option_pairs",
    "publisher",
    "redact_url",
    "register_codec",
    "register_driver",
    "subscriber",
    "unavailable_drivers",
    "unregister_codec",
    "unregister_driver",
]


def option_pairs(options: dict[str, Any]) -> list[tuple[str, str]]:
    """Keyword options as the engine takes them: (name, text) pairs.

    Only bool, int, float and str are option values; the engine then checks
    each against the driver's declared type and names the valid options when a
    name is unknown.
    """
    pairs: list[tuple[str, str]] = []
    for name, value in options.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float, str)):
            text = str(value)
        else:
            raise InvalidArgument(
                f"option {name!r} must be a bool, int, float or str, got {type(value).__name__} ({value!r})"
            )
        pairs.append((name, text))
    return pairs


def publisher(url: str, *, codec: CodecLike = "raw", **options: OptionValue) -> Publisher:
    """Open a publisher for ``url``; the scheme picks the driver (``omnibus.drivers()`` lists them).

    ``codec`` encodes each value: "raw" (bytes, the default), "text", "json",
    "msgpack", a registered name or a codec object. ``options`` override the
    URL's query options. Portable options: batch_messages, batch_bytes,
    batch_linger_ms, max_pending, block_timeout_ms; see drivers() for all.
    Use it as a context manager: leaving the block flushes and closes it.
    """
    return Publisher(url, option_pairs(options), resolve_codec(codec))


def subscriber(url: str, *, codec: CodecLike = "raw", **options: OptionValue) -> Subscriber:
    """Open a subscriber for ``url``; iterate over it or call receive()/receive_batch().

    Portable options: prefetch (messages fetched ahead), auto_ack (default
    True: a message is acked when handed to you; False: call msg.ack() or
    msg.nack() yourself for at-least-once processing). With auto_ack, msg.ack()
    is a no-op and msg.nack() raises InvalidArgument: the message was acked on
    hand-over and will not come again. mem:// adds group (competing consumers)
    and ack_deadline_ms.
    """
    return Subscriber(url, option_pairs(options), resolve_codec(codec))


def drivers() -> list[dict[str, Any]]:
    """The drivers in this build, each with its scheme, description and options."""
    return list(_core.drivers())


def redact_url(url: str) -> str:
    """``url`` as omnibus shows it in errors, reprs and logs: its password, or a lone userinfo
    (``nats://TOKEN@host``), replaced by ``***``. For tools that print URLs."""
    return _core.redact_url(url)


def unavailable_drivers() -> dict[str, str]:
    """Protocol schemes without a working driver here, with the reason and the fix: those this
    build has no driver for, and Python drivers that miss a package (their ``missing()``)."""
    from .driver import unavailable

    return {**dict(_core.unavailable_drivers()), **unavailable()}


def _load_driver_entry_points() -> None:
    # Drivers that installed packages declare (entry point group
    # "omnibus.drivers"; redis:// is omnibus' own), as pytest loads plugins.
    from .driver import load_entry_points

    load_entry_points()


_load_driver_entry_points()


def _libpulsar_path() -> str:
    """libpulsar inside the pulsar-client wheel ($OMNIBUS_LIBPULSAR first), or "" when there is none.

    Found from the wheel's file list, without importing its ``pulsar`` package."""
    import os
    from importlib import metadata

    env = os.environ.get("OMNIBUS_LIBPULSAR")
    if env:
        return env
    try:
        files = metadata.distribution("pulsar-client").files or []
    except metadata.PackageNotFoundError:
        return ""
    for f in files:
        if f.name.startswith("libpulsar") and ".so" in f.name:
            return str(f.locate())
    return ""


# pulsar:// loads libpulsar at run time; without it the scheme is listed unavailable with the reason.
_core.load_pulsar(_libpulsar_path())
