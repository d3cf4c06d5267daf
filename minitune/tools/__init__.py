"""Tooling for the book and the studies, apart from the method: results files, the compare viewer and its
blind study, notebook sweeps and figures. Nothing in the method (sampling, selection, fine-tuning,
evaluation) imports it."""
