"""Benchmarks of minitune: ``perf/`` (speed and variance against a goal), ``checks/`` (correctness) and ``studies/``
(what the model and the method do), run as modules from the repository root over one harness (:mod:`benchmarks.harness`).
"""
