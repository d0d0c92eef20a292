"""Real brokers on loopback, started by omnibus itself.

    from omnibus.testing.brokers import Mosquitto

    with Mosquitto() as mqtt:          # a free port, a temp dir, ready when entered
        print(mqtt.url)                # mqtt://127.0.0.1:PORT
        mqtt.restart(kill=True)        # crash and come back on the same port and data

Every broker: start(), stop(), kill(), restart(), close(), url, ports, log_tail(),
started_in (seconds from spawn to ready). BROKERS maps a broker kind (the URL scheme, or sqs:
moto, for awssqs:// and awssns://; gcp: Google's Pub/Sub fake, for gcppubsub://) to its class.
"""

from __future__ import annotations

from ._base import Broker, BrokerError, ProgramMissing, free_port, started
from .kafka import Kafka, KafkaCluster, kafka_jars, kafka_probe
from .mosquitto import Mosquitto, mqtt_probe
from .moto import AwsEndpoint, Moto, aws_endpoint, queue_url
from .nats import NatsCluster, NatsServer, nats_probe
from .pubsub import PubSubFake, pubsub_fake, pubsub_probe, topic_url
from .pulsar import Pulsar, pulsar_jars, pulsar_probe
from .rabbitmq import RabbitMQ, amqp_probe
from .redis import Redis, redis_probe
from .kinds import KINDS, Kind

# kind -> its single-node class, for every kind of kinds.KINDS.
BROKERS: dict[str, type[Broker]] = {name: kind.load() for name, kind in KINDS.items()}

__all__ = [
    "BROKERS",
    "KINDS",
    "Kind",
    "AwsEndpoint",
    "Broker",
    "BrokerError",
    "Kafka",
    "KafkaCluster",
    "Mosquitto",
    "Moto",
    "NatsCluster",
    "NatsServer",
    "ProgramMissing",
    "PubSubFake",
    "Pulsar",
    "RabbitMQ",
    "Redis",
    "amqp_probe",
    "aws_endpoint",
    "free_port",
    "kafka_jars",
    "kafka_probe",
    "mqtt_probe",
    "nats_probe",
    "pubsub_fake",
    "pubsub_probe",
    "pulsar_jars",
    "pulsar_probe",
    "redis_probe",
    "queue_url",
    "topic_url",
    "started",
]
