"""TLS and logins against secured brokers, and secrets that never show.

The conformance suite also runs through TLS with a client certificate and a login ("nats-tls",
"amqp-tls", "mqtt-tls", "pulsar-tls", "redis-tls", "kafka-tls" over SASL_SSL, and "awssqs-tls"
over HTTPS, in conftest.TARGETS); this file covers the ways to log in, the refusals, and what a user sees on errors.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import omnibus
from conftest import client_tls, skip_unless_built, started_broker
from omnibus.testing.brokers.nats import NatsServer

SECRET = "Sup3r-S3cret-Xyz"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _host(broker: Any) -> str:
    return str(broker.url).split("://", 1)[1]


def _round_trip(url: str, payload: bytes = b"secured") -> None:
    with omnibus.subscriber(url) as sub, omnibus.publisher(url) as pub:
        pub.publish(payload).result(timeout=10)
        assert bytes(sub.receive(timeout=10).payload) == payload
        assert pub.connected and sub.connected


def _all_refused(cases: list[tuple[str, type[omnibus.Error], str]],
                 opener: Callable[[str], Any] = omnibus.publisher) -> None:
    """Each URL fails to open with its error class and a message matching its pattern, without SECRET."""
    for url, error, text in cases:
        with pytest.raises(error, match=text) as e:
            opener(url)
        assert SECRET not in str(e.value)


@pytest.fixture(scope="module")
def nats_token_broker() -> Iterator[NatsServer]:
    """Plaintext, admits one token (nats-server allows a token or users, not both)."""
    yield from started_broker(NatsServer, name="nats-token", auth="token", jetstream=False)


def test_nats_logs_in_every_way_over_tls(nats_secure_broker: Any, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    b, pki = nats_secure_broker, nats_secure_broker.pki
    host, ca = _host(b), f"tls_ca={pki.ca}"
    pw_file = tmp_path / "pw"
    pw_file.write_text(b.password + "\n")
    monkeypatch.setenv("OMNIBUS_TEST_NATS_PASSWORD", b.password)
    for i, url in enumerate([
        f"nats://omnibus:{b.password}@{host}/sec.a?{ca}",                        # user and password in the URL
        f"nats://omnibus@{host}/sec.b?{ca}&password_file={pw_file}",             # the password from a file
        f"nats://omnibus@{host}/sec.c?{ca}&password_env=OMNIBUS_TEST_NATS_PASSWORD",  # from the environment
        f"nats://{host}/sec.d?{ca}&nkey={b.nkey}&nkey_seed={b.nkey_seed_file}",  # an NKey
        f"nats://omnibus:{b.password}@{host}/sec.e?{ca}&tls_cert={pki.client_cert}&tls_key={pki.client_key}",
    ]):
        _round_trip(url, f"way {i}".encode())


def test_nats_permission_refusals_are_errors_not_silence(nats_secure_broker: Any) -> None:
    """User "limited" may use plain.> only. The server answers anything else with an -ERR and
    drops it; omnibus reports it instead of a delivery that did not happen or a subscription
    that never delivers."""
    b, pki = nats_secure_broker, nats_secure_broker.pki
    base, ca = f"nats://limited:{b.password}@{_host(b)}", f"tls_ca={pki.ca}"
    _round_trip(f"{base}/plain.ok?{ca}")
    with omnibus.publisher(f"{base}/other.x?{ca}") as pub:
        with pytest.raises(omnibus.Unavailable, match='refused: Permissions Violation for Publish to "other.x"'):
            pub.publish(b"x").result(timeout=10)
    _all_refused([(f"{base}/other.y?{ca}", omnibus.Unavailable,
                   'refused: Permissions Violation for Subscription to "other.y"')], opener=omnibus.subscriber)
    for opener in (omnibus.publisher, omnibus.subscriber):  # JetStream: its API is off limits
        _all_refused([(f"{base}/plain.js?{ca}&stream=PLAINJS&request_timeout_ms=1000", omnibus.Unavailable,
                       r'refused: Permissions Violation for Publish to "\$JS.API.STREAM.INFO.PLAINJS"')], opener=opener)


def test_nats_token_from_the_url_or_a_file(nats_token_broker: NatsServer, tmp_path: Path) -> None:
    b = nats_token_broker
    token_file = tmp_path / "token"
    token_file.write_text(b.token)
    _round_trip(f"nats://{b.token}@{_host(b)}/tok.a")
    _round_trip(f"nats://{_host(b)}/tok.b?password_file={token_file}")
    with pytest.raises(omnibus.Unavailable, match="refused the login with the token") as e:
        omnibus.publisher(f"nats://{SECRET}@{_host(b)}/tok.c")
    assert SECRET not in str(e.value)


def test_nats_refusals_name_the_cause(nats_secure_broker: Any, nats_url: str) -> None:
    b, pki = nats_secure_broker, nats_secure_broker.pki
    host, ca = _host(b), f"tls_ca={pki.ca}"
    cases: list[tuple[str, type[omnibus.Error], str]] = [
        (f"nats://omnibus:{SECRET}@{host}/r?{ca}", omnibus.Unavailable,
         "refused the login with user 'omnibus' and its password"),
        (f"nats://{host}/r?{ca}", omnibus.Unavailable, "refused the login with no credentials"),
        (f"nats://omnibus:{SECRET}@{host}/r?tls_ca={pki.other_ca}", omnibus.Unavailable, "TLS handshake failed"),
        (f"nats://omnibus:{SECRET}@{host}/r", omnibus.Unavailable, "TLS handshake failed"),  # the system's CAs
        (f"{nats_url}/r?tls=true", omnibus.Unavailable, "the server does not offer it"),  # TLS to a plaintext port
        (f"nats://omnibus:{SECRET}@{host}/r?{ca}&tls_cert={pki.client_cert}", omnibus.InvalidArgument,
         "tls_cert and tls_key go together"),
        (f"nats://{host}/r?{ca}&nkey={b.nkey}", omnibus.InvalidArgument, "nkey .* and nkey_seed .* go together"),
        (f"nats://omnibus:{SECRET}@{host}/r?{ca}&nkey={b.nkey}&nkey_seed={b.nkey_seed_file}",
         omnibus.InvalidArgument, "give one way to log in"),
        (f"nats://omnibus:{SECRET}@{host}/r?tls_ca=/nonexistent/ca.pem", omnibus.InvalidArgument,
         "tls_ca=/nonexistent/ca.pem"),
    ]
    _all_refused(cases, omnibus.subscriber)


def test_amqps_with_and_without_a_client_certificate(amqp_secure_broker: Any) -> None:
    b, pki = amqp_secure_broker, amqp_secure_broker.pki
    base, _, query = b.tls_url.partition("?")
    _round_trip(f"{base}/sec-a?{query}")
    _round_trip(f"{base}/sec-b?{query}&tls_cert={pki.client_cert}&tls_key={pki.client_key}")


def test_amqps_external_login_with_the_client_certificate(amqp_secure_broker: Any) -> None:
    # The harness broker has rabbitmq_auth_mechanism_ssl and a user "omnibus-client", the common
    # name of the client certificate; EXTERNAL logs in as it without a password.
    b, pki = amqp_secure_broker, amqp_secure_broker.pki
    cert = f"{client_tls(pki)}&sasl_mechanism=EXTERNAL"
    _round_trip(f"amqps://localhost:{b.ports['tls']}/ext-a?{cert}")
    _round_trip(f"amqps://omnibus-client@localhost:{b.ports['tls']}/ext-b?{cert}")  # the identity given
    _all_refused([
        (f"amqps://localhost:{b.ports['tls']}/r?tls_ca={pki.ca}&sasl_mechanism=EXTERNAL", omnibus.InvalidArgument,
         "EXTERNAL logs in with the client certificate: use amqps:// with tls_cert"),
        (f"amqp://127.0.0.1:{b.ports['port']}/r?sasl_mechanism=EXTERNAL", omnibus.InvalidArgument,
         "EXTERNAL logs in with the client certificate: use amqps://"),
        (f"amqps://omnibus-client:{SECRET}@localhost:{b.ports['tls']}/r?{cert}", omnibus.InvalidArgument,
         "not a password; drop the password"),
    ])


def test_amqps_refusals_name_the_cause(amqp_secure_broker: Any) -> None:
    b, pki = amqp_secure_broker, amqp_secure_broker.pki
    tls, plain = b.ports["tls"], b.ports["port"]
    ca = f"tls_ca={pki.ca}"
    cases: list[tuple[str, type[omnibus.Error], str]] = [
        (f"amqps://guest:{SECRET}@localhost:{tls}/r?{ca}", omnibus.Unavailable, "wrong user name or password"),
        (f"amqps://guest:guest@localhost:{tls}/r?tls_ca={pki.other_ca}", omnibus.Unavailable, "TLS handshake failed"),
        # rabbitmq-c matches the host name against the certificate's DNS names only, not its IP addresses.
        (f"amqps://guest:guest@127.0.0.1:{tls}/r?{ca}", omnibus.Unavailable, "does not name host '127.0.0.1'"),
        (f"amqps://guest:guest@localhost:{plain}/r?{ca}", omnibus.Unavailable, "is the port a TLS listener"),
        (f"amqp://guest:guest@127.0.0.1:{tls}/r", omnibus.Unavailable, "a TLS port. then use amqps://"),
        (f"amqp://guest:guest@127.0.0.1:{plain}/r?{ca}", omnibus.InvalidArgument, "amqp:// is plaintext"),
        (f"amqp://guest:guest@127.0.0.1:{plain}/r?vhost=nowhere", omnibus.Unavailable,
         "the vhost does not exist or the user may not use it"),
        (f"amqps://guest:guest@localhost:{tls}/r?{ca}&tls_key={pki.client_key}", omnibus.InvalidArgument,
         "tls_cert and tls_key go together"),
        (f"amqps://guest:guest@localhost:{tls}/r?tls_ca=/nonexistent/ca.pem", omnibus.InvalidArgument,
         "tls_ca=/nonexistent/ca.pem cannot be loaded"),
    ]
    _all_refused(cases)


def _kafka_round_trip(url: str) -> None:
    with omnibus.subscriber(f"{url}&offset_reset=earliest") as sub, omnibus.publisher(url) as pub:
        pub.publish(b"secured").result(timeout=30)
        assert bytes(sub.receive(timeout=30).payload) == b"secured"


def test_kafka_over_tls_with_a_client_certificate_or_sasl(kafka_secure_broker: Any) -> None:
    b, pki = kafka_secure_broker, kafka_secure_broker.pki
    ca = f"tls_ca={pki.ca}"
    _kafka_round_trip(f"kafka://127.0.0.1:{b.ports['ssl']}/mtls?{ca}&tls_cert={pki.client_cert}&tls_key={pki.client_key}")
    password = b.sasl_users["omnibus"]
    _kafka_round_trip(f"kafka://omnibus:{password}@127.0.0.1:{b.ports['sasl_ssl']}/saslssl?{ca}")


def test_kafka_tls_refusals_name_the_cause(kafka_secure_broker: Any) -> None:
    b, pki = kafka_secure_broker, kafka_secure_broker.pki
    ssl, sasl_ssl, plain = b.ports["ssl"], b.ports["sasl_ssl"], b.ports["port"]
    mtls = f"tls_cert={pki.client_cert}&tls_key={pki.client_key}&connect_timeout_ms=3000"
    cases = [
        # librdkafka's own words for the cause are in the error.
        (f"kafka://127.0.0.1:{ssl}/r?tls_ca={pki.other_ca}&{mtls}", "certificate verify failed"),
        # No client certificate: the broker's TLS alert, "bad certificate" or "certificate required"
        # depending on when in the TLS 1.3 handshake it arrives.
        (f"kafka://127.0.0.1:{ssl}/r?tls_ca={pki.ca}&connect_timeout_ms=3000", "librdkafka: .*certificate"),
        (f"kafka://omnibus:{SECRET}@127.0.0.1:{sasl_ssl}/r?tls_ca={pki.ca}&connect_timeout_ms=3000",
         "Invalid username or password"),
        (f"kafka://127.0.0.1:{plain}/r?tls_ca={pki.ca}&{mtls}", "librdkafka: .*SSL"),  # TLS to a plaintext port
    ]
    _all_refused([(url, omnibus.Unavailable, text) for url, text in cases])


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_mqtt_password_login_and_refusals(mqtt_secure_broker: Any, version: str, tmp_path: Path) -> None:
    b = mqtt_secure_broker
    host = _host(b)
    pw_file = tmp_path / "pw"
    pw_file.write_text(b.password)
    _round_trip(f"mqtt://omnibus:{b.password}@{host}/plant/a?qos=1&version={version}")
    _round_trip(f"mqtt://omnibus@{host}/plant/b?qos=1&version={version}&password_file={pw_file}")
    for url in (f"mqtt://omnibus:{SECRET}@{host}/plant/c?version={version}", f"mqtt://{host}/plant/c?version={version}"):
        with pytest.raises(omnibus.Unavailable, match="(?i)not authorized") as e:
            omnibus.publisher(url)
        assert SECRET not in str(e.value)


def _tls_round_trips(login: str, port: int, pki: Any, path: str, with_cert: str = "") -> None:
    """A TLS driver's four ways in, `login` being "scheme://userinfo@": the harness CA; the CA and
    the client certificate (plus `with_cert`); the host by IP (the certificate names 127.0.0.1
    too; the name checked is the URL's, not a resolved address); tls_verify=false with a CA that
    signed nothing (encrypted, the certificate not checked)."""
    _round_trip(f"{login}localhost:{port}/{path}-a?tls_ca={pki.ca}")
    _round_trip(f"{login}localhost:{port}/{path}-b?{client_tls(pki)}{with_cert}")
    _round_trip(f"{login}127.0.0.1:{port}/{path}-c?tls_ca={pki.ca}")
    _round_trip(f"{login}localhost:{port}/{path}-d?tls_ca={pki.other_ca}&tls_verify=false")


def test_mqtts_with_and_without_a_client_certificate(mqtt_secure_broker: Any) -> None:
    b = mqtt_secure_broker
    _tls_round_trips(f"mqtts://omnibus:{b.password}@", b.ports["tls"], b.pki, "tls/m", with_cert="&version=3.1.1")


def test_mqtts_refusals_name_the_cause(mqtt_secure_broker: Any) -> None:
    b, pki = mqtt_secure_broker, mqtt_secure_broker.pki
    tls, plain, ca = b.ports["tls"], b.ports["port"], f"tls_ca={pki.ca}"
    _all_refused([
        (f"mqtts://omnibus:{SECRET}@localhost:{tls}/r?{ca}", omnibus.Unavailable, "(?i)not authorized"),
        (f"mqtts://omnibus:{SECRET}@localhost:{tls}/r?tls_ca={pki.other_ca}", omnibus.Unavailable,
         "TLS handshake failed: certificate verify failed"),
        (f"mqtts://omnibus:{SECRET}@localhost:{tls}/r", omnibus.Unavailable,  # the system's CAs do not know it
         "TLS handshake failed: certificate verify failed"),
        (f"mqtts://omnibus:{SECRET}@localhost:{plain}/r?{ca}", omnibus.Unavailable,  # TLS to a plaintext port
         "accepts TCP but completed no TLS handshake"),
        (f"mqtt://omnibus:{SECRET}@127.0.0.1:{tls}/r", omnibus.Unavailable,  # plaintext to a TLS port
         r"dropped the MQTT connect: a TLS listener does that \(mqtts://"),
        (f"mqtts://omnibus:{SECRET}@localhost:{_closed_port()}/r?{ca}", omnibus.Unavailable,
         r"connection failed \(refused, unreachable or dropped\) \("),  # no hint where nothing listens
        (f"mqtt://omnibus:{SECRET}@127.0.0.1:{plain}/r?{ca}", omnibus.InvalidArgument, "mqtt:// is plaintext"),
        (f"mqtts://omnibus:{SECRET}@localhost:{tls}/r?{ca}&tls_key={pki.client_key}", omnibus.InvalidArgument,
         "tls_cert and tls_key go together"),
        (f"mqtts://omnibus:{SECRET}@localhost:{tls}/r?tls_ca=/nonexistent/ca.pem", omnibus.InvalidArgument,
         "tls_ca=/nonexistent/ca.pem cannot be loaded"),
    ])
    _all_refused([(f"mqtts://omnibus:{SECRET}@localhost:{tls}/r/#?tls_ca={pki.other_ca}", omnibus.Unavailable,
                   "certificate verify failed")], opener=omnibus.subscriber)


def test_mqtt5_reports_a_publish_the_acl_denies(mqtt_secure_broker: Any) -> None:
    # MQTT 5's PUBACK carries the reason; MQTT 3.1.1's cannot (the broker acks and drops the message).
    b = mqtt_secure_broker
    with omnibus.publisher(f"mqtt://omnibus:{b.password}@{_host(b)}/secret/plans?qos=1&version=5") as pub:
        with pytest.raises(omnibus.Unavailable, match="Not authorized"):
            pub.publish(b"x").result(timeout=10)


def test_redis_password_and_tls(redis_secure_broker: Any, tmp_path: Path) -> None:
    b, pki = redis_secure_broker, redis_secure_broker.pki
    pw_file = tmp_path / "pw"
    pw_file.write_text(b.password + "\n")
    _round_trip(f"redis://127.0.0.1:{b.ports['port']}/plain?password_file={pw_file}")
    _round_trip(f"rediss://:{b.password}@localhost:{b.ports['tls']}/tls?tls_ca={pki.ca}")
    _round_trip(f"rediss://:{b.password}@localhost:{b.ports['tls']}/mtls?tls_ca={pki.ca}"
                f"&tls_cert={pki.client_cert}&tls_key={pki.client_key}")


def test_redis_refusals_name_the_cause(redis_secure_broker: Any) -> None:
    b, pki = redis_secure_broker, redis_secure_broker.pki
    plain, tls = b.ports["port"], b.ports["tls"]
    cases: list[tuple[str, type[omnibus.Error], str]] = [
        (f"redis://:{SECRET}@127.0.0.1:{plain}/r", omnibus.Unavailable, "refused the login"),
        (f"redis://127.0.0.1:{plain}/r", omnibus.Unavailable, "refused the login"),
        (f"rediss://:{SECRET}@localhost:{tls}/r?tls_ca={pki.other_ca}", omnibus.Unavailable, "certificate verify failed"),
        (f"redis://:{SECRET}@127.0.0.1:{plain}/r?tls_ca={pki.ca}", omnibus.InvalidArgument, "redis:// is plaintext"),
        (f"rediss://:{SECRET}@localhost:{plain}/r?tls_ca={pki.ca}&connect_timeout_ms=2000", omnibus.Unavailable,
         "no TLS handshake within connect_timeout_ms=2000 .is the port a TLS listener"),  # TLS to a plaintext port
        (f"rediss://:{SECRET}@localhost:{tls}/r?tls_ca=/nonexistent/ca.pem", omnibus.InvalidArgument,
         "tls_ca=/nonexistent/ca.pem cannot be read"),
    ]
    _all_refused(cases)


def test_pulsar_over_tls_with_a_token_and_a_client_certificate(pulsar_secure_broker: Any) -> None:
    b = pulsar_secure_broker
    _tls_round_trips(f"pulsar+ssl://{b.token}@", b.ports["tls"], b.pki, "tls")


def test_pulsar_tls_refusals_name_the_cause(pulsar_secure_broker: Any) -> None:
    b, pki = pulsar_secure_broker, pulsar_secure_broker.pki
    tls = f"pulsar+ssl://{b.token}@localhost:{b.ports['tls']}"
    for opener in (omnibus.publisher, omnibus.subscriber):
        _all_refused([
            # libpulsar says only ConnectError; omnibus adds OpenSSL's reason.
            (f"{tls}/r?tls_ca={pki.other_ca}&connect_timeout_ms=3000", omnibus.Unavailable,
             r"TLS handshake failed: certificate verify failed"),
            (f"pulsar://{b.token}@{_host(b)}/r?tls_ca={pki.ca}", omnibus.InvalidArgument, "pulsar:// is plaintext"),
            (f"{tls}/r?tls_ca={pki.ca}&tls_key={pki.client_key}", omnibus.InvalidArgument,
             "tls_cert and tls_key go together"),
            (f"{tls}/r?tls_ca=/nonexistent/ca.pem", omnibus.InvalidArgument, "tls_ca=/nonexistent/ca.pem cannot be"),
        ], opener=opener)


def test_pulsar_token_from_the_url_a_file_or_the_environment(pulsar_secure_broker: Any, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    b = pulsar_secure_broker
    host = _host(b)
    _round_trip(f"pulsar://{b.token}@{host}/tok-url")
    token_file = tmp_path / "token"
    token_file.write_text(b.token + "\n")
    _round_trip(f"pulsar://{host}/tok-file?password_file={token_file}")
    monkeypatch.setenv("OMNIBUS_TEST_PULSAR_TOKEN", b.token)
    _round_trip(f"pulsar://{host}/tok-env?password_env=OMNIBUS_TEST_PULSAR_TOKEN")


def test_pulsar_without_a_valid_token_says_what_that_looks_like(pulsar_secure_broker: Any) -> None:
    # The broker does not answer a client whose token is missing or refused; libpulsar times out
    # (connect_timeout_ms) and cannot say why, so the error names the likely cause.
    host = _host(pulsar_secure_broker)
    forged = pulsar_secure_broker.token[:-6] + "AAAAAA"  # the signature broken
    for opener in (omnibus.publisher, omnibus.subscriber):
        _all_refused([
            (f"pulsar://{host}/r?connect_timeout_ms=2000", omnibus.Timeout, "requires a token .* without one"),
            (f"pulsar://{SECRET}@{host}/r?connect_timeout_ms=2000", omnibus.Timeout, "a broker refusing the token"),
            (f"pulsar://{forged}@{host}/r?connect_timeout_ms=2000", omnibus.Timeout, "a broker refusing the token"),
        ], opener=opener)


def test_sqs_and_sns_over_https_with_a_private_ca(sqs_secure_broker: Any) -> None:
    from omnibus.testing.brokers.moto import queue_url

    b = sqs_secure_broker
    assert b.url.split("endpoint=", 1)[1].startswith("https://localhost:") and "tls_ca=" in b.url
    _round_trip(queue_url(b.url, "tls-queue", create="true"))
    _round_trip(queue_url(b.sns_url, "tls-topic", create="true"))
    # tls_verify=false: encrypted, the certificate not checked (here: signed by a CA not given).
    _round_trip(queue_url(b.url.replace(str(b.pki.ca), str(b.pki.other_ca)), "tls-unverified", create="true",
                          tls_verify="false"))


def test_sqs_tls_refusals_name_the_cause(sqs_secure_broker: Any) -> None:
    b, pki = sqs_secure_broker, sqs_secure_broker.pki
    key, port = b.aws.access_key_id, b.ports["port"]
    https = f"awssqs://{key}:{SECRET}@/q?endpoint=https://localhost:{port}&region=us-east-1&create=true"
    _all_refused([
        (f"{https}&tls_ca={pki.other_ca}", omnibus.Unavailable, "SSL certificate problem"),
        (f"{https}", omnibus.Unavailable, "SSL certificate problem"),  # the system's CAs do not know it
        (f"awssqs://{key}:{SECRET}@/q?endpoint=http://127.0.0.1:{port}&region=us-east-1&tls_ca={pki.ca}",
         omnibus.InvalidArgument, "is plaintext http://"),
        (f"{https}&tls_ca={pki.ca}&tls_cert={pki.client_cert}", omnibus.InvalidArgument,
         "tls_cert and tls_key go together"),
        (f"{https}&tls_ca=/nonexistent/ca.pem", omnibus.InvalidArgument, "tls_ca=/nonexistent/ca.pem cannot be loaded"),
    ])


# Each driver opened with a password against a port where nothing listens: errors and reprs carry no secret.
_UNREACHABLE: dict[str, Callable[[int], str]] = {
    "kafka": lambda p: f"kafka://u:{SECRET}@127.0.0.1:{p}/t?connect_timeout_ms=1000",
    "amqp": lambda p: f"amqp://u:{SECRET}@127.0.0.1:{p}/t?connect_timeout_ms=1000",
    "amqps": lambda p: f"amqps://u:{SECRET}@localhost:{p}/t?connect_timeout_ms=1000",
    "nats": lambda p: f"nats://u:{SECRET}@127.0.0.1:{p}/t",
    "nats-token": lambda p: f"nats://{SECRET}@127.0.0.1:{p}/t",
    "mqtt": lambda p: f"mqtt://u:{SECRET}@127.0.0.1:{p}/t?connect_timeout_ms=1000",
    "mqtts": lambda p: f"mqtts://u:{SECRET}@localhost:{p}/t?connect_timeout_ms=1000",
    "pulsar": lambda p: f"pulsar://u:{SECRET}@127.0.0.1:{p}/t?connect_timeout_ms=1000",
    "pulsar-token": lambda p: f"pulsar://{SECRET}@127.0.0.1:{p}/t?connect_timeout_ms=1000",
    "redis": lambda p: f"redis://:{SECRET}@127.0.0.1:{p}/t",
    "awssqs": lambda p: f"awssqs://AKIAEXAMPLE:{SECRET}@/q?endpoint=http://127.0.0.1:{p}&region=us-east-1",
    "gcppubsub": lambda p: f"gcppubsub://u:{SECRET}@127.0.0.1:{p}/projects/p/topics/t",
}


@pytest.mark.parametrize("driver", list(_UNREACHABLE))
def test_no_secret_in_errors(driver: str, capfd: pytest.CaptureFixture[str]) -> None:
    scheme = driver.split("-")[0]
    skip_unless_built(scheme)
    url = _UNREACHABLE[driver](_closed_port())
    texts: list[str] = []
    for opener in (omnibus.publisher, omnibus.subscriber):
        with pytest.raises(omnibus.Error) as e:
            opener(url)
        texts += [str(e.value), repr(e.value)]
        with pytest.raises(omnibus.InvalidArgument) as bad:  # a bad option is reported with the URL
            opener(url + ("&" if "?" in url else "?") + "no_such_option=1")
        assert "no_such_option" in str(bad.value)
        texts += [str(bad.value)]
    out, err = capfd.readouterr()
    texts += [out, err]
    assert not [t for t in texts if SECRET in t], "the password was shown"


def test_redact_url_masks_passwords_and_tokens() -> None:
    assert omnibus.redact_url(f"amqp://u:{SECRET}@h/x?y=1") == "amqp://u:***@h/x?y=1"
    assert omnibus.redact_url(f"nats://{SECRET}@h:4222/s") == "nats://***@h:4222/s"
    assert omnibus.redact_url("kafka://h/t@x") == "kafka://h/t@x"  # '@' outside the authority


def test_repr_masks_the_password(nats_secure_url: str) -> None:
    url = nats_secure_url.replace("?", "/repr?", 1)
    password = url.split("://omnibus:", 1)[1].split("@", 1)[0]
    with omnibus.publisher(url) as pub, omnibus.subscriber(url) as sub:
        for text in (repr(pub), repr(sub)):
            assert password not in text and "omnibus:***@" in text, text


class _TlsImpostor:
    """A TLS listener on 127.0.0.1 that presents `cert` and then hangs up: what a client must refuse
    (a certificate for another host, or an expired one) before it speaks its protocol. `preface` is
    sent in plaintext first (NATS sends INFO before its client upgrades to TLS)."""

    def __init__(self, cert: Path, key: Path, preface: bytes = b"") -> None:
        import ssl
        import threading

        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.preface = preface
        self.handshakes = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="tls-impostor")
        self.thread.start()

    def _serve(self) -> None:
        import ssl

        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            # Counted before the handshake: a client can refuse the certificate only after this
            # side accepted and sent it, so the count is up when the client's error is raised.
            self.handshakes += 1
            with conn:
                conn.settimeout(5)
                try:
                    conn.sendall(self.preface)
                    with self.ctx.wrap_socket(conn, server_side=True):
                        pass
                except (OSError, ssl.SSLError):
                    pass  # the client refused the certificate: the expected outcome

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def _pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from omnibus.testing.certs import make_pki

    return make_pki(tmp_path_factory.mktemp("impostor-pki"))


# The URL each TLS driver opens against the impostor's port; the CA is the one that signed its certificate.
_IMPOSTOR_URLS: dict[str, Callable[[int, Path], str]] = {
    "mqtt": lambda p, ca: f"mqtts://localhost:{p}/t?tls_ca={ca}&connect_timeout_ms=3000",
    "amqp": lambda p, ca: f"amqps://guest:guest@localhost:{p}/t?tls_ca={ca}&connect_timeout_ms=3000",
    "kafka": lambda p, ca: f"kafka://localhost:{p}/t?security_protocol=ssl&tls_ca={ca}&connect_timeout_ms=3000",
    "nats": lambda p, ca: f"nats://localhost:{p}/t?tls_ca={ca}&connect_timeout_ms=3000",
    "redis": lambda p, ca: f"rediss://localhost:{p}/t?tls_ca={ca}&connect_timeout_ms=3000",
    "pulsar": lambda p, ca: f"pulsar+ssl://localhost:{p}/t?tls_ca={ca}&connect_timeout_ms=3000",
    "awssqs": lambda p, ca: (f"awssqs://AKID:{SECRET}@/q?endpoint=https://localhost:{p}&region=us-east-1"
                             f"&tls_ca={ca}"),
}
_NATS_INFO = (b'INFO {"server_id":"impostor","version":"2.9.15","proto":1,"host":"127.0.0.1","port":4222,'
              b'"tls_required":true,"max_payload":1048576}\r\n')


@pytest.mark.parametrize("driver", sorted(_IMPOSTOR_URLS))
@pytest.mark.parametrize("case", ["wrong host", "expired"])
def test_a_certificate_for_another_host_or_expired_is_refused(driver: str, case: str, _pki: Any) -> None:
    skip_unless_built(driver)
    cert, key = ((_pki.wrong_host_cert, _pki.wrong_host_key) if case == "wrong host"
                 else (_pki.expired_cert, _pki.expired_key))
    impostor = _TlsImpostor(cert, key, preface=_NATS_INFO if driver == "nats" else b"")
    try:
        with pytest.raises(omnibus.Unavailable) as e:
            omnibus.publisher(_IMPOSTOR_URLS[driver](impostor.port, _pki.ca)).close()
        assert impostor.handshakes >= 1, "the client never reached the TLS handshake"
    finally:
        impostor.close()
    # Each names the cause in its library's words or OpenSSL's (omnibus adds them where the library
    # does not: Paho, librdkafka and rabbitmq-c's "peer cert verification failed").
    cause = r"(?i)host ?name|does not name host" if case == "wrong host" else r"(?i)expired"
    assert re.search(cause, str(e.value)), str(e.value)
    assert SECRET not in str(e.value)
