# Targets make their own virtual environment on first use. torch is pinned and installed first,
# so that pip never pulls a multi-GB CUDA build on a CPU machine.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
OUT ?= outputs

.PHONY: setup test experiment book clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,book]"
	touch $@

test: setup
	$(BIN)/pytest -q --durations=15

experiment: setup
	$(BIN)/minitune toy-eval --output-dir $(OUT)/base-eval

book: setup
	$(BIN)/jb build . -W -n --keep-going

clean:
	rm -rf $(VENV) _build $(OUT)
