"""reports/analysis.ipynb runs top to bottom in a real Jupyter kernel (nbclient), so the notebook
users copy cannot rot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install '.[test]' (nbformat, nbclient, "
                               "ipykernel, matplotlib) runs the notebook")
nbclient = pytest.importorskip("nbclient", reason="pip install '.[test]' runs the notebook")
pytest.importorskip("ipykernel", reason="pip install '.[test]' runs the notebook")
pytest.importorskip("matplotlib", reason="pip install '.[test]' runs the notebook")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "reports" / "analysis.ipynb"


@pytest.fixture(scope="module")
def executed():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel imports this checkout's tracekit, installed or not
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env_path) if p)
    try:
        nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    finally:
        if env_path:
            os.environ["PYTHONPATH"] = env_path
        else:
            del os.environ["PYTHONPATH"]
    return notebook


def _outputs(notebook, kind):
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
            if kind in o.get("data", {}) or (kind == "stream" and o.output_type == "stream")]


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")


def test_runs_top_to_bottom(executed):
    errors = [o for cell in executed.cells if cell.cell_type == "code" for o in cell.outputs
              if o.output_type == "error"]
    assert not errors


def test_shows_the_report_the_plots_and_the_explanation(executed):
    html = "".join(o["data"]["text/html"] for o in _outputs(executed, "text/html"))
    assert 'class="tracekit-report"' in html and 'class="timeline"' in html
    assert len(_outputs(executed, "image/png")) == 2  # load per socket, membership over time
    text = "".join(o.get("text", "") for o in _outputs(executed, "stream"))
    assert "expected sk 5, observed sk 3" in text and "reciprocal_scale" in text
    plain = "".join(o["data"]["text/plain"] for o in _outputs(executed, "text/plain"))
    assert "Membership(seq=56, live=(3, 4, 5), closed=())" in plain
