"""Drivers written in Python: the engine's driver interface, opened to Python.

A driver is an object with the small contract of the C++ ``Driver``
(``cpp/include/omnibus/driver.hpp``); register it under a URL scheme and every
publisher, subscriber, bridge and benchmark can use it::

    omnibus.register_driver("redis", RedisStreamsDriver())
    with omnibus.publisher("redis://127.0.0.1:6379/orders") as pub: ...

The engine keeps everything above the driver in C++ (batching, linger,
back-pressure, delivery results, acks, codecs) and calls the driver once per
batch, with the GIL taken for that call only. The contract (see
``redis_streams.py`` for a whole driver):

``Driver``
    ``description`` (str), ``sender_options`` and ``receiver_options``
    (sequences of :class:`Option`), ``open_sender(url, options)`` and
    ``open_receiver(url, options, settings)``. ``url`` is a dict (scheme,
    user, password, hosts [(host, port)], path, query, text: the URL with
    its password masked), ``options`` a dict of this driver's declared options,
    validated and with defaults filled in, ``settings`` has ``manual_ack``.
    May block to connect.

    Optional: ``missing() -> str | None``, why the driver cannot work here (a
    package it needs is not installed), with the command that fixes it; such a
    scheme is listed by ``omnibus.unavailable_drivers()`` (opening it still
    raises the driver's own error).

``Sender``
    ``send_batch(messages) -> None | list``: each message is a tuple
    ``(payload: bytes, key: bytes | None, headers: list[(str, bytes)],
    timestamp_ms: int)``; return None when all were sent, or one entry per
    message: None (sent) or the exception that failed it. Called from the
    publisher's thread only, never concurrently. ``capabilities() -> dict``
    (read once, at open: the keys of ``Publisher.capabilities()``),
    ``connected`` (optional: True, False, or None when it cannot tell),
    ``close()``.

``Receiver``
    ``receive_batch(max_messages, timeout) -> list[Received]``: block up to
    ``timeout`` seconds for at least one message, return at most
    ``max_messages``. ``ack(ids)`` / ``nack(ids)`` take the ``ack_id`` values
    the driver gave (any hashable: a Redis stream id, a delivery tag), each
    once. ``capabilities()``, ``connected``, ``close()`` as for the sender.

Any of these methods may be ``async def`` (a driver built on an asyncio client
library): the engine then runs them on an event loop of its own, one thread per
registered driver, started with its first sender or receiver and stopped with
its last.

Errors: raise ``omnibus.Unavailable``, ``omnibus.Timeout``, ... and the engine
keeps the class (``native_code`` and ``retryable`` too); any other exception
becomes ``omnibus.InternalError`` naming the driver and the method, with its
traceback. A retryable error from ``receive_batch`` (Unavailable, Timeout) is
waited out, as native drivers reconnect: the subscriber goes on polling.
A driver that raises fails that batch, never the engine; one that blocks
holds up only its own publisher or subscriber thread (the GIL is free while
it waits on I/O).

Packages register drivers on install through the entry point group
``omnibus.drivers`` (``name = "module:DriverClass"``), loaded at ``import
omnibus``, as pytest loads its plugins.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Optional

from . import _core

_TYPES = ("bool", "int", "float", "str", "choice")


class Option(NamedTuple):
    """One declared option: validation, error messages and ``omnibus drivers`` come from it."""

    name: str
    type: str  # bool, int, float, str or choice
    default: str  # textual, parsed like a URL value
    doc: str
    choices: tuple[str, ...] = ()
    min: Optional[int] = None  # int options only
    max: Optional[int] = None


class Received(NamedTuple):
    """A message a Python receiver returns from receive_batch."""

    ack_id: Any  # the driver's own id, handed back to ack()/nack()
    payload: bytes
    key: Optional[bytes] = None
    headers: Sequence[tuple[str, bytes]] = ()
    timestamp_ms: int = 0
    delivery_attempt: int = 1
    topic: str = ""


_lock = threading.Lock()
# scheme -> the driver's missing(): see unavailable().
_missing: dict[str, Callable[[], Any]] = {}


def register_driver(scheme: str, driver: Any, *, replace: bool = False) -> None:
    """Make ``scheme://`` URLs use ``driver`` (an object, or a class taking no arguments).

    Raises InvalidArgument when the scheme is taken (a built-in one always is;
    a registered Python one unless ``replace=True``) or an option declaration is
    malformed, TypeError when the driver lacks open_sender/open_receiver.
    """
    if not isinstance(scheme, str) or not scheme.isascii() or not scheme.replace("+", "").replace("-", "").isalnum():
        raise _core.InvalidArgument(f"driver scheme must be letters, digits, '+' or '-', got {scheme!r}")
    if scheme != scheme.lower():
        raise _core.InvalidArgument(f"driver scheme must be lower case (URLs are matched lower-cased), got {scheme!r}")
    if isinstance(driver, type):
        driver = driver()
    for method in ("open_sender", "open_receiver"):
        if not callable(getattr(driver, method, None)):
            raise TypeError(f"driver for {scheme}:// must have an {method}() method; {type(driver).__name__} has none")
    options = [_options(scheme, getattr(driver, side, ())) for side in ("sender_options", "receiver_options")]
    description = str(getattr(driver, "description", "") or f"{type(driver).__name__} (Python)")
    missing = getattr(driver, "missing", None)
    if any(inspect.iscoroutinefunction(getattr(driver, m)) for m in ("open_sender", "open_receiver")):
        driver = _AsyncDriver(scheme, driver)
    with _lock:
        _core.register_driver(scheme, driver, description, options[0], options[1], replace)
        if callable(missing):
            _missing[scheme] = missing
        else:
            _missing.pop(scheme, None)


def unavailable() -> dict[str, str]:
    """{scheme: why} for the registered Python drivers whose ``missing()`` gives a reason."""
    with _lock:
        checks = list(_missing.items())
    return {scheme: str(why) for scheme, check in checks if (why := check())}


def unregister_driver(scheme: str) -> bool:
    """Remove a driver registered from Python; False when ``scheme`` had none. Open publishers keep working."""
    with _lock:
        _missing.pop(scheme, None)
        return bool(_core.unregister_driver(scheme))


def _options(scheme: str, declared: Sequence[Any]) -> list[Option]:
    out: list[Option] = []
    for o in declared:
        opt = o if isinstance(o, Option) else Option(*o)
        if opt.type not in _TYPES:
            raise _core.InvalidArgument(
                f"{scheme}:// driver: option {opt.name!r} has type {opt.type!r}; use one of {', '.join(_TYPES)}"
            )
        if opt.type == "choice" and not opt.choices:
            raise _core.InvalidArgument(f"{scheme}:// driver: choice option {opt.name!r} lists no choices")
        out.append(opt._replace(default=str(opt.default), choices=tuple(opt.choices)))
    return out


def load_entry_points() -> None:
    """Register every driver that installed packages declare under the ``omnibus.drivers`` entry point group.

    A driver that fails to load is reported with a warning and left out; it never breaks ``import omnibus``.
    """
    from importlib.metadata import entry_points

    try:
        eps = entry_points(group="omnibus.drivers")  # type: ignore[call-arg]
    except TypeError:  # Python < 3.10
        eps = entry_points().get("omnibus.drivers", [])  # type: ignore[attr-defined]
    for ep in eps:
        if _core.python_driver(ep.name) is not None:
            continue  # registered already (the same distribution found twice on sys.path)
        try:
            register_driver(ep.name, ep.load())
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break the import
            warnings.warn(f"omnibus: driver entry point {ep.name} = {ep.value} failed to load: {e!r}", stacklevel=2)


class _EventLoop:
    """One event loop on a thread of its own, running while anything uses it (counted)."""

    def __init__(self, scheme: str) -> None:
        self._scheme = scheme
        self._lock = threading.Lock()
        self._users = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                                name=f"omnibus-{self._scheme}-driver-loop")
                self._thread.start()

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users or self._loop is None:
                return
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        loop.call_soon_threadsafe(loop.stop)
        assert thread is not None
        thread.join()
        loop.close()

    def run(self, value: Any) -> Any:
        """``value`` itself, or, when it is awaitable, its result (awaited on the loop; this thread waits)."""
        if not inspect.isawaitable(value):
            return value
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(_awaited(value), self._loop).result()


async def _awaited(value: Any) -> Any:
    return await value


class _AsyncEnd:
    """A sender or receiver whose methods may be coroutines, seen by the engine as a synchronous one."""

    def __init__(self, end: Any, loop: _EventLoop) -> None:
        self._end, self._loop = end, loop
        self._closed = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._end, name)
        if name == "connected" or not callable(attr):
            return attr
        return lambda *args: self._loop.run(attr(*args))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.run(self._end.close())
        finally:
            self._loop.release()


class _AsyncDriver:
    """Runs a driver's ``async def`` methods on an event loop of its own (see the module doc)."""

    def __init__(self, scheme: str, driver: Any) -> None:
        self.driver = driver
        self._loop = _EventLoop(scheme)

    def _open(self, method: str, *args: Any) -> _AsyncEnd:
        self._loop.acquire()
        try:
            return _AsyncEnd(self._loop.run(getattr(self.driver, method)(*args)), self._loop)
        except BaseException:
            self._loop.release()
            raise

    def open_sender(self, url: dict[str, Any], options: dict[str, Any]) -> _AsyncEnd:
        return self._open("open_sender", url, options)

    def open_receiver(self, url: dict[str, Any], options: dict[str, Any], settings: dict[str, Any]) -> _AsyncEnd:
        return self._open("open_receiver", url, options, settings)
