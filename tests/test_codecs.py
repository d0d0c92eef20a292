"""Codecs: built-in (C++) and written in Python."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

import omnibus

VALUE = {"device": "d-17", "seq": 42, "temp": 21.5, "ok": True, "tags": ["a", "ü"], "none": None, "big": 2**63 + 5}


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_structured_round_trip(codec: str) -> None:
    url = f"mem://codec-{codec}"
    with omnibus.subscriber(url, codec=codec) as sub, omnibus.publisher(url, codec=codec) as pub:
        pub.publish_many([VALUE, [1, 2, 3], "text", 7, None]).result(timeout=10)
        got = [m.value for m in sub.receive_batch(5, timeout=10)]
    assert got == [VALUE, [1, 2, 3], "text", 7, None]


def test_json_payload_is_standard_json() -> None:
    with omnibus.subscriber("mem://cj") as sub, omnibus.publisher("mem://cj", codec="json") as pub:
        pub.publish(VALUE).result(timeout=10)
        assert json.loads(bytes(sub.receive(timeout=10).payload)) == VALUE


def test_msgpack_interoperates_with_msgpack_python() -> None:
    """Another implementation reads what the C++ codec wrote, and the other way round."""
    value = dict(VALUE, blob=b"\x00\xff")
    with omnibus.subscriber("mem://cm") as raw_sub, omnibus.publisher("mem://cm", codec="msgpack") as pub:
        pub.publish(value).result(timeout=10)
        assert msgpack.unpackb(bytes(raw_sub.receive(timeout=10).payload)) == value
    with omnibus.subscriber("mem://cm2", codec="msgpack") as sub, omnibus.publisher("mem://cm2") as raw_pub:
        raw_pub.publish(msgpack.packb(value)).result(timeout=10)
        assert sub.receive(timeout=10).value == value


def test_text_rejects_invalid_utf8_on_decode() -> None:
    with omnibus.subscriber("mem://ct", codec="text") as sub, omnibus.publisher("mem://ct") as pub:
        pub.publish(b"\xff\xfe").result(timeout=10)
        msg = sub.receive(timeout=10)
        with pytest.raises(omnibus.CodecError, match="not valid UTF-8"):
            _ = msg.value


def test_invalid_json_payload_is_a_codec_error() -> None:
    with omnibus.subscriber("mem://cbad", codec="json") as sub, omnibus.publisher("mem://cbad") as pub:
        pub.publish(b"{not json").result(timeout=10)
        with pytest.raises(omnibus.CodecError, match="not valid JSON"):
            _ = sub.receive(timeout=10).value


class Upper:
    name = "upper"

    def encode(self, value: Any) -> bytes:
        return str(value).upper().encode()

    def decode(self, payload: bytes) -> Any:
        return payload.decode().lower()


def test_python_codec_registered_by_name() -> None:
    omnibus.register_codec("upper", Upper())
    try:
        assert "upper" in omnibus.codec_names()
        with pytest.raises(omnibus.InvalidArgument, match="already registered"):
            omnibus.register_codec("upper", Upper())
        with pytest.raises(omnibus.InvalidArgument, match="built in"):
            omnibus.register_codec("json", Upper())
        with omnibus.subscriber("mem://cu", codec="upper") as sub, omnibus.publisher("mem://cu", codec="upper") as pub:
            pub.publish("hello").result(timeout=10)
            msg = sub.receive(timeout=10)
        assert bytes(msg.payload) == b"HELLO" and msg.value == "hello"
    finally:
        omnibus.unregister_codec("upper")
    with pytest.raises(omnibus.NotFound):
        omnibus.unregister_codec("upper")


def test_python_codec_must_return_bytes() -> None:
    class Bad:
        def encode(self, value: Any) -> Any:
            return 123

        def decode(self, payload: bytes) -> Any:
            return payload

    with omnibus.publisher("mem://cb", codec=Bad()) as pub:
        with pytest.raises(omnibus.CodecError, match="encode\\(\\) returned int, expected bytes"):
            pub.publish("x")
