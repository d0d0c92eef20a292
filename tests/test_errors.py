"""The error taxonomy and every bad-input error the API promises."""

from __future__ import annotations

import ast
import builtins
import pathlib

import pytest

import omnibus
from omnibus import _core

STUB = pathlib.Path(omnibus.__file__).with_name("_core.pyi")


def test_taxonomy_comes_from_one_table() -> None:
    names = [row[1] for row in _core.ERROR_TABLE]
    assert names == [
        "InvalidArgument", "NotFound", "Unavailable", "Timeout", "ResourceExhausted",
        "Unsupported", "CodecError", "Closed", "InternalError",
    ]
    for _, py_name, base, retryable, doc in _core.ERROR_TABLE:
        cls = getattr(omnibus, py_name)
        assert issubclass(cls, omnibus.Error) and cls.__module__ == "omnibus"
        if base:
            assert issubclass(cls, getattr(builtins, base)), (py_name, base)
        assert cls.retryable is retryable
        assert cls.__doc__ == doc
    assert issubclass(omnibus.InvalidArgument, ValueError)
    assert issubclass(omnibus.Timeout, TimeoutError)
    assert issubclass(omnibus.Unavailable, ConnectionError)


def test_stub_declares_every_error_class() -> None:
    tree = ast.parse(STUB.read_text())
    declared = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    missing = {row[1] for row in _core.ERROR_TABLE} - declared
    assert not missing, f"_core.pyi lacks {missing}; regenerate it from error_codes.def"


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("not a url", "no scheme"),
        ("mem//topic", "no scheme"),
        ("1mem://x", "invalid scheme"),
        ("kafka://host:99999/t", "not in 1..65535"),
        ("kafka://host:port/t", "not a number"),
        ("kafka://[::1/t", "lacks ']'"),
        ("kafka://a:1,,b:2/t", "empty host"),
        ("mem://x/%zz", "percent-escape"),
        ("mem://my topic", "space"),
        ("mem://x?=1", "without a name"),
    ],
)
def test_malformed_url(url: str, fragment: str) -> None:
    with pytest.raises(omnibus.InvalidArgument) as info:
        omnibus.publisher(url)
    assert fragment in str(info.value)
    assert "expected scheme://" in str(info.value)


def test_url_parsing() -> None:
    u = _core.parse_url("kafka://us%40r:p%3Ass@[::1]:9092,h2:9093/tele%2Fmetry?acks=all&linger_ms=5&flag")
    assert u["scheme"] == "kafka" and u["user"] == "us@r" and u["password"] == "p:ss"
    assert u["hosts"] == [("::1", 9092), ("h2", 9093)]
    assert u["path"] == "tele/metry"
    assert u["query"] == [("acks", "all"), ("linger_ms", "5"), ("flag", "true")]
    m = _core.parse_url("mqtt://127.0.0.1:1883/sensors/+/temp/#?qos=1")
    assert m["path"] == "sensors/+/temp/#"  # '#' and '+' are topic characters, not a fragment


def test_password_is_not_echoed_in_errors() -> None:
    with pytest.raises(omnibus.InvalidArgument) as info:
        omnibus.publisher("mem://user:secret@x:notaport")
    assert "secret" not in str(info.value) and "***" in str(info.value)


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(omnibus.InvalidArgument) as info:
        omnibus.publisher("carrier-pigeon://coop/t")
    assert "carrier-pigeon" in str(info.value) and "mem://" in str(info.value)


def test_scheme_left_out_of_the_build_says_why() -> None:
    missing = omnibus.unavailable_drivers()
    if not missing:
        pytest.skip("every protocol driver is in this build")
    scheme, why = sorted(missing.items())[0]
    with pytest.raises(omnibus.Unsupported) as info:
        omnibus.subscriber(f"{scheme}://127.0.0.1:1/t")
    assert why in str(info.value)


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(omnibus.InvalidArgument) as info:
        omnibus.publisher("mem://x", batch_size=10)
    text = str(info.value)
    assert "'batch_size'" in text and "batch_messages" in text and "max_pending" in text
    with pytest.raises(omnibus.InvalidArgument) as info:
        omnibus.subscriber("mem://x?prefech=10")
    assert "'prefech'" in str(info.value) and "prefetch" in str(info.value)


def test_option_of_the_other_role_in_a_keyword_is_an_error() -> None:
    # In the URL it is skipped (one URL serves both sides); as a keyword it is a mistake.
    omnibus.publisher("mem://x?group=g&prefetch=5").close()
    with pytest.raises(omnibus.InvalidArgument, match="'group'"):
        omnibus.publisher("mem://x", group="g")


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"prefetch": "many"}, "expects an int"),
        ({"prefetch": 1.5}, "expects an int"),
        ({"prefetch": 0}, "in 1.."),
        ({"auto_ack": "maybe"}, "expects a bool"),
        ({"ack_deadline_ms": -1}, "in 1.."),
    ],
)
def test_wrong_option_type(options: dict[str, object], fragment: str) -> None:
    with pytest.raises(omnibus.InvalidArgument) as info:
        omnibus.subscriber("mem://x", **options)  # type: ignore[arg-type]
    assert fragment in str(info.value) and next(iter(options)) in str(info.value)


