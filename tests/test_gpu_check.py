"""benchmarks/checks/gpu_check.py: its full-size architectures as written, and its code path on tiny pipelines."""

import json

import pytest
import torch

from benchmarks.checks import gpu_check

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_full_size_architectures_have_the_released_models_sizes():
    """Built on the meta device (no memory): the denoisers of SD-2.1-base, SDXL-base and SD3.5-medium."""
    sizes = {}
    for name, make in gpu_check.FULL.items():
        with torch.device("meta"):
            pipe = make()
        net = getattr(pipe, "unet", None) or pipe.transformer
        sizes[name] = round(sum(p.numel() for p in net.parameters()) / 1e6)
    assert sizes == {"SD 2.1": 866, "SDXL": 2567, "SD3.5": 2243}


def test_without_cuda_it_says_so_and_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    assert capsys.readouterr().err.strip().startswith("No CUDA device here")


def test_tiny_runs_every_step_of_the_check(tmp_path):
    assert gpu_check.main(["--tiny", "--results", str(tmp_path / "gpu")]) == 0
    data = json.loads((tmp_path / "gpu.json").read_text())
    assert [r["model"] for r in data["rows"]] == ["SD 2.1", "SDXL", "SD3.5"]
    for r in data["rows"]:
        assert r["finite"] and r["peak_gib"] is None and r["sample_s_per_image"] > 0 and r["drift_fp16"] >= 0
    assert "| SDXL |" in (tmp_path / "gpu.md").read_text()
