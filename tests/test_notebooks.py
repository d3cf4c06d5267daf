"""Every notebook runs top to bottom with its fast preset, and is committed without outputs."""

import json
from pathlib import Path

import papermill as pm
import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean_with_parameters_cell(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), f"{path.name} has stored outputs"
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in code)
    assert nb["cells"][0]["cell_type"] == "markdown" and "colab" in "".join(nb["cells"][0]["source"]).lower()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_with_fast_preset(path, tmp_path):
    pm.execute_notebook(str(path), str(tmp_path / path.name), parameters={"output_dir": str(tmp_path)},
                        cwd=str(tmp_path), kernel_name="python3", progress_bar=False)
