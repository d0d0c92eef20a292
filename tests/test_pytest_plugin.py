"""The omnibus pytest plugin, run in a separate pytest process per case."""

from __future__ import annotations

import os

import pytest

from omnibus.testing.brokers import Mosquitto

pytest_plugins = ["pytester"]

USES_MQTT = """
import os

def test_url(mqtt_url):
    print("URL=" + mqtt_url)
    expected = os.environ.get("EXPECTED_URL")
    assert mqtt_url == expected if expected else mqtt_url.startswith("mqtt://127.0.0.1:")

def test_no_broker():
    pass
"""


def test_env_url_is_used_and_no_broker_is_started(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "mqtt://127.0.0.1:1883"
    monkeypatch.setenv("OMNIBUS_MQTT_URL", url)
    monkeypatch.setenv("EXPECTED_URL", url)
    pytester.makepyfile(USES_MQTT)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_local_broker_is_started_and_markers_select(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    if Mosquitto.missing():
        pytest.skip(Mosquitto.missing())
    monkeypatch.delenv("OMNIBUS_MQTT_URL", raising=False)
    pytester.makepyfile(USES_MQTT)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-m", "mqtt").assert_outcomes(passed=1, deselected=1)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-m", "not mqtt").assert_outcomes(passed=1, deselected=1)


@pytest.mark.parametrize("ci, outcome", [("", "skipped"), ("true", "errors")])
def test_missing_program_skips_or_fails_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, outcome: str
) -> None:
    monkeypatch.delenv("OMNIBUS_MQTT_URL", raising=False)
    # A PATH without mosquitto: python itself is called by its full path.
    monkeypatch.setenv("PATH", str(pytester.path))
    monkeypatch.setenv("CI", ci)
    pytester.makepyfile(USES_MQTT)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=1, **{outcome: 1})
    result.stdout.fnmatch_lines(["*mosquitto is not installed*"])
    assert os.environ["PATH"] == str(pytester.path)


USES_GCP = """
def test_url(gcp_url):
    assert gcp_url == "gcppubsub://127.0.0.1:8681"

def test_broker(gcp_broker):
    pass
"""


def test_pubsub_emulator_host_is_used_as_googles_clients_use_it(pytester: pytest.Pytester,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """PUBSUB_EMULATOR_HOST names the server (no fake is started), and OMNIBUS_GCP_URL wins over it."""
    monkeypatch.delenv("OMNIBUS_GCP_URL", raising=False)
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:8681")
    pytester.makepyfile(USES_GCP)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-m", "gcp").assert_outcomes(passed=1, skipped=1)
    monkeypatch.setenv("OMNIBUS_GCP_URL", "gcppubsub://127.0.0.1:8681")
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:1")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1, skipped=1)
