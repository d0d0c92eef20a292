"""pytest plugin (entry point ``pytest11: omnibus``): real brokers as session fixtures.

Fixtures ``mqtt_url``, ``nats_url``, ``amqp_url``, ``kafka_url``, ``redis_url``, ``pulsar_url``, ``gcp_url`` (and
``nats_cluster_url``, ``kafka_cluster_url``) give a broker URL:

* from ``OMNIBUS_MQTT_URL`` / ``OMNIBUS_NATS_URL`` / ``OMNIBUS_AMQP_URL`` /
  ``OMNIBUS_KAFKA_URL`` / ``OMNIBUS_REDIS_URL`` / ``OMNIBUS_PULSAR_URL`` / ``OMNIBUS_GCP_URL`` (and ``..._CLUSTER_URL``)
  when set: brokers in Docker (see docker-compose.yml) or elsewhere; for ``gcp_url`` also from
  ``PUBSUB_EMULATOR_HOST`` (host:port), as Google's own clients take it;
* otherwise from a broker this plugin starts on loopback, once per session,
  and stops at the end of it.

``mqtt_broker`` etc. give the Broker object itself, for tests that restart or
kill it; they skip when the URL comes from the environment. A broker whose
program is not installed skips its tests with the reason, except under
``CI=true``, where that is a failure: CI must run everything.

Markers ``mqtt``, ``nats``, ``amqp``, ``kafka``, ``redis``, ``pulsar``, ``gcp`` are added to every test that
uses the matching fixture, so ``pytest -m kafka`` or ``-m "not amqp"`` select
protocols.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

from omnibus.testing.brokers._base import Broker, ProgramMissing
from omnibus.testing.brokers.kinds import KINDS


def pytest_configure(config: pytest.Config) -> None:
    for kind in KINDS.values():
        config.addinivalue_line(
            "markers", f"{kind.pytest_marker}: needs a broker for {kind.serves} (started by omnibus or from "
            f"OMNIBUS_{kind.name.upper()}_URL)")


# A test parametrized with a protocol's name (the conformance suite's targets, the comparison's
# kinds) asks for its broker with request.getfixturevalue, which collection cannot see: the
# parameter marks it instead, so that `-m "not pulsar"` leaves out test_round_trip[pulsar] too.
_PARAM_KINDS = {**{kind: kind for kind in KINDS}, "jetstream": "nats", "awssqs": "sqs", "awssns": "sqs",
                "gcppubsub": "gcp"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        kinds = {name for name in KINDS
                 if fixtures & {f"{name}_url", f"{name}_broker", f"{name}_cluster_url", f"{name}_cluster"}}
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            kinds |= {_PARAM_KINDS[v] for v in callspec.params.values() if isinstance(v, str) and v in _PARAM_KINDS}
        for name in sorted(kinds):
            item.add_marker(getattr(pytest.mark, KINDS[name].pytest_marker))


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: brokers must be installed, see `make deps`)", pytrace=False)
    pytest.skip(reason)


def _class(kind: str, cluster: bool = False) -> Any:
    try:
        cls = KINDS[kind].load(cluster)
    except ImportError as e:
        _unavailable(f"no {kind} broker harness in this omnibus: {e}")
    if cls is None:
        _unavailable(f"no {kind} cluster harness")
    return cls


@contextlib.contextmanager
def _running(kind: str, cluster: bool = False) -> Iterator[Any]:
    cls = _class(kind, cluster)
    broker = cls()
    try:
        broker.start()
    except ProgramMissing as e:
        broker.close()
        _unavailable(str(e))
    try:
        yield broker
    finally:
        broker.close()


def _env_url(kind: str, cluster: bool = False) -> str | None:
    url = os.environ.get(f"OMNIBUS_{kind.upper()}{'_CLUSTER' if cluster else ''}_URL") or None
    k = KINDS.get(kind)
    if url is None and not cluster and k is not None and k.host_env and os.environ.get(k.host_env):
        # As the protocol's own clients do (PUBSUB_EMULATOR_HOST): that server, not one of ours.
        url = f"{k.scheme}://{os.environ[k.host_env]}"
    return url


def _broker_fixture(kind: str) -> Any:
    @pytest.fixture(scope="session")
    def fixture() -> Iterator[Broker]:
        if _env_url(kind):
            pytest.skip(f"OMNIBUS_{kind.upper()}_URL (or the kind's host variable) is set: the broker is not ours "
                        "to restart")
        with _running(kind) as broker:
            yield broker

    fixture.__doc__ = f"A {kind} broker started on loopback for this session (a Broker object)."
    return fixture


def _url_fixture(kind: str) -> Any:
    @pytest.fixture(scope="session")
    def fixture(request: pytest.FixtureRequest) -> str:
        return _env_url(kind) or request.getfixturevalue(f"{kind}_broker").url

    fixture.__doc__ = f"URL of a {kind} broker: OMNIBUS_{kind.upper()}_URL, or one started for this session."
    return fixture


def _cluster_fixture(kind: str) -> Any:
    @pytest.fixture(scope="session")
    def fixture() -> Iterator[Any]:
        if _env_url(kind, cluster=True):
            pytest.skip(f"OMNIBUS_{kind.upper()}_CLUSTER_URL is set: the cluster is not ours to control")
        with _running(kind, cluster=True) as cluster:
            yield cluster

    return fixture


def _cluster_url_fixture(kind: str) -> Any:
    @pytest.fixture(scope="session")
    def fixture(request: pytest.FixtureRequest) -> str:
        return _env_url(kind, cluster=True) or request.getfixturevalue(f"{kind}_cluster").url

    return fixture


# The fixtures of every kind: KIND_broker and KIND_url, and KIND_cluster and
# KIND_cluster_url for kinds with a cluster class. Module attributes, so that
# pytest finds them in this plugin.
for _name, _kind in KINDS.items():
    globals()[f"{_name}_broker"] = _broker_fixture(_name)
    globals()[f"{_name}_url"] = _url_fixture(_name)
    if _kind.cluster:
        globals()[f"{_name}_cluster"] = _cluster_fixture(_name)
        globals()[f"{_name}_cluster_url"] = _cluster_url_fixture(_name)
