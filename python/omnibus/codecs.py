"""Codec registry: the Python-extensible part of the engine.

Built-in codecs run in C++: ``raw`` (bytes in, bytes out), ``text`` (UTF-8 str),
``json`` and ``msgpack`` (None, bool, int, float, str, list, dict; msgpack also
bytes). Any object with ``encode(value) -> bytes`` and ``decode(bytes) -> value``
is a codec too; register it under a name to use it by name::

    class Csv:
        name = "csv"
        def encode(self, row): return ",".join(map(str, row)).encode()
        def decode(self, payload): return payload.decode().split(",")

    omnibus.register_codec("csv", Csv())
    pub = omnibus.publisher("mem://rows", codec="csv")
"""

from __future__ import annotations

import threading
from typing import Any, Protocol, Union, runtime_checkable

from . import _core


@runtime_checkable
class Codec(Protocol):
    """What a Python codec provides. Exceptions it raises become CodecError."""

    def encode(self, value: Any) -> bytes: ...

    def decode(self, payload: bytes) -> Any: ...


CodecLike = Union[str, Codec]

_lock = threading.Lock()
_registry: dict[str, Codec] = {}


def builtin_codecs() -> list[str]:
    """Names of the codecs implemented in the C++ engine."""
    return list(_core.builtin_codecs())


def codec_names() -> list[str]:
    """Every name a publisher or subscriber accepts: built-in and registered."""
    with _lock:
        return sorted(set(builtin_codecs()) | set(_registry))


def register_codec(name: str, codec: Codec, *, replace: bool = False) -> None:
    """Make ``codec`` available as ``codec=name``.

    Raises InvalidArgument when the name is taken (a built-in name always is;
    a registered one unless ``replace=True``), TypeError when ``codec`` lacks
    encode/decode.
    """
    if not isinstance(name, str) or not name:
        raise _core.InvalidArgument(f"codec name must be a non-empty str, got {name!r}")
    if not (callable(getattr(codec, "encode", None)) and callable(getattr(codec, "decode", None))):
        raise TypeError(
            f"codec {name!r} must have encode(value) -> bytes and decode(bytes) -> value methods, "
            f"got {type(codec).__name__}"
        )
    if name in builtin_codecs():
        raise _core.InvalidArgument(f"codec name {name!r} is built in; choose another name")
    with _lock:
        if name in _registry and not replace:
            raise _core.InvalidArgument(f"codec {name!r} is already registered; pass replace=True to replace it")
        _registry[name] = codec


def unregister_codec(name: str) -> None:
    """Remove a registered codec; NotFound when there is none by that name."""
    with _lock:
        if _registry.pop(name, None) is None:
            raise _core.NotFound(f"no registered codec named {name!r}; registered: {sorted(_registry)}")


def resolve_codec(codec: CodecLike) -> str | Codec:
    """A built-in name (passed to C++ as is) or the Python codec object to call."""
    if isinstance(codec, str):
        with _lock:
            found = _registry.get(codec)
        if found is not None:
            return found
        if codec in builtin_codecs():
            return codec
        raise _core.InvalidArgument(f"unknown codec {codec!r}; valid codecs: {', '.join(codec_names())}")
    if callable(getattr(codec, "encode", None)) and callable(getattr(codec, "decode", None)):
        return codec
    raise TypeError(
        f"codec must be a name ({', '.join(codec_names())}) or an object with encode/decode, "
        f"got {type(codec).__name__}"
    )
