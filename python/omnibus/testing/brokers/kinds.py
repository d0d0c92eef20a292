"""The broker kinds the harness can start: one table, read by the package
(`BROKERS`), `omnibus brokers`, the pytest plugin (fixtures, markers) and the
comparison. Pure data, so reading it imports no harness module.

A kind's name is the prefix of its fixtures (``mqtt_url``, ``mqtt_broker``)
and of its environment variable (``OMNIBUS_MQTT_URL``). A new broker is one
line here and one module beside this one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kind:
    name: str
    module: str  # omnibus.testing.brokers.<module>
    cls: str  # its single-node class
    serves: str  # the URLs it serves, for help texts
    cluster: str | None = None  # its cluster class, if it has one
    marker: str | None = None  # the pytest marker, when not the name
    package: str | None = None  # the Debian package of the program (its version goes in reports)
    # An environment variable that names host:port of a server to use instead of starting one, as the
    # protocol's own clients honour it (PUBSUB_EMULATOR_HOST), and the URL scheme to put before it.
    host_env: str | None = None
    scheme: str | None = None

    @property
    def pytest_marker(self) -> str:
        return self.marker or self.name

    def load(self, cluster: bool = False) -> Any:
        """The harness class (ImportError when the module cannot be imported; None: no cluster class)."""
        name = self.cluster if cluster else self.cls
        if name is None:
            return None
        return getattr(importlib.import_module(f"omnibus.testing.brokers.{self.module}"), name)


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("mqtt", "mosquitto", "Mosquitto", "mqtt://", package="mosquitto"),
        Kind("nats", "nats", "NatsServer", "nats://", cluster="NatsCluster", package="nats-server"),
        Kind("amqp", "rabbitmq", "RabbitMQ", "amqp://", package="rabbitmq-server"),
        Kind("kafka", "kafka", "Kafka", "kafka://", cluster="KafkaCluster"),
        Kind("redis", "redis", "Redis", "redis://", package="redis-server"),
        Kind("sqs", "moto", "Moto", "awssqs:// and awssns:// (moto)", marker="aws"),
        Kind("pulsar", "pulsar", "Pulsar", "pulsar:// (standalone, one JVM)"),
        Kind("gcp", "pubsub", "PubSubFake", "gcppubsub:// (Google's Pub/Sub fake, pstest)",
             host_env="PUBSUB_EMULATOR_HOST", scheme="gcppubsub"),
    )
}
