import pytest

from minitune.toy.pipeline import ShapesPipeline, build_components

PROMPTS = ["a red circle and a blue square", "three green triangles"]


@pytest.fixture(scope="session")
def toy():
    """A tiny, randomly initialised Shapes pipeline (the shipped architecture, narrower)."""
    pipe = ShapesPipeline(**build_components(seed=0, width=32, channels=(16, 16, 16)))
    pipe.set_progress_bar_config(disable=True)
    return pipe
