"""Every Python block of the README runs as written; a Hub model is replaced by a tiny pipeline built in code."""

import re

import pytest
from diffusers import StableDiffusionPipeline

from minitune.tools.results import README
from minitune.testing import tiny_sd_pipeline

BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_its_python_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # what a block writes stays in the test's folder
    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: tiny_sd_pipeline()))
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