def test_option_value_of_unsupported_python_type() -> None:
    with pytest.raises(omnibus.InvalidArgument, match="must be a bool, int, float or str, got list"):
        omnibus.publisher("mem://x", max_pending=[1])  # type: ignore[arg-type]


def test_non_bytes_value_without_codec_is_a_type_error() -> None:
    with omnibus.publisher("mem://x") as pub:
        with pytest.raises(TypeError, match="codec 'raw' takes bytes.*got dict"):
            pub.publish({"a": 1})
        with pytest.raises(TypeError, match="message 2: codec 'raw'"):
            pub.publish_many([b"a", b"b", "c"])
        assert pub.stats()["messages_sent"] == 0  # the bad batch queued nothing


class Exploding:
    name = "exploding"

    def encode(self, value: object) -> bytes:
        if value == "boom":
            raise RuntimeError("cannot encode boom")
        return str(value).encode()

    def decode(self, payload: bytes) -> object:
        raise RuntimeError("cannot decode anything")


def test_codec_that_raises_names_the_index() -> None:
    with omnibus.subscriber("mem://boom", codec=Exploding()) as sub, \
            omnibus.publisher("mem://boom", codec=Exploding()) as pub:
        with pytest.raises(omnibus.CodecError) as info:
            pub.publish_many(["ok", "ok", "boom", "ok"])
        assert "message 2 of the batch" in str(info.value) and "cannot encode boom" in str(info.value)
        assert isinstance(info.value.__cause__, RuntimeError)
        assert pub.stats()["messages_sent"] == 0
        pub.publish("fine").result(timeout=10)
        msg = sub.receive(timeout=10)
        with pytest.raises(omnibus.CodecError, match="could not decode"):
            _ = msg.value
        assert bytes(msg.payload) == b"fine"  # the raw bytes stay readable


def test_json_refuses_what_it_cannot_represent() -> None:
    with omnibus.publisher("mem://j", codec="json") as pub:
        with pytest.raises(omnibus.CodecError, match="message 0 .*bytes have no JSON form"):
            pub.publish({"blob": b"\x00"})
        with pytest.raises(omnibus.CodecError, match="type set"):
            pub.publish({1, 2})
        with pytest.raises(omnibus.CodecError, match="dict keys must be str"):
            pub.publish({1: "a"})
        with pytest.raises(omnibus.CodecError, match="nan"):
            pub.publish(float("nan"))


def test_publish_after_close() -> None:
    pub = omnibus.publisher("mem://closed")
    pub.close()
    with pytest.raises(omnibus.Closed, match="closed"):
        pub.publish(b"x")
    assert isinstance(omnibus.Closed("x"), RuntimeError)


def test_unknown_codec_lists_valid_ones() -> None:
    with pytest.raises(omnibus.InvalidArgument, match="unknown codec 'yaml'; valid codecs: .*json.*msgpack"):
        omnibus.publisher("mem://x", codec="yaml")
    with pytest.raises(TypeError, match="encode/decode"):
        omnibus.publisher("mem://x", codec=42)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_bad_timeout(bad: float) -> None:
    with omnibus.subscriber("mem://x") as sub:
        with pytest.raises(omnibus.InvalidArgument, match="seconds >= 0"):
            sub.receive(timeout=bad)


def test_bad_headers_and_keys() -> None:
    with omnibus.publisher("mem://x") as pub:
        with pytest.raises(TypeError, match="headers must be a dict"):
            pub.publish(b"x", headers=42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="header names must be str"):
            pub.publish(b"x", headers={1: b"v"})  # type: ignore[dict-item]
        with pytest.raises(TypeError, match="key must be bytes-like or str"):
            pub.publish(b"x", key=3)  # type: ignore[arg-type]
        with pytest.raises(omnibus.InvalidArgument, match="keys has 1 items for 2 values"):
            pub.publish_many([b"a", b"b"], keys=[b"k"])


def test_ack_after_subscriber_close_is_closed() -> None:
    with omnibus.publisher("mem://late-ack") as pub:
        sub = omnibus.subscriber("mem://late-ack", auto_ack=False)
        pub.publish(b"x").result(timeout=10)
        msg = sub.receive(timeout=10)
        sub.close()
        with pytest.raises(omnibus.Closed, match="returned for redelivery"):
            msg.ack()
