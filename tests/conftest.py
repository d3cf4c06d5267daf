import pytest
import torch

from minitune.toy.pipeline import ShapesPipeline, build_components

PROMPTS = ["a red circle and a blue square", "three green triangles"]


@pytest.fixture(scope="session")
def toy():
    """A tiny, randomly initialised Shapes pipeline (the shipped architecture, narrower)."""
    pipe = ShapesPipeline(**build_components(seed=0, width=32, channels=(16, 16, 16)))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def browser_paths():
    """Chromium and chromedriver for the tests that drive a browser: skipped with one line saying what to
    install where they are missing, except under CI (MINITUNE_CI set, as `.ci/run` does), where that fails."""
    from browser_check import find_browser, missing_browser, under_ci

    if missing := missing_browser():
        if under_ci():
            pytest.fail(f"CI needs a browser for this test: {missing}", pytrace=False)
        pytest.skip(missing)
    return find_browser()


@pytest.fixture(scope="module")
def one_thread():
    """Run a module single-threaded: its tensors are tiny, and on a busy 2-core machine thread hand-offs cost
    far more than they save (a 1000-step loop took 15x longer with 2 threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
