"""Every notebook in notebooks/ runs top to bottom without an error."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

import omnibus

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                       request: pytest.FixtureRequest) -> None:
    monkeypatch.setenv("OMNIBUS_NOTEBOOK_MESSAGES", "500")  # the comparison notebook's workload, kept small
    monkeypatch.setenv("OMNIBUS_NOTEBOOK_SWEEP_SECONDS", "2")  # and its rate sweep per target
    if path.name == "protocol_comparison.ipynb" and "pulsar" not in omnibus.unavailable_drivers():
        # The session's Pulsar, not a second JVM of ~500 MB and ~25 s for this notebook alone.
        monkeypatch.setenv("OMNIBUS_PULSAR_URL", request.getfixturevalue("pulsar_url"))
    nb = nbformat.read(str(path), as_version=4)
    # Run where files it writes (plots) land in a temporary directory, not in the checkout.
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    # On an event loop of its own that ends with the test: execute() would run on one that jupyter_core
    # keeps for the thread and never closes (its self-pipe sockets outlive the test).
    asyncio.run(client.async_execute())
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
