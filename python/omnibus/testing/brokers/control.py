"""`omnibus brokers up|status|down`: brokers in the background, outliving the command.

State lives in OMNIBUS_STATE_DIR (default ~/.cache/omnibus/brokers): one working
directory per broker, state.json to find them again, and omnibus.env with
``OMNIBUS_MQTT_URL=...`` lines for a shell to source.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ._base import Broker, BrokerError

KINDS = ("mqtt", "nats", "amqp", "kafka", "redis", "sqs", "pulsar")
_MODULES = {"mqtt": ("mosquitto", "Mosquitto"), "nats": ("nats", "NatsServer"),
            "amqp": ("rabbitmq", "RabbitMQ"), "kafka": ("kafka", "Kafka"),
            "redis": ("redis", "Redis"), "sqs": ("moto", "Moto"),
            "pulsar": ("pulsar", "Pulsar")}


def state_dir() -> Path:
    return Path(os.environ.get("OMNIBUS_STATE_DIR") or Path.home() / ".cache" / "omnibus" / "brokers")


def broker_class(kind: str) -> type[Broker]:
    if kind not in _MODULES:
        raise ValueError(f"unknown broker {kind!r}; choose from {', '.join(KINDS)}")
    module, name = _MODULES[kind]
    cls: type[Broker] = getattr(importlib.import_module(f"omnibus.testing.brokers.{module}"), name)
    return cls


@dataclass
class Outcome:
    kind: str
    url: str | None
    state: str  # "started", "running", "skipped", "failed", "stopped", "down"
    detail: str = ""
    seconds: float | None = None


def _load() -> dict[str, dict[str, object]]:
    path = state_dir() / "state.json"
    if not path.exists():
        return {}
    data: dict[str, dict[str, object]] = json.loads(path.read_text())
    return data


def _save(state: dict[str, dict[str, object]]) -> None:
    d = state_dir()
    d.mkdir(parents=True, exist_ok=True)
    (d / "state.json").write_text(json.dumps(state, indent=2))
    lines = [f"OMNIBUS_{kind.upper()}_URL={s['url']}" for kind, s in sorted(state.items())]
    (d / "omnibus.env").write_text("".join(f"export {line}\n" for line in lines))


def _handle(kind: str, s: dict[str, object]) -> Broker:
    return broker_class(kind).from_state(s)


def up(kinds: list[str] | None = None) -> list[Outcome]:
    """Start the brokers that are not running yet; a missing program is a skip with its reason."""
    state = _load()
    out: list[Outcome] = []
    for kind in kinds or list(KINDS):
        cls = broker_class(kind)
        if kind in state and _handle(kind, state[kind]).is_running():
            out.append(Outcome(kind, str(state[kind]["url"]), "running", "already up"))
            continue
        reason = cls.missing()
        if reason:
            out.append(Outcome(kind, None, "skipped", reason))
            continue
        workdir = state_dir() / kind
        broker = cls(workdir=workdir)
        try:
            broker.start(detach=True)
        except BrokerError as e:
            broker.stop()
            out.append(Outcome(kind, None, "failed", str(e)))
            continue
        state[kind] = broker.to_state()
        _save(state)
        out.append(Outcome(kind, broker.url, "started", seconds=broker.started_in))
    return out


def status() -> list[Outcome]:
    out = []
    for kind, s in sorted(_load().items()):
        b = _handle(kind, s)
        if not b.is_running():
            out.append(Outcome(kind, str(s["url"]), "stopped", f"pid {s['pid']} is gone"))
            continue
        try:
            b.probe()
            out.append(Outcome(kind, str(s["url"]), "running", f"pid {s['pid']}, answers its protocol"))
        except (OSError, ValueError) as e:
            out.append(Outcome(kind, str(s["url"]), "failed", f"pid {s['pid']} runs but does not answer: {e}"))
    return out


def down(kinds: list[str] | None = None) -> list[Outcome]:
    state = _load()
    out = []
    for kind in list(state):
        if kinds and kind not in kinds:
            continue
        b = _handle(kind, state.pop(kind))
        b.close()
        out.append(Outcome(kind, b.url, "down"))
    if state:
        _save(state)
    else:
        for name in ("state.json", "omnibus.env"):
            (state_dir() / name).unlink(missing_ok=True)
    return out
