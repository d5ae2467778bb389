"""The notebooks run top to bottom, small, in one temporary home (01 simulates, 02 trains, 03 targets)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
EXPECTED = {
    "01_explore": "top15_revenue_share",
    "02_retrain_and_compare": "champion",
    "03_campaign": "expected_incremental_value",
}


@pytest.fixture(scope="module")
def notebook_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebook-home")


def printed(notebook: nbformat.NotebookNode) -> str:
    """Everything the notebook's code cells printed or displayed as text."""
    texts = [
        output.get("text") or output.get("data", {}).get("text/plain", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    ]
    return "\n".join(texts)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_notebook_runs(name, notebook_home, monkeypatch):
    monkeypatch.delenv("NBO_TRACKING_URI", raising=False)
    monkeypatch.setenv("NBO_NOTEBOOK_HOME", str(notebook_home))
    monkeypatch.setenv("NBO_NOTEBOOK_CUSTOMERS", "600")
    monkeypatch.setenv("NBO_NOTEBOOK_DAYS", "120")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(notebook_home)}}
    ).execute()
    assert EXPECTED[name] in printed(notebook)
    assert not any(
        output.output_type == "error" for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
